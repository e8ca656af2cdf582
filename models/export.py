"""Exporting a trained model as a raw-waveform SavedModel (`us8k export RUN --output EXPORT`).

A `tf.Module` wrapper (YAMNet style) gives the SavedModel explicit batched signatures:

`serving_default(waveform float32 [batch, samples] at 22050 Hz, lengths int32 [batch])` →
  `probabilities` [batch, C], `class_id` int32 [batch], `class_name` string [batch],
  `window_probabilities` [batch, windows, C] (zeros past a row's own windows) and
  `window_count` int32 [batch]. Samples past a row's `lengths` (0 ≤ lengths ≤ samples, else
  InvalidArgument) are zeroed; a row of n valid samples is cut into
  k = 1 + ceil(max(0, n - 88200) / 44100) windows of 4 s every 2 s (the last one zero padded; a
  clip shorter than 4 s is one padded window, as in ingestion) and the windows' probabilities are
  averaged. Only a row's own windows go through the network, `window_batch` windows per call, so
  a clip padded into a batch gets the answer it gets alone.
`serving_windows(pcm16 string [windows], clip_index int32 [windows], valid_samples int32 [windows])`
  → `probabilities` [windows, C], `clip_index` and `valid_samples` [windows] (echoed): one row per
  4 s window, each string 88200 little-endian int16 samples (`tfdata.pcm`, decoded with
  `tf.io.decode_raw`, / PCM_SCALE), zeroed past its `valid_samples` (0..88200, the clip's own
  samples in it: fewer only in a clip's last window; the echo gives each clip's length back). Rows of
  any request have one shape, so TF Serving's batching can merge concurrent requests of any length;
  the SageMaker handler cuts the windows (`tfdata.windowing`, the arithmetic `frame_windows` uses)
  and averages each clip's rows, which gives `serving_default`'s answer on the same int16 audio.
`log_mel(waveform float32 [batch, samples])` → `log_mel` [batch, windows, 173, 128], the normalised
  features the network sees for each window (every row taken as valid over its full width; use
  one clip per row or per call), and `window_count` int32 [batch].

C is the number of classes: the class names (label order) are the run's (RUN/classes.json,
`models.run_classes`; a run written before runs kept them is UrbanSound8K's ten), a constant in the
graph (`class_name`) and metadata.json's "class_names" and "num_classes"; a model whose output size
differs from the list is refused. A metadata JSON (sample rate, window, class names, threshold,
temperature, versions, model name, run information) is a SavedModel asset and is copied to
`EXPORT/metadata.json`. Calibration (`us8k evaluate` → RUN/calibration.json): the temperature is
applied in the graph to every window's probabilities (every signature), the threshold is
metadata.json's "threshold", the endpoint's default; `--threshold` / `--temperature` override.
Layout: `EXPORT/model/1/` (the version folder TF Serving expects) and
`EXPORT/metadata.json`. The serving graph uses core TensorFlow ops only (no XLA, no Keras), so an
older TF Serving (2.19) runs it. After saving, `verify_export` reloads the SavedModel and checks it.
`export_run` exports a training run's selected model with its calibration (what `us8k export` and the
SageMaker training job do).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import shutil
import tempfile
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from models import architectures  # noqa: F401  (registers every layer a checkpoint may hold)
from models.errors import ExportError, ExportVerificationError
from models.frontend import LogMelFrontend
from models.run_classes import output_mismatch, read_run_classes
from tfdata import windowing
from tfdata.batching import pad_batch
from tfdata.classes import ClassListError, check_class_names
from tfdata.contract import (
    CLIP_SAMPLES,
    DEFAULT_THRESHOLD,
    FRONTEND,
    SAMPLE_RATE,
    WINDOW_HOP_SAMPLES,
)
from tfdata.layout import (
    CALIBRATION_FILE,
    INPUT_CLIP_INDEX,
    INPUT_LENGTHS,
    INPUT_PCM16,
    INPUT_VALID_SAMPLES,
    INPUT_WAVEFORM,
    LOG_MEL_OUTPUTS,
    LOG_MEL_SIGNATURE,
    METADATA_FILE,
    MODEL_SUBDIR,
    OUTPUT_CLASS_ID,
    OUTPUT_CLASS_NAME,
    OUTPUT_CLIP_INDEX,
    OUTPUT_LOG_MEL,
    OUTPUT_PROBABILITIES,
    OUTPUT_VALID_SAMPLES,
    OUTPUT_WINDOW_COUNT,
    OUTPUT_WINDOW_PROBABILITIES,
    SERVING_OUTPUTS,
    SERVING_SIGNATURE,
    VERSION,
    WINDOWS_OUTPUTS,
    WINDOWS_SIGNATURE,
    checkpoint_path,
    find_saved_model,
    read_selection,
    serving_inputs,
    windows_inputs,
)
from tfdata.pcm import PCM_BYTES_PER_SAMPLE, PCM_SCALE, quantize, to_pcm16

WINDOW_BATCH = 32  # windows per network call inside the serving graph (bounds memory on long audio)
VERIFY_TOLERANCE = 1e-4  # probabilities sum to 1, batched rows equal single calls


# ---------------------------------------------------------------------------- in-graph windowing
def window_counts(lengths):
    """Windows per row: k = 1 + ceil(max(0, n - CLIP_SAMPLES) / WINDOW_HOP_SAMPLES); int32 [batch].

    `tfdata.windowing`'s arithmetic on tensors: the SageMaker handler cuts windows with it in numpy."""
    return windowing.window_counts(lengths, maximum=tf.maximum)


def frame_windows(waveform, lengths):
    """Zero past each row's length and cut 4 s windows every 2 s: [batch, max_windows, 88200], counts."""
    width = tf.shape(waveform)[1]
    lengths = tf.clip_by_value(lengths, 0, width)  # [batch]
    waveform = tf.where(tf.sequence_mask(lengths, width), waveform, 0.0)  # [batch, width]
    counts = window_counts(lengths)  # [batch]
    max_count = tf.reduce_max(tf.concat([counts, [1]], axis=0))
    needed = windowing.padded_length(max_count)  # ≥ every row's length
    waveform = tf.pad(waveform, [[0, 0], [0, tf.maximum(needed - width, 0)]])[:, :needed]
    windows = tf.signal.frame(waveform, CLIP_SAMPLES, WINDOW_HOP_SAMPLES, pad_end=False)  # [b, K, 88200]
    return windows, counts


class ServingModule(tf.Module):
    """The exported object: the Keras model, its frontend, its class names (label order), the metadata
    asset and the signatures."""

    def __init__(self, model: keras.Model, frontend: LogMelFrontend, metadata_path: str, class_names,
                 window_batch: int = WINDOW_BATCH, temperature: float = 1.0):
        super().__init__(name="us8k_serving")
        self.model = model
        self.frontend = frontend
        self.metadata = tf.saved_model.Asset(metadata_path)
        self._class_names = tuple(class_names)  # a constant of the traced graphs
        self._num_classes = len(self._class_names)
        self._window_batch = int(window_batch)
        self._temperature = float(temperature)  # calibration: softmax(log p / T) on every window

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name=INPUT_WAVEFORM),
                                  tf.TensorSpec([None], tf.int32, name=INPUT_LENGTHS)])
    def serve(self, waveform, lengths):
        tf.debugging.assert_equal(tf.shape(lengths)[0], tf.shape(waveform)[0],
                                  message="lengths must have one entry per waveform row")
        tf.debugging.assert_non_negative(lengths, message="lengths must not be negative")
        tf.debugging.assert_less_equal(lengths, tf.shape(waveform)[1],
                                       message="lengths must not exceed the waveform's width")
        waveform = tf.debugging.check_numerics(waveform, "waveform contains NaN or Inf")
        windows, counts = frame_windows(waveform, lengths)  # [b, K, 88200], [b]
        batch, max_count = tf.shape(windows)[0], tf.shape(windows)[1]
        valid = tf.sequence_mask(counts, max_count)  # [b, K]
        positions = tf.where(tf.reshape(valid, [-1]))  # [n, 1] int64, row-major (b, k)
        own_windows = tf.gather_nd(tf.reshape(windows, [-1, CLIP_SAMPLES]), positions)  # [n, 88200]
        probabilities = self._predict_in_chunks(own_windows)  # [n, C]
        num_classes = self._num_classes
        window_probabilities = tf.reshape(
            tf.scatter_nd(positions, probabilities, tf.stack([tf.cast(batch * max_count, tf.int64), num_classes])),
            [batch, max_count, num_classes])  # [b, K, C], zeros past a row's windows
        mean = tf.reduce_sum(window_probabilities, axis=1) / tf.cast(counts, tf.float32)[:, None]  # [b, C]
        class_id = tf.argmax(mean, axis=1, output_type=tf.int32)  # [b]
        class_name = tf.gather(tf.constant(self._class_names), class_id)  # [b]
        return {OUTPUT_PROBABILITIES: mean, OUTPUT_CLASS_ID: class_id, OUTPUT_CLASS_NAME: class_name,
                OUTPUT_WINDOW_PROBABILITIES: window_probabilities, OUTPUT_WINDOW_COUNT: counts}

    def _predict_in_chunks(self, windows):
        """The network on [n, 88200] windows, `window_batch` at a time (long audio stays bounded)."""
        n = tf.shape(windows)[0]
        chunks = (n + self._window_batch - 1) // self._window_batch
        outputs = tf.TensorArray(tf.float32, size=chunks, infer_shape=False,
                                 element_shape=tf.TensorShape([None, self._num_classes]))
        for i in tf.range(chunks):
            chunk = windows[i * self._window_batch:(i + 1) * self._window_batch]
            outputs = outputs.write(i, self._calibrated(tf.cast(self.model(chunk, training=False), tf.float32)))
        return tf.cond(chunks > 0, outputs.concat, lambda: tf.zeros([0, self._num_classes]))

    def _calibrated(self, probabilities):
        """Temperature scaling of the network's probabilities (`models.calibration`); T = 1: unchanged."""
        if self._temperature == 1.0:
            return probabilities
        return tf.nn.softmax(tf.math.log(tf.maximum(probabilities, 1e-12)) / self._temperature, axis=-1)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name=INPUT_WAVEFORM)])
    def log_mel(self, waveform):
        lengths = tf.fill([tf.shape(waveform)[0]], tf.shape(waveform)[1])  # every sample valid
        windows, counts = frame_windows(waveform, lengths)  # [b, K, 88200]
        batch, max_count = tf.shape(windows)[0], tf.shape(windows)[1]
        features = self.frontend(tf.reshape(windows, [-1, CLIP_SAMPLES]))  # [b * K, 173, 128]
        frames = self.frontend.spectrogram.params.frames_per_window  # 173
        features = tf.reshape(features, [batch, max_count, frames, tf.shape(features)[-1]])
        return {OUTPUT_LOG_MEL: features, OUTPUT_WINDOW_COUNT: counts}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_PCM16),
                                  tf.TensorSpec([None], tf.int32, name=INPUT_CLIP_INDEX),
                                  tf.TensorSpec([None], tf.int32, name=INPUT_VALID_SAMPLES)])
    def serve_windows(self, pcm16, clip_index, valid_samples):
        """4 s windows as int16 PCM strings → each window's probabilities, with its clip index."""
        checks = [tf.debugging.assert_equal(tf.shape(clip_index)[0], tf.shape(pcm16)[0],
                                            message="clip_index must have one entry per pcm16 window"),
                  tf.debugging.assert_equal(tf.shape(valid_samples)[0], tf.shape(pcm16)[0],
                                            message="valid_samples must have one entry per pcm16 window"),
                  tf.debugging.assert_non_negative(valid_samples, message="valid_samples must not be negative"),
                  tf.debugging.assert_less_equal(valid_samples, CLIP_SAMPLES,
                                                 message=f"valid_samples must not exceed {CLIP_SAMPLES}"),
                  tf.debugging.assert_equal(tf.strings.length(pcm16), CLIP_SAMPLES * PCM_BYTES_PER_SAMPLE,
                                            message=f"each pcm16 window must hold {CLIP_SAMPLES} little-endian "
                                                    f"int16 samples ({CLIP_SAMPLES * PCM_BYTES_PER_SAMPLE} bytes)")]
        with tf.control_dependencies(checks):  # these messages, not decode_raw's, for a wrong size
            samples = tf.io.decode_raw(tf.identity(pcm16), tf.int16, little_endian=True)  # [n, 88200]
        windows = tf.reshape(tf.cast(samples, tf.float32) / PCM_SCALE, [-1, CLIP_SAMPLES])
        windows = tf.where(tf.sequence_mask(valid_samples, CLIP_SAMPLES), windows, 0.0)  # padding is silence
        probabilities = self._predict_in_chunks(windows)  # [n, C]
        return {OUTPUT_PROBABILITIES: probabilities, OUTPUT_CLIP_INDEX: tf.identity(clip_index),
                OUTPUT_VALID_SAMPLES: tf.identity(valid_samples)}

    @tf.function(input_signature=[])
    def metadata_path(self):
        """Path of the metadata JSON inside the loaded SavedModel (`loaded.metadata_path()`)."""
        return self.metadata.asset_path


# ---------------------------------------------------------------------------- export
def find_frontend(model: keras.Model) -> LogMelFrontend:
    for layer in model.layers:
        if isinstance(layer, LogMelFrontend):
            return layer
    raise ValueError(f"model {model.name!r} has no LogMelFrontend layer: export needs a raw-waveform model")


def build_metadata(model: keras.Model, frontend: LogMelFrontend, threshold: float, extra: dict | None,
                   temperature: float = 1.0, *, class_names) -> dict:
    spectrogram = frontend.spectrogram.params  # FrontendParams
    metadata = {
        "model_name": model.name,
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "window_hop_samples": WINDOW_HOP_SAMPLES,
        "class_names": list(class_names),  # label order: output k is class_names[k]
        "num_classes": len(class_names),
        "threshold": float(threshold),
        "temperature": float(temperature),  # applied in the graph: probabilities are calibrated
        "frontend": dataclasses.asdict(spectrogram),
        "num_frames": spectrogram.frames_per_window,
        "parameters": int(model.count_params()),
        "signatures": {
            SERVING_SIGNATURE: {"inputs": serving_inputs("float32 [batch, samples]", "int32 [batch]"),
                                "outputs": list(SERVING_OUTPUTS)},
            WINDOWS_SIGNATURE: {"inputs": windows_inputs(f"string [windows]: {CLIP_SAMPLES} int16 LE samples",
                                                         "int32 [windows]", "int32 [windows]"),
                                "outputs": list(WINDOWS_OUTPUTS)},
            LOG_MEL_SIGNATURE: {"inputs": {INPUT_WAVEFORM: "float32 [batch, samples]"},
                                "outputs": list(LOG_MEL_OUTPUTS)},
        },
        "pcm_scale": PCM_SCALE,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    clashes = sorted(set(extra or {}) & set(metadata))
    if clashes:
        raise ValueError(f"metadata keys {clashes} are written by the export itself")
    metadata.update(extra or {})
    json.dumps(metadata)  # fail here, with the offending type, rather than half-way through saving
    return metadata


def export_model(model: keras.Model, output_dir, *, class_names, threshold: float = DEFAULT_THRESHOLD,
                 temperature: float = 1.0, metadata: dict | None = None, window_batch: int = WINDOW_BATCH,
                 overwrite: bool = False, verify: bool = True) -> pathlib.Path:
    """Write `output_dir/model/1/` (SavedModel) and `output_dir/metadata.json`; return the model dir.
    `class_names` (label order, a valid class list: `tfdata.classes`) names the model's outputs.

    The SavedModel is written beside its final place, verified after reloading (`verify_export`),
    then moved into place, so a failed export leaves no half-written version folder.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    class_names = check_class_names(class_names)  # ClassListError is a ValueError
    if tuple(model.input_shape) != (None, CLIP_SAMPLES) or len(model.output_shape) != 2:
        raise ValueError(f"expected a model [batch, {CLIP_SAMPLES}] → [batch, classes], "
                         f"got {model.input_shape} → {model.output_shape}")
    mismatch = output_mismatch(model.output_shape[-1], class_names, f"model {model.name!r}")
    if mismatch:
        raise ValueError(mismatch)
    output_dir = pathlib.Path(output_dir)
    version_dir = output_dir / MODEL_SUBDIR / VERSION
    if version_dir.exists() and any(version_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{version_dir} already holds a model (pass overwrite=True to replace it)")
    frontend = find_frontend(model)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    content = build_metadata(model, frontend, threshold, metadata, temperature, class_names=class_names)
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=version_dir.parent))
    try:
        metadata_source = staging / "source" / METADATA_FILE
        metadata_source.parent.mkdir()
        metadata_source.write_text(json.dumps(content, indent=2) + "\n")
        module = ServingModule(model, frontend, str(metadata_source), class_names, window_batch,
                               temperature=temperature)
        saved = staging / VERSION
        tf.saved_model.save(module, str(saved), signatures={
            SERVING_SIGNATURE: module.serve.get_concrete_function(),
            WINDOWS_SIGNATURE: module.serve_windows.get_concrete_function(),
            LOG_MEL_SIGNATURE: module.log_mel.get_concrete_function(),
        })
        if verify:
            verify_export(saved, class_names)
        if version_dir.exists():
            shutil.rmtree(version_dir)
        saved.rename(version_dir)
        shutil.copyfile(metadata_source, output_dir / METADATA_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version_dir


# ---------------------------------------------------------------------------- verification
def verify_export(export_dir, class_names=None) -> dict:
    """Reload the SavedModel and check its answers; return a summary, raise ExportVerificationError.

    Silence, noise and a tone (4 s each, alone), then a 1 s tone and 6 s of noise in one padded
    batch with `lengths`: finite probabilities summing to 1, one per class of `class_names` (default:
    the class list of the metadata asset inside the SavedModel), the class name of the class id, the
    right window counts, batched rows equal to the clips alone, `serving_windows` on the same two clips as int16
    windows averaged per clip equal to `serving_default` on that int16 audio, and `log_mel`
    features of the right shape.
    """
    saved_model_dir = find_saved_model(export_dir)
    if saved_model_dir is None:
        raise FileNotFoundError(f"no SavedModel at {export_dir} (nor under {MODEL_SUBDIR}/<version>/ in it)")
    loaded = tf.saved_model.load(str(saved_model_dir))
    if class_names is None:
        class_names = exported_class_names(loaded)
    class_names = tuple(class_names)
    serve = loaded.signatures[SERVING_SIGNATURE]
    rng = np.random.default_rng(0)
    t = np.arange(6 * SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    clips = {
        "silence": np.zeros(CLIP_SAMPLES, np.float32),
        "noise": (0.1 * rng.standard_normal(6 * SAMPLE_RATE)).astype(np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * 440.0 * t[:SAMPLE_RATE])).astype(np.float32),
    }

    def call(rows):
        batch, lengths = pad_batch(rows)
        out = serve(**serving_inputs(tf.constant(batch), tf.constant(lengths)))
        return {k: v.numpy() for k, v in out.items()}

    def check(name, out, row, expected_windows):
        p = out[OUTPUT_PROBABILITIES][row]
        if p.shape != (len(class_names),) or not np.isfinite(p).all() or abs(p.sum() - 1.0) > VERIFY_TOLERANCE:
            raise ExportVerificationError(f"{name}: invalid probabilities {p} ({len(class_names)} classes expected)")
        if out[OUTPUT_CLASS_NAME][row].decode() != class_names[int(out[OUTPUT_CLASS_ID][row])]:
            raise ExportVerificationError(f"{name}: class_name does not match class_id")
        windows = int(out[OUTPUT_WINDOW_COUNT][row])
        if windows != expected_windows:
            raise ExportVerificationError(f"{name}: {windows} windows, expected {expected_windows}")

    summary = {}
    alone = {}
    for name, clip in clips.items():
        out = call([clip])
        check(name, out, 0, int(window_counts(tf.constant(len(clip))).numpy()))
        alone[name] = out[OUTPUT_PROBABILITIES][0]
        summary[name] = out[OUTPUT_CLASS_NAME][0].decode()
    mixed = call([clips["tone"], clips["noise"]])
    for row, name in enumerate(("tone", "noise")):
        check(f"batched {name}", mixed, row, int(window_counts(tf.constant(len(clips[name]))).numpy()))
        gap = float(np.abs(mixed[OUTPUT_PROBABILITIES][row] - alone[name]).max())
        if gap > VERIFY_TOLERANCE:
            raise ExportVerificationError(f"batched {name} differs from {name} alone by {gap:.2e}")
    pair = [clips["tone"], clips["noise"]]
    windows, clip_index, valid = windowing.frame_clips([to_pcm16(clip) for clip in pair])
    out = loaded.signatures[WINDOWS_SIGNATURE](**windows_inputs(
        tf.constant([window.tobytes() for window in windows]), tf.constant(clip_index), tf.constant(valid)))
    if out[OUTPUT_CLIP_INDEX].numpy().tolist() != clip_index.tolist() or \
            windowing.clip_lengths(clip_index, out[OUTPUT_VALID_SAMPLES].numpy()).tolist() != [len(c) for c in pair]:
        raise ExportVerificationError(f"{WINDOWS_SIGNATURE}: clip_index or valid_samples not echoed")
    mean, _, counts = windowing.average_windows(out[OUTPUT_PROBABILITIES].numpy(), clip_index, len(pair))
    reference = call([quantize(clip) for clip in pair])
    if counts.tolist() != reference[OUTPUT_WINDOW_COUNT].tolist():
        raise ExportVerificationError(f"{WINDOWS_SIGNATURE}: {counts.tolist()} windows, expected "
                                      f"{reference[OUTPUT_WINDOW_COUNT].tolist()}")
    gap = float(np.abs(mean - reference[OUTPUT_PROBABILITIES]).max())
    if gap > VERIFY_TOLERANCE:
        raise ExportVerificationError(f"{WINDOWS_SIGNATURE} averaged per clip differs from {SERVING_SIGNATURE} "
                                      f"on the same int16 audio by {gap:.2e}")
    features = loaded.signatures[LOG_MEL_SIGNATURE](**{INPUT_WAVEFORM: tf.constant(clips["noise"][None])})
    features = features[OUTPUT_LOG_MEL]
    if tuple(features.shape[1:3]) != (2, FRONTEND.frames_per_window) or not np.isfinite(features.numpy()).all():
        raise ExportVerificationError(f"log_mel: unexpected features of shape {features.shape}")
    return summary


def exported_class_names(loaded) -> tuple[str, ...]:
    """The class names of a loaded export's metadata asset (what EXPORT/metadata.json holds)."""
    path = loaded.metadata_path().numpy().decode()
    try:
        names = json.loads(pathlib.Path(path).read_text())["class_names"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportVerificationError(f"the SavedModel's metadata asset has no readable class_names ({error})") \
            from None
    return tuple(names)


# ---------------------------------------------------------------------------- a run's selected model
def run_calibration(run_dir, name: str) -> dict | None:
    """Model `name`'s entry of RUN/calibration.json (temperature, threshold, target), or None."""
    path = pathlib.Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get("models", {}).get(name)
    except (json.JSONDecodeError, AttributeError):
        raise ExportError(f"{path} is not a valid calibration file") from None
    if entry is not None:
        entry = {**entry, "file": str(path)}
    return entry


def _chosen(given, calibrated, key: str, default) -> tuple[float, str]:
    """(value, where it came from) of the threshold or temperature: given, else calibrated, else default."""
    if given is not None:
        return given, "given"
    if calibrated:
        return calibrated[key], "calibrated"
    return default, "default" if key == "threshold" else "none"


def export_run(run_dir, output, *, threshold: float | None = None, temperature: float | None = None,
               overwrite: bool = False, log: Callable[[str], None] = print) -> pathlib.Path:
    """Export RUN's selected model to `output` (EXPORT/model/1/ + EXPORT/metadata.json) with the threshold
    and temperature given, else those calibrated by `us8k evaluate` (RUN/calibration.json), else the
    defaults; `log` gets the progress lines. Returns the version directory.
    A bad selection or a missing checkpoint raises `SelectionError`, anything else `ExportError`."""
    run_dir = pathlib.Path(run_dir)
    selection = read_selection(run_dir)
    name = selection["selected"]
    checkpoint = checkpoint_path(run_dir, selection, name)
    calibrated = run_calibration(run_dir, name)
    try:
        classes = read_run_classes(run_dir)
    except ClassListError as error:
        raise ExportError(str(error)) from None
    threshold, threshold_source = _chosen(threshold, calibrated, "threshold", DEFAULT_THRESHOLD)
    temperature, temperature_source = _chosen(temperature, calibrated, "temperature", 1.0)
    if not 0.0 <= threshold <= 1.0:
        raise ExportError(f"--threshold must be within [0, 1], got {threshold}")
    if not temperature > 0:
        raise ExportError(f"--temperature must be positive, got {temperature}")
    log(f"threshold {threshold:g} ({threshold_source}), temperature {temperature:g} ({temperature_source})")
    log(f"classes: {classes.num_classes} from {classes.source}")
    log(f"loading {name} from {checkpoint}")
    try:
        model = keras.models.load_model(checkpoint, compile=False)
    except Exception as error:  # a corrupt or foreign .keras file: say which, in one line
        raise ExportError(f"cannot load {checkpoint}: {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}") from None
    extra = {"run": {"run_dir": str(run_dir.resolve()), "selected": name, "selected_model": selection["models"][name],
                     "selection": selection, "calibration": calibrated}}
    output = pathlib.Path(output)
    try:
        version_dir = export_model(model, output, class_names=classes.class_names, threshold=threshold,
                                   temperature=temperature, metadata=extra, overwrite=overwrite)
    except (FileExistsError, ValueError) as error:
        raise ExportError(str(error)) from None
    log(f"wrote {version_dir} and {output / METADATA_FILE} "
        f"(model {name}, {classes.num_classes} classes, threshold {threshold:g}, temperature {temperature:g}); "
        "verified after reloading")
    return version_dir
