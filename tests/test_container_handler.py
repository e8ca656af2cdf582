"""The SageMaker handler as the TF Serving container runs it: from the unpacked model.tar.gz alone.

The package is built for this machine's Python (`us8k package --python-version 3.11`: the same
vendoring as for the container's 3.12) and unpacked; its code/inference.py is loaded the way the
container's python_service.py loads it (spec_from_file_location, not registered in sys.modules) in
an isolated interpreter (`python -I -S`: no site-packages, no PYTHONPATH) whose path is code/,
code/lib/ and the standard library only, so numpy, soundfile, soxr come from code/lib or not at all.
Requests go through input_handler there; its TF Serving body runs on the real SavedModel in this
process (tf_serving_rest: JSON, b64 → bytes, the signature, as TF Serving's REST layer does); the
answer goes back through output_handler there, as a `.status_code`/`.content` object.

Also here: the windows signature against `serving_default` on the same int16 audio (1e-5), two
requests of different lengths merged into one batch along dim 0 as TF Serving's batching merges
them, the payload's format, and the 413 the handler gives before TF Serving would refuse a request
larger than its max batch size."""
import base64
import collections
import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf

import tf_serving_rest
from serving import inference
from serving.package import write_package
from tfdata.audio import LIBSNDFILE_FORMATS, decode_audio
from tfdata.batching import pad_batch
from tfdata.contract import CLASS_NAMES, CLIP_SAMPLES, SAMPLE_RATE, WINDOW_HOP_SAMPLES
from tfdata.layout import (INPUT_CLIP_INDEX, INPUT_PCM16, INPUT_VALID_SAMPLES, METADATA_FILE, OUTPUT_PROBABILITIES,
                           OUTPUT_WINDOW_COUNT, SERVING_SIGNATURE, TFS_ENABLE_BATCHING_ENV, TFS_MAX_BATCH_SIZE_ENV,
                           WINDOWS_SIGNATURE, find_saved_model, serving_inputs)
from tfdata.pcm import PCM_BYTES_PER_SAMPLE, quantize, to_pcm16
from tfdata.windowing import frame, window_count

pytestmark = pytest.mark.timeout(300)

SAME_ANSWER = 1e-5
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# The container's request context (tfs_utils.Context in the SageMaker TF Serving container).
Context = collections.namedtuple(
    "Context", "model_name model_version method rest_uri grpc_port channel custom_attributes "
               "request_content_type accept_header content_length")

# The isolated interpreter: argv[1] is the unpacked package. One JSON request per stdin line.
DRIVER = r'''
import base64, collections, importlib.util, json, os, sys, traceback

root = sys.argv[1]
stdlib = list(sys.path)
sys.path[:0] = [os.path.join(root, "code"), os.path.join(root, "code", "lib")]
spec = importlib.util.spec_from_file_location("inference", os.path.join(root, "code", "inference.py"))
inference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inference)
Context = collections.namedtuple("Context", "model_name model_version method rest_uri grpc_port channel "
                                 "custom_attributes request_content_type accept_header content_length")

class Response:  # what the container's requests.post gives output_handler
    def __init__(self, status_code, content):
        self.status_code, self.content = status_code, content

def context(request):
    return Context("model", None, "predict", "http://localhost:8501/v1/models/model:predict", 9000, None,
                   request.get("custom_attributes"), request.get("content_type"), "application/json", None)

def probe():
    import numpy, soundfile, soxr, _cffi_backend
    return {"numpy": numpy.__file__, "soundfile": soundfile.__file__, "soxr": soxr.__file__,
            "cffi": _cffi_backend.__file__, "libsndfile": soundfile.__libsndfile_version__,
            "stdlib": stdlib, "path": sys.path, "no_site": "site" not in sys.modules,
            "tensorflow": "tensorflow" in sys.modules, "av": importlib.util.find_spec("av") is not None,
            "serving": importlib.util.find_spec("serving") is not None,
            "inference_registered": "inference" in sys.modules}

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
            body, content_type = inference.output_handler(
                Response(request["status_code"], base64.b64decode(request["content"])), context(request))
            answer = {"body": body, "content_type": content_type}
    except Exception as exc:  # the container turns any handler exception into a 500 {"error": str(exc)}
        answer = {"error": str(exc), "status": getattr(exc, "status", None), "type": type(exc).__name__}
    print(json.dumps(answer), flush=True)
'''


class IsolatedHandler:
    """code/inference.py of an unpacked package, in its own isolated interpreter."""

    def __init__(self, root, tmp_path):
        (tmp_path / "driver.py").write_text(DRIVER)
        self.process = subprocess.Popen([sys.executable, "-I", "-S", str(tmp_path / "driver.py"), str(root)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, cwd=tmp_path)

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

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def unpacked(tiny_export, tmp_path_factory):
    """`us8k package` of the tiny export for this Python, unpacked as the container unpacks it."""
    base = tmp_path_factory.mktemp("container")
    archive = write_package(tiny_export, base / "model.tar.gz", python_version=THIS_PYTHON,
                            wheel_dir=base / "wheels")
    root = base / "opt_ml_model"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def handler(unpacked, tmp_path_factory):
    isolated = IsolatedHandler(unpacked, tmp_path_factory.mktemp("driver"))
    yield isolated
    isolated.close()


@pytest.fixture(scope="module")
def loaded(tiny_export):
    import tensorflow as tf

    return tf.saved_model.load(str(find_saved_model(tiny_export)))


@pytest.fixture
def in_process(tiny_export, monkeypatch):
    """serving.inference in this process, configured as in the container (metadata beside code/)."""
    monkeypatch.setenv(inference.METADATA_ENV, str(tiny_export / METADATA_FILE))
    monkeypatch.setattr(inference, "_container_config", None)
    for name in (TFS_ENABLE_BATCHING_ENV, TFS_MAX_BATCH_SIZE_ENV):
        monkeypatch.delenv(name, raising=False)
    return inference


def context(content_type, attributes=None):
    return Context("model", None, "predict", "http://localhost:8501/v1/models/model:predict", 9000, None,
                   attributes, content_type, "application/json", None)


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


def wav(samples, rate, subtype="PCM_16", fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def reference(loaded, waveforms):
    """serving_default on the int16-quantised audio (the PCM the handler sends, / PCM_SCALE)."""
    import tensorflow as tf

    batch, lengths = pad_batch([quantize(w) for w in waveforms])
    out = loaded.signatures[SERVING_SIGNATURE](**serving_inputs(tf.constant(batch), tf.constant(lengths)))
    return {k: v.numpy() for k, v in out.items()}


def probabilities(prediction):
    return np.array([prediction["probabilities"][c] for c in CLASS_NAMES])


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


def test_packaged_handler_answers_a_wav_and_a_json_request(handler, loaded, tiny_export):
    threshold = json.loads((tiny_export / METADATA_FILE).read_text())["threshold"]
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
        assert prediction["label"] == CLASS_NAMES[int(np.argmax(expected[OUTPUT_PROBABILITIES][row]))]


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
    # the local endpoint's environment has PyAV: the same bytes decode there (the README says so)
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
    assert answer["status"] == 413 and "cuts into 9 windows of 4 s" in answer["error"] and "at most 8" in answer["error"]


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
