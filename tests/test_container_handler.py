"""The SageMaker handler as the TF Serving container runs it: from the unpacked model.tar.gz alone.

The package is built for this machine's Python (`us8k package --python-version 3.11`: the same
vendoring as for the container's 3.12) and unpacked; its code/inference.py is loaded the way the
container's python_service.py loads it (spec_from_file_location("inference", ...), not registered
in sys.modules, when the service starts) in an isolated interpreter (`python -I -S`: no
site-packages, no PYTHONPATH, no US8K_* variable unless a test sets one) whose path is code/,
code/lib/ and the standard library only, so numpy, soundfile, soxr come from code/lib or not at all.
Requests go through input_handler there; its TF Serving body runs on the real SavedModel in this
process (tf_serving_rest: JSON, b64 → bytes, the signature, as TF Serving's REST layer does); the
answer goes back through output_handler there, as a `.status_code`/`.content` object.

The packaged export's threshold is EXPORTED_THRESHOLD, not the 0.6 default: the handler must find
metadata.json beside code/ by itself. A malformed US8K_THRESHOLD stops it at start-up. The same
requests sent to a running local endpoint (`us8k serve` of the same unpacked archive) get the same
answers, timeline and segments included.

Also here: the windows signature against `serving_default` on the same int16 audio (1e-5), two
requests of different lengths merged into one batch along dim 0 as TF Serving's batching merges
them, the payload's format, and the 413 the handler gives before TF Serving would refuse a request
larger than its max batch size."""
import base64
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import container_context
import export_copies
import numpy as np
import pytest
import tf_serving_rest
import wheel_cache
from container_context import context
from endpoint_servers import endpoint, post
from wav_files import encode as _encode

from serving import inference
from serving.package import write_package
from tfdata.audio import LIBSNDFILE_FORMATS, decode_audio
from tfdata.batching import pad_batch
from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE, UNDETERMINED, URBANSOUND8K_CLASSES, WINDOW_HOP_SAMPLES
from tfdata.layout import (
    INPUT_CLIP_INDEX,
    INPUT_PCM16,
    INPUT_VALID_SAMPLES,
    METADATA_FILE,
    OUTPUT_PROBABILITIES,
    OUTPUT_WINDOW_COUNT,
    SERVING_SIGNATURE,
    TFS_ENABLE_BATCHING_ENV,
    TFS_MAX_BATCH_SIZE_ENV,
    WINDOWS_SIGNATURE,
    find_saved_model,
    serving_inputs,
)
from tfdata.pcm import PCM_BYTES_PER_SAMPLE, quantize, to_pcm16
from tfdata.windowing import frame, window_count

pytestmark = pytest.mark.timeout(300)

SAME_ANSWER = 1e-5  # measured ≤ 5.9e-7 on the test model (120 clips of 0.3–13 s)
EXPORTED_THRESHOLD = 0.9  # the packaged export's; the handler's default would be 0.6
THIS_PYTHON = wheel_cache.THIS_PYTHON
CONTEXT_MODULE = Path(container_context.__file__)

# The isolated interpreter: argv[1] is the unpacked package, argv[2] tests/container_context.py
# (standard library only). One JSON request per stdin line.
DRIVER = r'''
import base64, importlib.util, json, os, sys

root = sys.argv[1]
stdlib = list(sys.path)
sys.path[:0] = [os.path.join(root, "code"), os.path.join(root, "code", "lib")]
spec = importlib.util.spec_from_file_location("container_context", sys.argv[2])
container_context = importlib.util.module_from_spec(spec)
spec.loader.exec_module(container_context)
spec = importlib.util.spec_from_file_location("inference", os.path.join(root, "code", "inference.py"))
inference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inference)  # as the container's service does when it starts
print(json.dumps({"started": True}), flush=True)


def context(request):
    return container_context.context(request.get("content_type"), request.get("custom_attributes"))


def probe():
    import numpy, soundfile, soxr, _cffi_backend
    return {"numpy": numpy.__file__, "soundfile": soundfile.__file__, "soxr": soxr.__file__,
            "cffi": _cffi_backend.__file__, "libsndfile": soundfile.__libsndfile_version__,
            "stdlib": stdlib, "path": sys.path, "no_site": "site" not in sys.modules,
            "tensorflow": "tensorflow" in sys.modules, "av": importlib.util.find_spec("av") is not None,
            "serving": importlib.util.find_spec("serving") is not None,
            "inference_registered": "inference" in sys.modules,
            "environment": sorted(name for name in os.environ if name.startswith("US8K_"))}


for line in sys.stdin:
    request = json.loads(line)
    os.environ.update(request.get("env", {}))
    for name in request.get("unset", []):
        os.environ.pop(name, None)
    try:
        if request["op"] == "probe":
            answer = probe()
        elif request["op"] == "input":
            answer = {"payload": inference.input_handler(base64.b64decode(request["body"]), context(request))}
        else:
            body, content_type = inference.output_handler(container_context.Response(
                request["status_code"], base64.b64decode(request["content"])), context(request))
            answer = {"body": body, "content_type": content_type}
    except Exception as exc:  # the container turns any handler exception into a 500 {"error": str(exc)}
        answer = {"error": str(exc), "status": getattr(exc, "status", None), "type": type(exc).__name__}
    print(json.dumps(answer), flush=True)
'''


class IsolatedHandler:
    """code/inference.py of an unpacked package, in its own isolated interpreter, started with no
    US8K_* variable in its environment but those of `env`."""

    def __init__(self, root, tmp_path, env=None):
        (tmp_path / "driver.py").write_text(DRIVER)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("US8K_")}
        self.process = subprocess.Popen([sys.executable, "-I", "-S", str(tmp_path / "driver.py"), str(root),
                                         str(CONTEXT_MODULE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                        env={**environment, **(env or {})})

    def started(self) -> bool:
        """Whether the handler loaded (else the process has ended: see `failure`)."""
        line = self.process.stdout.readline()
        return bool(line) and json.loads(line) == {"started": True}

    def failure(self) -> tuple[int, str]:
        """(exit status, stderr) of a handler that did not start."""
        self.process.stdin.close()
        return self.process.wait(timeout=60), self.process.stderr.read()

    def call(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read()[-3000:]
        return json.loads(line)

    def input(self, body: bytes, content_type: str, attributes: str | None = None, **extra) -> dict:
        return self.call(op="input", body=base64.b64encode(body).decode(), content_type=content_type,
                         custom_attributes=attributes, **extra)

    def output(self, response, attributes: str | None = None) -> dict:
        return self.call(op="output", status_code=response.status_code,
                         content=base64.b64encode(response.content).decode(), custom_attributes=attributes)

    def answer(self, loaded, body: bytes, content_type: str, attributes: str | None = None) -> dict:
        """The whole invocation: input_handler here, TF Serving on `loaded`, output_handler here."""
        sent = self.input(body, content_type, attributes)
        assert "payload" in sent, sent
        answered = self.output(tf_serving_rest.predict(loaded, sent["payload"]), attributes)
        assert "body" in answered, answered
        return json.loads(answered["body"])

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def packaged_export(tiny_export, tmp_path_factory):
    """tiny_export with EXPORTED_THRESHOLD (tests/export_copies.py: a copy, not a second export)."""
    return export_copies.with_threshold(tmp_path_factory, tiny_export, EXPORTED_THRESHOLD)


@pytest.fixture(scope="module")
def unpacked(packaged_export, tmp_path_factory):
    """`us8k package` of the export for this Python (the run's wheel cache), unpacked as the container unpacks it."""
    base = tmp_path_factory.mktemp("container")
    archive = write_package(packaged_export, base / "model.tar.gz", python_version=THIS_PYTHON,
                            wheel_dir=wheel_cache.container_wheels(tmp_path_factory, THIS_PYTHON))
    root = base / "opt_ml_model"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def handler(unpacked, tmp_path_factory):
    isolated = IsolatedHandler(unpacked, tmp_path_factory.mktemp("driver"))
    assert isolated.started(), isolated.failure()
    yield isolated
    isolated.close()


@pytest.fixture(scope="module")
def loaded(tiny_export):
    import tensorflow as tf

    return tf.saved_model.load(str(find_saved_model(tiny_export)))


@pytest.fixture
def in_process(tiny_export, monkeypatch):
    """serving.inference in this process, configured as in the container (tiny_export's metadata)."""
    monkeypatch.setenv(inference.METADATA_ENV, str(tiny_export / METADATA_FILE))
    monkeypatch.delenv(inference.THRESHOLD_ENV, raising=False)
    for name in (TFS_ENABLE_BATCHING_ENV, TFS_MAX_BATCH_SIZE_ENV):
        monkeypatch.delenv(name, raising=False)
    inference.reload_container_config()
    yield inference
    monkeypatch.undo()
    inference.forget_container_config()  # outside the container again: no model's metadata to read


def wav(samples, rate, subtype="PCM_16", fmt="WAV"):
    return _encode(samples, rate, fmt, subtype)


def scene(seconds, seed, rate=SAMPLE_RATE, channels=1):
    """Changing content (tones switching, noise bursts), so windows differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.2 * np.sin(2 * np.pi * (300 + 2700 * (t % 3 > 1.5)) * t) + 0.01 * rng.standard_normal(t.size)
    x[(t % 2) < 0.5] += 0.3 * rng.standard_normal(int(((t % 2) < 0.5).sum()))
    x = np.round(np.clip(x, -1, 1), 4).astype(np.float32)  # 4 decimals: short JSON numbers
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def rows_json(clips) -> str:
    """A JSON request whose rows parse back to exactly `clips` (scene's 4-decimal samples)."""
    return json.dumps({"instances": [np.round(c.astype(np.float64), 4).tolist() for c in clips]})


def reference(loaded, waveforms):
    """serving_default on the int16-quantised audio (the PCM the handler sends, / PCM_SCALE)."""
    import tensorflow as tf

    batch, lengths = pad_batch([quantize(w) for w in waveforms])
    out = loaded.signatures[SERVING_SIGNATURE](**serving_inputs(tf.constant(batch), tf.constant(lengths)))
    return {k: v.numpy() for k, v in out.items()}


def probabilities(prediction):
    return np.array([prediction["probabilities"][c] for c in URBANSOUND8K_CLASSES])


# ------------------------------------------------------------------ the packaged handler, isolated
def test_packaged_handler_imports_only_what_the_archive_holds(handler, unpacked):
    probe = handler.call(op="probe")
    lib = str(unpacked / "code" / "lib")
    for module in ("numpy", "soundfile", "soxr", "cffi"):
        assert probe[module].startswith(lib + "/"), (module, probe[module])
    assert probe["path"] == [str(unpacked / "code"), lib] + probe["stdlib"]
    assert all("site-packages" not in p and "/work/main" not in p for p in probe["stdlib"])
    assert probe["no_site"] and not probe["tensorflow"] and not probe["serving"]
    assert not probe["av"]  # PyAV (FFmpeg) is not shipped
    assert not probe["inference_registered"]  # loaded as the container loads it
    assert probe["libsndfile"].startswith("1.2")
    assert not (unpacked / "code" / "requirements.txt").exists()


def test_packaged_handler_serves_the_threshold_of_the_metadata_beside_code(handler, loaded, unpacked):
    """No US8K_METADATA, no US8K_THRESHOLD: the handler reads metadata.json at the archive's root,
    beside code/, and answers with the exported threshold, not the 0.6 default."""
    assert handler.call(op="probe")["environment"] == []
    assert json.loads((unpacked / METADATA_FILE).read_text())["threshold"] == EXPORTED_THRESHOLD
    clips = [scene(4.0, seed) for seed in range(20, 26)]
    predictions = handler.answer(loaded, rows_json(clips).encode(), "application/json")["predictions"]
    between = [p for p in predictions if 0.6 <= p["confidence"] < EXPORTED_THRESHOLD]
    assert between, [p["confidence"] for p in predictions]  # answers the default 0.6 would label
    for prediction in between:
        assert prediction["undetermined"] and prediction["label"] == UNDETERMINED
    # the request's threshold still wins over the exported one
    lenient = handler.answer(loaded, rows_json(clips).encode(), "application/json", "threshold=0.5")["predictions"]
    assert not any(p["undetermined"] for p in lenient if p["confidence"] >= 0.5)


@pytest.mark.parametrize("value", ["high", "1.5"])  # more values: tests/test_inference.py
def test_a_malformed_threshold_variable_stops_the_handler_at_start_up(unpacked, tmp_path, value):
    """US8K_THRESHOLD is read when the container loads the handler: a bad value stops it there, with a
    message naming the variable (not a 500 on every request)."""
    isolated = IsolatedHandler(unpacked, tmp_path, env={inference.THRESHOLD_ENV: value})
    assert not isolated.started()
    status, stderr = isolated.failure()
    assert status != 0
    assert f"ValueError: US8K_THRESHOLD must be a number in [0, 1] (the endpoint's threshold, `us8k deploy " \
           f"--threshold`), got {value!r}" in stderr, stderr[-2000:]


def test_a_threshold_variable_is_served_over_the_exported_one(unpacked, tmp_path, loaded):
    isolated = IsolatedHandler(unpacked, tmp_path, env={inference.THRESHOLD_ENV: "0.5"})
    try:
        assert isolated.started()
        predictions = isolated.answer(loaded, rows_json([scene(4.0, 20)]).encode(), "application/json")["predictions"]
        assert 0.5 <= predictions[0]["confidence"] < EXPORTED_THRESHOLD and not predictions[0]["undetermined"]
    finally:
        isolated.close()


def same_answers(served, packaged, compared):
    """The local endpoint's predictions equal the packaged handler's: probabilities, labels, timeline, segments."""
    assert len(served) == len(packaged) >= 1
    for mine, theirs in zip(served, packaged):
        np.testing.assert_allclose(probabilities(mine), probabilities(theirs), atol=SAME_ANSWER)
        assert (mine["label"], mine["undetermined"]) == (theirs["label"], theirs["undetermined"])
        assert [(w["start_s"], w["label"]) for w in mine.get("windows", [])] == \
            [(w["start_s"], w["label"]) for w in theirs.get("windows", [])]
        for window, other in zip(mine.get("windows", []), theirs.get("windows", [])):
            np.testing.assert_allclose(probabilities(window), probabilities(other), atol=SAME_ANSWER)
        assert [(g["start_s"], g["end_s"], g["label"]) for g in mine.get("segments", [])] == \
            [(g["start_s"], g["end_s"], g["label"]) for g in theirs.get("segments", [])]
        assert [g["confidence"] for g in mine.get("segments", [])] == \
            pytest.approx([g["confidence"] for g in theirs.get("segments", [])], abs=SAME_ANSWER)
        compared["windows"] += len(mine.get("windows", []))
        compared["segments"] += len(mine.get("segments", []))


def test_the_local_endpoint_answers_as_the_container_timeline_and_segments_included(handler, loaded, unpacked):
    """The same requests to `us8k serve` of the same unpacked archive (a running endpoint on loopback)
    and to the packaged handler (TF Serving's part run on the SavedModel): the same probabilities,
    labels, per-window timeline and event segments when both see the same audio, i.e. 16-bit audio at
    22050 Hz. Other audio the container rounds to int16 PCM (and clips past ±1, which a resampler's
    overshoot can reach) where the local endpoint keeps float32: the container then answers what the
    endpoint answers for the rounded waveform (tests/test_server.py bounds the rounding's effect)."""
    exact = [(wav(scene(11.0, 30), SAMPLE_RATE), "audio/wav"),
             (wav(scene(7.0, 31, channels=2), SAMPLE_RATE), "audio/wav"),
             (json.dumps({"instances": [{"b64": base64.b64encode(wav(scene(s, 32 + i), SAMPLE_RATE)).decode()}
                                        for i, s in enumerate((0.7, 4.0, 9.5))]}).encode(), "application/json")]
    resampled = [wav(0.5 * scene(7.0, 35, rate=16000, channels=2), 16000),
                 wav(scene(7.0, 31, rate=16000, channels=2), 16000)]  # the second overshoots ±1 when resampled
    assert np.abs(decode_audio(resampled[1])).max() > 1.0
    compared = {"windows": 0, "segments": 0}
    with endpoint(unpacked) as (local, client):
        assert local.config.threshold == EXPORTED_THRESHOLD  # read from the same metadata.json
        for attributes in ("windows=true", "windows=true,threshold=0.3"):  # the exported 0.9, then 0.3
            headers = {inference.CUSTOM_ATTRIBUTES_HEADER: attributes}
            for body, content_type in exact:
                response = post(client, body, content_type, headers=headers)
                assert response.status_code == 200, response.text
                same_answers(response.json()["predictions"],
                             handler.answer(loaded, body, content_type, attributes)["predictions"], compared)
            for body in resampled:
                rounded = quantize(decode_audio(body))  # the container's int16 PCM, as float32
                response = post(client, json.dumps({"instances": [rounded.tolist()]}).encode(), "application/json",
                                headers=headers)
                same_answers(response.json()["predictions"],
                             handler.answer(loaded, body, "audio/wav", attributes)["predictions"], compared)
            clipped = handler.answer(loaded, resampled[1], "audio/wav", attributes)["predictions"][0]
            unclipped = post(client, resampled[1], "audio/wav", headers=headers).json()["predictions"][0]
            assert np.abs(probabilities(unclipped) - probabilities(clipped)).max() > 100 * SAME_ANSWER
    assert compared["windows"] == 2 * 20 and compared["segments"] >= 5, compared  # something was compared


def test_packaged_handler_answers_a_wav_and_a_json_request(handler, loaded, unpacked):
    threshold = json.loads((unpacked / METADATA_FILE).read_text())["threshold"]
    stereo = scene(7.0, 1, rate=16000, channels=2)
    body = wav(stereo, 16000)
    sent = handler.input(body, "audio/wav", "windows=true")
    payload = json.loads(sent["payload"])
    assert payload["signature_name"] == WINDOWS_SIGNATURE
    waveform = decode_audio(body)  # the same soundfile and soxr versions here
    assert len(payload["inputs"][INPUT_PCM16]) == window_count(waveform.size) == 3
    response = tf_serving_rest.predict(loaded, sent["payload"])
    assert response.status_code == 200
    answered = handler.output(response, "windows=true")
    assert answered["content_type"] == "application/json"
    (prediction,) = json.loads(answered["body"])["predictions"]
    expected = reference(loaded, [waveform])
    np.testing.assert_allclose(probabilities(prediction), expected[OUTPUT_PROBABILITIES][0], atol=SAME_ANSWER)
    assert prediction["undetermined"] == (prediction["confidence"] < threshold)
    assert [w["start_s"] for w in prediction["windows"]] == [0.0, 2.0, 4.0]

    rows = [scene(0.5, 2), scene(9.0, 3)]
    request = rows_json(rows).encode()
    sent = handler.input(request, "application/json", "threshold=0.01")
    assert json.loads(sent["payload"])["inputs"][INPUT_CLIP_INDEX] == [0, 1, 1, 1, 1]
    answered = handler.output(tf_serving_rest.predict(loaded, sent["payload"]), "threshold=0.01")
    predictions = json.loads(answered["body"])["predictions"]
    expected = reference(loaded, rows)
    for row, prediction in enumerate(predictions):
        np.testing.assert_allclose(probabilities(prediction), expected[OUTPUT_PROBABILITIES][row], atol=SAME_ANSWER)
        assert prediction["label"] == URBANSOUND8K_CLASSES[int(np.argmax(expected[OUTPUT_PROBABILITIES][row]))]


@pytest.mark.parametrize("fmt, subtype, rate", [("FLAC", "PCM_24", 44100), ("OGG", "VORBIS", 22050),
                                                ("OGG", "OPUS", 48000), ("MP3", "MPEG_LAYER_III", 44100)])
def test_packaged_handler_reads_what_libsndfile_reads(handler, fmt, subtype, rate):
    sent = handler.input(wav(scene(2.0, 4, rate=rate), rate, subtype, fmt), "audio/ogg")
    assert "payload" in sent, sent
    assert json.loads(sent["payload"])["inputs"][INPUT_CLIP_INDEX] == [0]


def test_formats_libsndfile_cannot_read_get_415_in_the_container(handler, in_process):
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:  # AAC in M4A: FFmpeg reads it, libsndfile does not
        stream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        frame_ = av.AudioFrame.from_ndarray(scene(2.0, 5)[None], format="fltp", layout="mono")
        frame_.rate = SAMPLE_RATE
        for packet in [*stream.encode(frame_), *stream.encode(None)]:
            out.mux(packet)
    m4a = buf.getvalue()
    answer = handler.input(m4a, "application/octet-stream")
    assert answer["status"] == 415 and answer["type"] == "RequestError"
    assert answer["error"].startswith("415 Unsupported Media Type: body: libsndfile cannot read this input")
    assert LIBSNDFILE_FORMATS in answer["error"]
    b64 = json.dumps({"instances": [{"b64": base64.b64encode(m4a).decode()}]}).encode()
    assert handler.input(b64, "application/json")["status"] == 415
    # the local endpoint's environment has PyAV: the same bytes decode there (docs/serving.md says so)
    (waveform,) = in_process.parse_request(m4a, "application/octet-stream")
    assert abs(waveform.size - 2 * SAMPLE_RATE) < 0.2 * SAMPLE_RATE  # AAC adds priming and padding frames


def test_packaged_handler_refuses_what_tf_serving_would_refuse(handler):
    clip = rows_json([scene(11.0, 6)]).encode()  # 5 windows
    env = {TFS_ENABLE_BATCHING_ENV: "true", TFS_MAX_BATCH_SIZE_ENV: "4"}
    answer = handler.input(clip, "application/json", env=env)
    assert answer["status"] == 413 and "cuts into 5 windows of 4 s" in answer["error"]
    assert "batches at most 4" in answer["error"]
    assert "payload" in handler.input(clip, "application/json", env={TFS_MAX_BATCH_SIZE_ENV: "5"})
    assert "payload" in handler.input(clip, "application/json", env={TFS_ENABLE_BATCHING_ENV: "false"})
    assert "payload" in handler.input(clip, "application/json", env={TFS_ENABLE_BATCHING_ENV: "true"},
                                      unset=[TFS_MAX_BATCH_SIZE_ENV])  # the container's default: 8 rows
    nine = wav(scene(19.0, 6), SAMPLE_RATE)  # 9 windows
    answer = handler.input(nine, "audio/wav", env={TFS_ENABLE_BATCHING_ENV: "true"})
    assert answer["status"] == 413
    assert "cuts into 9 windows of 4 s" in answer["error"] and "at most 8" in answer["error"]


# ------------------------------------------------------------------ the windows signature and batching
@pytest.mark.parametrize("seconds", [0.5, 4.0, 4.0 + 1 / SAMPLE_RATE, 6.0, 11.0, 60.0])
def test_windows_answer_equals_serving_default_on_the_same_int16_audio(in_process, loaded, seconds):
    clip = scene(seconds, 7)
    ctx = context("audio/wav", "windows=true")  # float WAV: 60 s fits the 6 MiB body, as floats exactly
    payload = in_process.input_handler(wav(clip, SAMPLE_RATE, "FLOAT"), ctx)
    body, _ = in_process.output_handler(tf_serving_rest.predict(loaded, payload), ctx)
    (prediction,) = json.loads(body)["predictions"]
    expected = reference(loaded, [clip])
    np.testing.assert_allclose(probabilities(prediction), expected[OUTPUT_PROBABILITIES][0], atol=SAME_ANSWER)
    assert len(prediction["windows"]) == expected[OUTPUT_WINDOW_COUNT][0] == window_count(clip.size)
    # the whole answer as the local endpoint builds it from serving_default (durations from the waveform)
    config = in_process.container_config()
    (local,) = in_process.predictions_from_signature(expected, config=config, options=in_process.RequestOptions(
        windows=True), durations=[clip.size / SAMPLE_RATE])
    for window, local_window in zip(prediction["windows"], local["windows"]):
        np.testing.assert_allclose(probabilities(window), probabilities(local_window), atol=SAME_ANSWER)
    assert [(w["start_s"], w["label"]) for w in prediction["windows"]] == \
        [(w["start_s"], w["label"]) for w in local["windows"]]
    assert [(g["start_s"], g["end_s"], g["label"]) for g in prediction["segments"]] == \
        [(g["start_s"], g["end_s"], g["label"]) for g in local["segments"]]
    if prediction["segments"]:
        assert prediction["segments"][-1]["end_s"] <= round(clip.size / SAMPLE_RATE, 3)  # capped at the clip's end


def test_requests_of_different_lengths_batch_in_tf_serving(in_process, loaded):
    """Two concurrent requests, merged along dim 0 into one call as TF Serving's batching does."""
    first, second = [scene(1.0, 8)], [scene(9.0, 9), scene(5.0, 10)]
    ctx = context("application/json", "windows=true")
    payloads = [in_process.input_handler(rows_json(clips), ctx) for clips in (first, second)]
    merged = tf_serving_rest.batch(loaded, payloads)  # one signature call on 1 + (4 + 2) windows
    for clips, response, payload in zip((first, second), merged, payloads):
        body, _ = in_process.output_handler(response, ctx)
        predictions = json.loads(body)["predictions"]
        alone = json.loads(in_process.output_handler(tf_serving_rest.predict(loaded, payload), ctx)[0])["predictions"]
        expected = reference(loaded, clips)[OUTPUT_PROBABILITIES]
        assert len(predictions) == len(clips)
        for row, prediction in enumerate(predictions):
            np.testing.assert_allclose(probabilities(prediction), expected[row], atol=SAME_ANSWER)
            np.testing.assert_allclose(probabilities(prediction), probabilities(alone[row]), atol=SAME_ANSWER)
            assert len(prediction["windows"]) == window_count(clips[row].size)
    # the old [None, None] float payloads of these two requests could not be merged at all
    floats = [json.dumps({"signature_name": SERVING_SIGNATURE,
                          "inputs": serving_inputs(*(a.tolist() for a in pad_batch(clips)))})
              for clips in (first, second)]
    with pytest.raises(ValueError, match="pad_variable_length_inputs"):
        tf_serving_rest.batch(loaded, floats)


def test_payload_is_one_int16_string_per_window(in_process):
    clips = [scene(0.3, 11), scene(6.5, 12)]
    payload = json.loads(in_process.tfs_request_json(clips))
    assert payload["signature_name"] == WINDOWS_SIGNATURE
    assert set(payload["inputs"]) == {INPUT_PCM16, INPUT_CLIP_INDEX, INPUT_VALID_SAMPLES}
    strings = [base64.b64decode(s["b64"]) for s in payload["inputs"][INPUT_PCM16]]
    assert payload["inputs"][INPUT_CLIP_INDEX] == [0, 1, 1, 1]
    n = clips[1].size
    assert payload["inputs"][INPUT_VALID_SAMPLES] == [clips[0].size, CLIP_SAMPLES, CLIP_SAMPLES,
                                                      n - 2 * WINDOW_HOP_SAMPLES]
    assert {len(s) for s in strings} == {CLIP_SAMPLES * PCM_BYTES_PER_SAMPLE}
    windows = np.stack([np.frombuffer(s, "<i2") for s in strings])
    np.testing.assert_array_equal(windows[0], frame(to_pcm16(clips[0]))[0])
    assert not windows[0, clips[0].size:].any()  # zero padded
    pcm = to_pcm16(clips[1])
    for k in range(3):
        part = pcm[k * WINDOW_HOP_SAMPLES:k * WINDOW_HOP_SAMPLES + CLIP_SAMPLES]
        np.testing.assert_array_equal(windows[1 + k, :part.size], part)
    # 19+ bytes per sample as JSON floats; 2 × 4/3 per windowed sample here
    floats = json.dumps(serving_inputs(*(a.tolist() for a in pad_batch(clips))))
    assert len(json.dumps(payload)) < len(floats) / 3


def test_output_handler_errors(in_process, loaded):
    ctx = context("application/json")
    failed = tf_serving_rest.predict(loaded, json.dumps({"signature_name": WINDOWS_SIGNATURE, "inputs": {
        INPUT_PCM16: [{"b64": base64.b64encode(b"\x00" * 10).decode()}], INPUT_CLIP_INDEX: [0],
        INPUT_VALID_SAMPLES: [5]}}))
    assert failed.status_code == 400 and b"176400 bytes" in failed.content
    with pytest.raises(in_process.RequestError, match="502 Bad Gateway: TensorFlow Serving answered 400"):
        in_process.output_handler(failed, ctx)
    wrong = tf_serving_rest.Response(200, json.dumps({"outputs": {"probabilities": [[0.5] * 10]}}).encode())
    with pytest.raises(in_process.RequestError, match="502 .*not serving_windows's outputs"):
        in_process.output_handler(wrong, ctx)
