"""`us8k label`'s model: a RunInference ModelHandler of ours over the exported SavedModel.

    Clip(path, waveform) ─ SavedModelHandler ─▶ PredictionResult(example=Clip, inference=ClipOutputs, model_id)

The model is loaded with `tf.saved_model.load` and called through its `serving_default` signature —
not Beam's stock TensorFlow handler, which imports `tensorflow_hub` and loads through Keras
`load_model` (Keras 3 refuses SavedModels). `resolve_model` finds the SavedModel and metadata.json
of an export (EXPORT/model/<n>/ + EXPORT/metadata.json, an unpacked package <n>/, or a SavedModel
directory) through Beam's FileSystems, so EXPORT may be local, gs:// or s3://; a model that is not on
a local disk is copied into a local temporary directory first (TensorFlow reads gs:// but not s3://).

Batching by padded samples. An element weighs the samples of its 4 s windows (`padded_samples`:
window count × 88200, the arithmetic of tfdata.windowing and of the graph); a batch weighs at most
`max_batch_windows` × 88200 — the endpoint's cap on a model call (MAX_BATCH_WINDOWS = 32, its
--max-batch default). The handler is built with ModelHandler's `max_batch_weight` and
`element_size_fn`; Beam 2.77's ModelHandler hands those to `beam.BatchElements` as they are, but
2.77's BatchElements has no `max_batch_weight` parameter (the pipeline would fail to build with a
TypeError). Its batch sizes are sums of `element_size_fn` already, so `batch_elements_kwargs`
passes the weight cap as its min and max batch size (a fixed target in samples) when the installed
BatchElements lacks the parameter, and as `max_batch_weight` when it has it. A file heavier than the
cap forms a batch of its own; BatchElements may then also emit an empty batch, which yields nothing.

`run_inference` cuts the batch's clips into windows (`tfdata.windowing.window_index` /
`fill_windows`, the endpoint batcher's own functions) and calls the signature on at most
`max_batch_windows` full 4 s rows at a time (lengths 88200, as the endpoint's batcher calls it; a
long file's windows go over several calls and its framed copy never exists whole); each clip's
answer is the mean of its windows (`average_windows`): the endpoint's answer for the same audio.

One model per worker process, shared by its threads: with `share_model_across_processes()` False
(the default; neither `large_model` nor `model_copies` is set) RunInference keeps the loaded model
in `apache_beam.utils.shared.Shared` under a key made when the pipeline is built, which every copy
of the DoFn in a process (one per worker thread) shares, so the process loads it once (`loads()`
counts). Beam holds it by weak reference, hence a class instance (`LoadedModel`), not a dict.
Beam's cross-process sharing would move every batch through a proxy process: not used.
"""
from __future__ import annotations

import atexit
import inspect
import json
import os
import shutil
import tempfile
import threading
from typing import Any, Iterable, NamedTuple, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam.files import absolute, is_remote
from beam.notices import quiet_beam_notices
from tfdata.contract import CLIP_SAMPLES
from tfdata.layout import (
    METADATA_FILE,
    MODEL_SUBDIR,
    OUTPUT_PROBABILITIES,
    SAVED_MODEL_FILE,
    SERVING_SIGNATURE,
    serving_inputs,
)
from tfdata.windowing import average_windows, fill_windows, window_count, window_index

MAX_BATCH_WINDOWS = 32  # 4 s windows per model call: the endpoint's --max-batch default
METRICS_NAMESPACE = "us8k.label"
WINDOWS_PER_CALL = "windows_per_model_call"  # Beam distribution: rows of every model call
SAVED_MODEL_ASSETS = "assets"  # TensorFlow's folder of a SavedModel's assets (the export puts metadata.json there)
LOCAL_COPY_PREFIX = "us8k-label-model-"


class ModelNotFound(ValueError):
    """EXPORT holds no SavedModel, or its metadata.json is not JSON; the message says which."""


class ModelLocation(NamedTuple):
    saved_model_dir: str  # the version directory holding saved_model.pb
    metadata_path: str | None  # EXPORT/metadata.json, else the SavedModel's own copy in assets/, else None
    metadata: dict  # its content ({} when there is none)


class Clip(NamedTuple):
    """One decoded file: its path and mono float32 waveform at the contract's sample rate."""
    path: str
    waveform: np.ndarray


class ClipOutputs(NamedTuple):
    """The serving signature's answer for one clip: the mean [C] and each window's row [k, C]."""
    probabilities: np.ndarray
    window_probabilities: np.ndarray


# ---------------------------------------------------------------------------- where the model is
def _latest_version(parent: str) -> str | None:
    """The highest numbered parent/<n>/ holding a saved_model.pb (tfdata.layout.latest_version_dir,
    on any Beam filesystem), else None."""
    pattern = FileSystems.join(parent, "*", SAVED_MODEL_FILE)
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # BeamIOError: nothing listable there
        return None
    versions = {}
    for metadata in found:
        directory = FileSystems.split(metadata.path)[0]
        name = FileSystems.split(directory)[1]
        if name.isdigit():
            versions[int(name)] = directory
    return versions[max(versions)] if versions else None


def resolve_model(export: str) -> ModelLocation:
    """The SavedModel and metadata of an export directory, an unpacked package or a SavedModel
    directory (local, gs://, s3://); ModelNotFound when there is none."""
    export = absolute(export).rstrip("/") or "/"
    if FileSystems.exists(FileSystems.join(export, SAVED_MODEL_FILE)):
        saved_model_dir = export
        candidates = [FileSystems.join(export, SAVED_MODEL_ASSETS, METADATA_FILE)]
    else:
        saved_model_dir = _latest_version(FileSystems.join(export, MODEL_SUBDIR)) or _latest_version(export)
        if saved_model_dir is None:
            raise ModelNotFound(f"no SavedModel under {export} (expected {MODEL_SUBDIR}/<version>/{SAVED_MODEL_FILE}, "
                                f"<version>/{SAVED_MODEL_FILE} or {SAVED_MODEL_FILE}: an `us8k export` directory)")
        candidates = [FileSystems.join(export, METADATA_FILE),
                      FileSystems.join(saved_model_dir, SAVED_MODEL_ASSETS, METADATA_FILE)]
    for path in candidates:
        if FileSystems.exists(path):
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                text = handle.read()
            try:
                metadata = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ModelNotFound(f"{path} is not valid JSON ({exc})") from None
            if not isinstance(metadata, dict):
                raise ModelNotFound(f"{path} does not hold a JSON object")
            return ModelLocation(saved_model_dir, path, metadata)
    return ModelLocation(saved_model_dir, None, {})


def local_copy(saved_model_dir: str) -> str:
    """A local directory holding the SavedModel: itself when local, else a copy made through Beam's
    FileSystems into a temporary directory (removed when the process exits)."""
    if not is_remote(saved_model_dir):
        return saved_model_dir
    target = tempfile.mkdtemp(prefix=LOCAL_COPY_PREFIX)
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    prefix = saved_model_dir.rstrip("/") + "/"
    for metadata in FileSystems.match([prefix + "**"])[0].metadata_list:
        relative = metadata.path[len(prefix):]
        if not relative or relative.endswith("/"):
            continue  # a "directory" marker object
        destination = os.path.join(target, *relative.split("/"))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as source, \
                open(destination, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    return target


# ---------------------------------------------------------------------------- the loaded model
_loads_lock = threading.Lock()
_loads = 0


def loads() -> int:
    """Models loaded by this process so far (one per labelling run and worker process, whatever its threads)."""
    return _loads


class LoadedModel:
    """The SavedModel's serving signature as a numpy function of 4 s windows [n, 88200] → [n, C]."""

    def __init__(self, saved_model_dir: str):
        global _loads
        import tensorflow as tf  # on the workers only: the driver and a dry run never import TensorFlow

        self.saved_model_dir = saved_model_dir
        self._tf = tf
        self._loaded = tf.saved_model.load(local_copy(saved_model_dir))
        self._signature = self._loaded.signatures[SERVING_SIGNATURE]
        self(np.zeros((1, CLIP_SAMPLES), np.float32))  # warm up, and fail early
        with _loads_lock:
            _loads += 1

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        tf = self._tf
        lengths = np.full((windows.shape[0],), CLIP_SAMPLES, np.int32)  # every row one full window
        outputs = self._signature(**serving_inputs(tf.constant(windows, tf.float32), tf.constant(lengths, tf.int32)))
        return outputs[OUTPUT_PROBABILITIES].numpy()  # [n, C]


# ---------------------------------------------------------------------------- the handler
def padded_samples(clip: Clip) -> int:
    """An element's weight for batching: the samples of its 4 s windows (window count × 88200)."""
    return window_count(clip.waveform.shape[0]) * CLIP_SAMPLES


class SavedModelHandler(ModelHandler[Clip, PredictionResult, LoadedModel]):
    """RunInference over an export's `serving_default`: batches of at most `max_batch_windows`
    windows' samples, model calls of at most `max_batch_windows` rows, one model per process."""

    def __init__(self, export: str, max_batch_windows: int = MAX_BATCH_WINDOWS):
        if int(max_batch_windows) < 1:
            raise ValueError(f"max_batch_windows must be at least 1, got {max_batch_windows}")
        super().__init__(max_batch_weight=int(max_batch_windows) * CLIP_SAMPLES, element_size_fn=padded_samples)
        self._export = absolute(export)
        self._max_windows = int(max_batch_windows)

    def set_environment_vars(self) -> None:
        """RunInference's set-up on each worker, before it loads the model: also quiets Beam's notices
        there (beam.notices), since a worker process of Beam's multi_processing mode or of Dataflow
        runs no entry point of ours."""
        super().set_environment_vars()
        quiet_beam_notices()

    def load_model(self) -> LoadedModel:
        return LoadedModel(resolve_model(self._export).saved_model_dir)

    def run_inference(self, batch: Sequence[Clip], model: LoadedModel,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        if not batch:
            return []
        waveforms = [clip.waveform for clip in batch]
        clip_of, start_of = window_index([w.shape[0] for w in waveforms])
        rows = None
        calls = Metrics.distribution(METRICS_NAMESPACE, WINDOWS_PER_CALL)
        for first in range(0, clip_of.shape[0], self._max_windows):
            last = min(first + self._max_windows, clip_of.shape[0])
            windows = np.empty((last - first, CLIP_SAMPLES), np.float32)
            fill_windows(windows, waveforms, clip_of[first:last], start_of[first:last])
            probabilities = model(windows)
            if rows is None:
                rows = np.empty((clip_of.shape[0], probabilities.shape[1]), np.float32)
            rows[first:last] = probabilities
            calls.update(last - first)
        mean, per_window, counts = average_windows(rows, clip_of, len(batch))
        return [PredictionResult(clip, ClipOutputs(mean[i], per_window[i, :counts[i]]), model.saved_model_dir)
                for i, clip in enumerate(batch)]

    def get_num_bytes(self, batch: Sequence[Clip]) -> int:
        """RunInference's byte metric: the waveforms' bytes (Beam's default pickles the whole batch)."""
        return sum(int(clip.waveform.nbytes) for clip in batch)

    def get_metrics_namespace(self) -> str:
        return f"{METRICS_NAMESPACE}.RunInference"

    def batch_elements_kwargs(self) -> dict[str, Any]:
        """ModelHandler's batching kwargs for the installed beam.BatchElements (see the module docstring)."""
        kwargs = dict(super().batch_elements_kwargs())
        weight = kwargs.pop("max_batch_weight", None)
        if weight is not None:
            if "max_batch_weight" in inspect.signature(beam.BatchElements).parameters:
                kwargs["max_batch_weight"] = weight
            else:  # Beam 2.77: batch sizes are sums of element_size_fn; a fixed target of `weight`
                kwargs["min_batch_size"] = kwargs["max_batch_size"] = weight
        return kwargs
