"""models.export: the raw-waveform SavedModel, reloaded in a fresh process, and `us8k export`."""
import json
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from trained_run import trained_run  # noqa: F401  (the fixture)

import models.architectures  # noqa: F401  (registers the frontend layers for load_model)
import us8k
from models.errors import ExportVerificationError
from models.export import export_model, frame_windows, verify_export, window_counts
from tfdata import windowing
from tfdata.batching import pad_batch
from tfdata.contract import (
    CLIP_SAMPLES,
    DEFAULT_THRESHOLD,
    FRONTEND,
    SAMPLE_RATE,
    URBANSOUND8K_CLASSES,
    WINDOW_HOP_SAMPLES,
)
from tfdata.layout import (
    CLASSES_FILE,
    INPUT_WAVEFORM,
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
    SAVED_MODEL_FILE,
    SELECTION_FILE,
    SERVING_SIGNATURE,
    VERSION,
    WINDOWS_OUTPUTS,
    WINDOWS_SIGNATURE,
    serving_inputs,
    windows_inputs,
)
from tfdata.pcm import PCM_SCALE, quantize, to_pcm16

SAME_ANSWER = 1e-5  # a clip in a padded batch vs the same clip alone
US8K = URBANSOUND8K_CLASSES  # the shared run's classes (its records have no manifest)
CLASSES = len(US8K)
pytestmark = pytest.mark.timeout(180)


def _scene(seconds, seed):
    """Changing content (noise bursts, tones) so windows differ and a trained net answers differently."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    x = 0.01 * rng.standard_normal(n)
    x += 0.2 * np.sin(2 * np.pi * (300 + 2700 * (t % 3 > 1.5)) * t)  # 300 Hz / 3 kHz every 1.5 s
    x[(t % 2) < 0.5] += 0.3 * rng.standard_normal(int(((t % 2) < 0.5).sum()))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def trained(trained_run):
    """The shared run's tiny model (tests/trained_run.py: it learned tones), so its answers depend on
    its input."""
    return keras.models.load_model(trained_run.run / "checkpoints" / "tiny" / "best.keras", compile=False)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    output = tmp_path_factory.mktemp("export")
    version_dir = export_model(trained, output, class_names=US8K, threshold=0.55, metadata={"note": "test"})
    return output, version_dir


# Runs in a fresh process with TensorFlow alone: argv = SavedModel dir, signature name, an .npz of
# the calls to make ("<call>.<input name>" → array). Prints every call's outputs, by call name.
FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf

saved_model_dir, signature_name, calls_file = sys.argv[1:]
loaded = tf.saved_model.load(saved_model_dir)
serve = loaded.signatures[signature_name]
calls = {}
with np.load(calls_file) as arrays:
    for key in arrays.files:
        call, input_name = key.split(".")
        calls.setdefault(call, {})[input_name] = tf.constant(arrays[key])

def as_json(out):
    return {k: v.numpy().tolist() if v.dtype != tf.string else [s.decode() for s in v.numpy()]
            for k, v in out.items()}

print(json.dumps({"outputs": {call: as_json(serve(**inputs)) for call, inputs in calls.items()},
                  "signatures": sorted(loaded.signatures),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("models", "tfdata", "us8k"))}))
"""


def _in_fresh_process(version_dir, calls, tmp_path):
    """{call name: (waveform, lengths)} through the serving signature in a fresh process."""
    np.savez(tmp_path / "calls.npz", **{f"{call}.{name}": array for call, (waveform, lengths) in calls.items()
                                        for name, array in serving_inputs(waveform, lengths).items()})
    (tmp_path / "probe.py").write_text(FRESH_PROCESS)
    done = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(version_dir), SERVING_SIGNATURE,
                           str(tmp_path / "calls.npz")], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fresh_process_answers_any_length(exported, tmp_path):
    _, version_dir = exported
    clips = [_scene(0.5, 1), _scene(4, 2), _scene(11, 3)]
    calls = {f"alone{i}": pad_batch([c]) for i, c in enumerate(clips)}
    calls["batch"] = pad_batch(clips)
    padded, _ = pad_batch([clips[0], clips[2]])  # the 0.5 s clip padded to 11 s, both rows "full"
    calls["padded_without_lengths"] = (padded, np.full(2, len(clips[2]), np.int32))
    probe = _in_fresh_process(version_dir, calls, tmp_path)
    outputs = probe["outputs"]
    result = {"alone": [outputs[f"alone{i}"] for i in range(len(clips))], "batch": outputs["batch"],
              "padded_without_lengths": outputs["padded_without_lengths"][OUTPUT_PROBABILITIES],
              "signatures": probe["signatures"], "modules": probe["modules"]}
    assert result["modules"] == []  # TensorFlow alone, none of our code (our layers are not needed)
    assert {SERVING_SIGNATURE, WINDOWS_SIGNATURE, LOG_MEL_SIGNATURE} <= set(result["signatures"])
    for i, alone in enumerate(result["alone"]):
        probabilities = np.array(alone[OUTPUT_PROBABILITIES][0])
        assert probabilities.shape == (CLASSES,) and np.isfinite(probabilities).all()
        assert abs(probabilities.sum() - 1) < 1e-5
        assert alone[OUTPUT_CLASS_NAME][0] == US8K[alone[OUTPUT_CLASS_ID][0]]
        assert alone[OUTPUT_WINDOW_COUNT] == [[1, 1, 5][i]]
        batched = np.array(result["batch"][OUTPUT_PROBABILITIES][i])
        np.testing.assert_allclose(batched, probabilities, rtol=0, atol=SAME_ANSWER)
        assert result["batch"][OUTPUT_CLASS_NAME][i] == alone[OUTPUT_CLASS_NAME][0]
    assert result["batch"][OUTPUT_WINDOW_COUNT] == [1, 1, 5]
    windows = np.array(result["batch"][OUTPUT_WINDOW_PROBABILITIES])
    assert windows.shape == (3, 5, CLASSES)
    assert np.all(windows[:2, 1:] == 0)  # past a row's own windows
    # The check is sensitive: padding the 0.5 s clip to 11 s without `lengths` changes its answer.
    gap = np.abs(np.array(result["padded_without_lengths"][0])
                 - np.array(result["alone"][0][OUTPUT_PROBABILITIES][0]))
    assert gap.max() > 100 * SAME_ANSWER


@pytest.mark.parametrize("seconds, expected", [(0.5, 1), (4, 1), (4 + 1 / SAMPLE_RATE, 2), (6, 2), (8, 3),
                                               (11, 5), (0, 1)])
def test_window_count(seconds, expected):
    n = round(seconds * SAMPLE_RATE)
    assert int(window_counts(tf.constant([n], tf.int32))[0]) == expected
    assert expected == 1 + int(np.ceil(max(0, n - CLIP_SAMPLES) / WINDOW_HOP_SAMPLES))


def test_windows_are_4s_every_2s_and_averaged(trained, exported):
    _, version_dir = exported
    serve = tf.saved_model.load(str(version_dir)).signatures[SERVING_SIGNATURE]
    clip = _scene(11, 4)
    out = serve(**serving_inputs(tf.constant(clip[None]), tf.constant([len(clip)], tf.int32)))
    padded = np.pad(clip, (0, CLIP_SAMPLES + 4 * WINDOW_HOP_SAMPLES - len(clip)))
    expected = trained.predict(np.stack([padded[i * WINDOW_HOP_SAMPLES:i * WINDOW_HOP_SAMPLES + CLIP_SAMPLES]
                                         for i in range(5)]), verbose=0)
    np.testing.assert_allclose(out[OUTPUT_WINDOW_PROBABILITIES].numpy()[0], expected, atol=1e-5)
    np.testing.assert_allclose(out[OUTPUT_PROBABILITIES].numpy()[0], expected.mean(axis=0), atol=1e-5)
    short = clip[:SAMPLE_RATE]  # 1 s: zero padded to one 4 s window, as in ingestion
    out = serve(**serving_inputs(tf.constant(short[None]), tf.constant([len(short)], tf.int32)))
    np.testing.assert_allclose(out[OUTPUT_PROBABILITIES].numpy()[0],
                               trained.predict(np.pad(short, (0, CLIP_SAMPLES - len(short)))[None], verbose=0)[0],
                               atol=1e-5)


def test_log_mel_signature_gives_the_features_per_window(trained, exported):
    _, version_dir = exported
    log_mel = tf.saved_model.load(str(version_dir)).signatures[LOG_MEL_SIGNATURE]
    clip = _scene(6, 5)
    out = log_mel(**{INPUT_WAVEFORM: tf.constant(clip[None])})
    assert out[OUTPUT_LOG_MEL].shape == (1, 2, FRONTEND.frames_per_window, FRONTEND.n_mels)
    assert out[OUTPUT_WINDOW_COUNT].numpy().tolist() == [2]
    frontend = trained.get_layer("frontend")
    np.testing.assert_allclose(out[OUTPUT_LOG_MEL].numpy()[0, 0], frontend(clip[None, :CLIP_SAMPLES]).numpy()[0],
                               atol=1e-4)


def test_bad_input_is_an_error_not_an_answer(exported):
    _, version_dir = exported
    serve = tf.saved_model.load(str(version_dir)).signatures[SERVING_SIGNATURE]
    waveform = np.zeros((2, SAMPLE_RATE), np.float32)
    for lengths, problem in (([SAMPLE_RATE], "one entry per waveform row"), ([0, SAMPLE_RATE + 1], "exceed"),
                             ([-1, 5], "negative")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=problem):
            serve(**serving_inputs(tf.constant(waveform), tf.constant(lengths, tf.int32)))
    waveform[1, 7] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        serve(**serving_inputs(tf.constant(waveform), tf.constant([5, 5], tf.int32)))
    empty = serve(**serving_inputs(tf.zeros([0, 0]), tf.zeros([0], tf.int32)))
    assert empty[OUTPUT_PROBABILITIES].shape == (0, CLASSES)


@pytest.mark.parametrize("lengths", [[1], [CLIP_SAMPLES], [CLIP_SAMPLES + 1, 5], [0, 3 * WINDOW_HOP_SAMPLES + 7],
                                     [11 * SAMPLE_RATE, SAMPLE_RATE // 2, 6 * SAMPLE_RATE]])
def test_graph_windowing_is_the_numpy_windowing(lengths):
    """frame_windows in the graph and tfdata.windowing (the handler's) cut the same windows."""
    rng = np.random.default_rng(len(lengths))
    clips = [rng.uniform(-1, 1, n).astype(np.float32) for n in lengths]
    batch, valid = pad_batch(clips)
    windows, counts = frame_windows(tf.constant(batch), tf.constant(valid))
    assert counts.numpy().tolist() == [windowing.window_count(n) for n in lengths]
    np.testing.assert_array_equal(windowing.window_counts(np.array(lengths)), counts.numpy())
    for row, clip in enumerate(clips):
        expected = windowing.frame(clip)
        np.testing.assert_array_equal(windows.numpy()[row, :len(expected)], expected)  # the rest: never used


def test_windows_signature_equals_serving_default_on_int16_audio(exported):
    """Each window as int16 PCM, averaged per clip: serving_default's answer on the same int16 audio."""
    _, version_dir = exported
    loaded = tf.saved_model.load(str(version_dir))
    clips = [_scene(0.5, 21), _scene(4, 22), _scene(11, 23), _scene(60, 24)]
    windows, clip_index, valid = windowing.frame_clips([to_pcm16(c) for c in clips])
    out = loaded.signatures[WINDOWS_SIGNATURE](**windows_inputs(tf.constant([w.tobytes() for w in windows]),
                                                                 tf.constant(clip_index), tf.constant(valid)))
    assert set(out) == set(WINDOWS_OUTPUTS)
    assert out[OUTPUT_PROBABILITIES].shape == (1 + 1 + 5 + 29, CLASSES)
    assert out[OUTPUT_CLIP_INDEX].numpy().tolist() == clip_index.tolist()
    assert windowing.clip_lengths(clip_index, out[OUTPUT_VALID_SAMPLES].numpy()).tolist() == [len(c) for c in clips]
    mean, per_window, counts = windowing.average_windows(out[OUTPUT_PROBABILITIES].numpy(), clip_index)
    batch, lengths = pad_batch([quantize(c) for c in clips])
    reference = loaded.signatures[SERVING_SIGNATURE](**serving_inputs(tf.constant(batch), tf.constant(lengths)))
    np.testing.assert_allclose(mean, reference[OUTPUT_PROBABILITIES].numpy(), rtol=0, atol=SAME_ANSWER)
    np.testing.assert_allclose(per_window, reference[OUTPUT_WINDOW_PROBABILITIES].numpy(), rtol=0, atol=SAME_ANSWER)
    assert counts.tolist() == reference[OUTPUT_WINDOW_COUNT].numpy().tolist() == [1, 1, 5, 29]
    # the graph divides by the one PCM scale: a full-scale window is ±1.0 after decoding
    full_scale = int(PCM_SCALE)
    assert to_pcm16(np.array([1.0, -1.0, 2.0], np.float32)).tolist() == [full_scale, -full_scale, full_scale]


def test_windows_signature_refuses_malformed_windows(exported):
    _, version_dir = exported
    serve = tf.saved_model.load(str(version_dir)).signatures[WINDOWS_SIGNATURE]
    full = bytes(2 * CLIP_SAMPLES)
    for pcm, index, valid, problem in (([full[:-2]], [0], [1], "must hold 88200 little-endian int16 samples"),
                                       ([full, full + b"\0\0"], [0, 0], [1, 1], "176400 bytes"),
                                       ([full[:-1]], [0], [1], "176400 bytes"),
                                       ([full], [0, 1], [1], "clip_index must have one entry per pcm16 window"),
                                       ([full], [0], [1, 1], "valid_samples must have one entry"),
                                       ([full], [0], [-1], "must not be negative"),
                                       ([full], [0], [CLIP_SAMPLES + 1], "must not exceed 88200")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=problem):
            serve(**windows_inputs(tf.constant(pcm), tf.constant(index, tf.int32), tf.constant(valid, tf.int32)))
    empty = serve(**windows_inputs(tf.constant([], tf.string), tf.constant([], tf.int32), tf.constant([], tf.int32)))
    assert empty[OUTPUT_PROBABILITIES].shape == (0, CLASSES) and empty[OUTPUT_CLIP_INDEX].shape == (0,)


def test_windows_signature_zeroes_past_valid_samples(exported):
    """Like `lengths`: what follows a window's valid samples does not change its answer."""
    _, version_dir = exported
    serve = tf.saved_model.load(str(version_dir)).signatures[WINDOWS_SIGNATURE]
    clip = to_pcm16(_scene(1.5, 25))
    clean, noisy = np.zeros(CLIP_SAMPLES, "<i2"), to_pcm16(_scene(4, 26))
    clean[:clip.size] = noisy[:clip.size] = clip
    out = serve(**windows_inputs(tf.constant([clean.tobytes(), noisy.tobytes(), noisy.tobytes()]),
                                 tf.constant([0, 1, 2]), tf.constant([clip.size, clip.size, CLIP_SAMPLES])))
    p = out[OUTPUT_PROBABILITIES].numpy()
    np.testing.assert_allclose(p[1], p[0], rtol=0, atol=SAME_ANSWER)
    assert np.abs(p[2] - p[0]).max() > 100 * SAME_ANSWER  # the noise past 1.5 s does change it when counted


def test_metadata(exported):
    output, version_dir = exported
    metadata = json.loads((output / METADATA_FILE).read_text())
    assert metadata == json.loads((version_dir / "assets" / METADATA_FILE).read_text())
    assert metadata["sample_rate"] == SAMPLE_RATE and metadata["clip_samples"] == CLIP_SAMPLES
    assert metadata["window_hop_samples"] == WINDOW_HOP_SAMPLES
    assert metadata["class_names"] == list(US8K) and metadata["num_classes"] == 10 and metadata["threshold"] == 0.55
    assert metadata["model_name"] == "tiny" and metadata["note"] == "test"
    assert metadata["signatures"][WINDOWS_SIGNATURE]["outputs"] == list(WINDOWS_OUTPUTS)
    assert metadata["pcm_scale"] == PCM_SCALE
    assert metadata["tensorflow_version"] == tf.__version__ and metadata["keras_version"] == keras.__version__
    loaded = tf.saved_model.load(str(version_dir))
    assert json.loads(pathlib.Path(loaded.metadata_path().numpy().decode()).read_text()) == metadata


def test_serving_graph_has_core_ops_only(exported):
    _, version_dir = exported
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / SAVED_MODEL_FILE).read_bytes())
    graph = saved.meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    ops = {n.op for n in nodes}
    assert {"RFFT", "MatMul", "Conv2D", "ScatterNd", "DecodeRaw"} <= ops
    assert not [op for op in ops if op.startswith("_") or "Xla" in op or "Mkl" in op]
    assert not [f.signature.name for f in graph.library.function if "_XlaMustCompile" in f.attr]


def test_verify_export_and_refusals(trained, exported):
    output, version_dir = exported
    assert set(verify_export(output)) == {"silence", "noise", "tone"}
    assert set(verify_export(output, US8K)) == {"silence", "noise", "tone"}
    with pytest.raises(ExportVerificationError, match="3 classes expected"):
        verify_export(output, ("bell", "hum", "chirp"))  # checked against another list: refused
    with pytest.raises(FileExistsError):
        export_model(trained, output, class_names=US8K)
    with pytest.raises(ValueError, match="threshold"):
        export_model(trained, output, class_names=US8K, threshold=1.5, overwrite=True)
    with pytest.raises(ValueError, match="written by the export"):
        export_model(trained, output, class_names=US8K, metadata={"threshold": 0.1}, overwrite=True)
    with pytest.raises(ValueError, match=r"model 'tiny' has 10 outputs but the run's class list has 3 classes"):
        export_model(trained, output, class_names=("bell", "hum", "chirp"), overwrite=True)
    with pytest.raises(ValueError, match="listed twice"):
        export_model(trained, output, class_names=US8K[:9] + (US8K[0],), overwrite=True)
    assert (version_dir / SAVED_MODEL_FILE).exists()  # refusals left the export alone


def _run_dir(tmp_path, model, selection=None):
    run = tmp_path / "run"
    (run / "checkpoints" / "tiny").mkdir(parents=True)
    model.save(run / "checkpoints" / "tiny" / "best.keras")
    selection = selection or {"selected": "tiny",
                              "models": {"tiny": {"best_val_accuracy": 0.5,
                                                  "checkpoint": "checkpoints/tiny/best.keras"}}}
    (run / SELECTION_FILE).write_text(json.dumps(selection))
    return run


def test_cli_exports_the_selected_model(trained, tmp_path, capsys):
    run = _run_dir(tmp_path, trained)
    output = tmp_path / "export"
    assert us8k.main(["export", str(run), "--output", str(output)]) == 0
    metadata = json.loads((output / METADATA_FILE).read_text())
    assert metadata["threshold"] == DEFAULT_THRESHOLD and metadata["model_name"] == "tiny"
    # a run written before runs kept their classes (no classes.json) is UrbanSound8K's, in the graph too
    assert not (run / CLASSES_FILE).exists() and metadata["class_names"] == list(US8K)
    assert metadata["run"]["selected"] == "tiny" and metadata["run"]["selected_model"]["best_val_accuracy"] == 0.5
    clip = _scene(4, 6)
    out = tf.saved_model.load(str(output / MODEL_SUBDIR / VERSION)).signatures[SERVING_SIGNATURE](
        **serving_inputs(tf.constant(clip[None]), tf.constant([len(clip)], tf.int32)))
    np.testing.assert_allclose(out[OUTPUT_PROBABILITIES].numpy()[0], trained.predict(clip[None], verbose=0)[0],
                               atol=1e-5)
    capsys.readouterr()
    assert us8k.main(["export", str(run), "--output", str(output)]) == 1
    assert re.search("us8k export: error: .*already holds a model", capsys.readouterr().err.strip().splitlines()[-1])
    assert us8k.main(["export", str(run), "--output", str(output), "--overwrite", "--threshold", "0.7"]) == 0
    assert json.loads((output / METADATA_FILE).read_text())["threshold"] == 0.7


def test_cli_errors_are_one_line(trained, tmp_path, capsys):
    def error(*argv):
        capsys.readouterr()
        assert us8k.main(["export", *argv, "--output", str(tmp_path / "out")]) == 1
        message = capsys.readouterr().err.strip().splitlines()[-1]  # one line: the error is the last line
        assert message.startswith("us8k export: error: ")
        return message

    assert "run directory not found" in error(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no selection.json" in error(str(tmp_path / "empty"))
    run = _run_dir(tmp_path, trained, {"selected": "cnn", "models": {"tiny": {"checkpoint": "x.keras"}}})
    assert "no selected model" in error(str(run))
    (run / SELECTION_FILE).write_text(json.dumps({"selected": "tiny", "models": {"tiny": {"checkpoint": "x.keras"}}}))
    assert "checkpoint of the selected model 'tiny' not found" in error(str(run))
    (run / SELECTION_FILE).write_text("{not json")
    assert "not valid JSON" in error(str(run))
    (run / SELECTION_FILE).write_text(json.dumps({"selected": "tiny", "models": {"tiny": {
        "checkpoint": SELECTION_FILE}}}))
    assert "cannot load" in error(str(run))
    run = _run_dir(tmp_path / "other", trained)
    (run / CLASSES_FILE).write_text(json.dumps({"class_names": ["bell", "hum", "chirp"]}))
    assert re.search(r"model 'tiny' has 10 outputs but the run's class list has 3 classes \(bell, hum, chirp\)$",
                     error(str(run)))
    (run / CLASSES_FILE).write_text(json.dumps({"class_names": ["bell"]}))
    assert "1 class(es): a class list has 2 to 1000" in error(str(run))
    assert not (tmp_path / "out").exists()
