"""serving.server over real HTTP on loopback: formats, options, every bad input → its 4xx (and the
server keeps serving), dynamic batching that does not change answers, the same predictions as
the SavedModel alone and as the container's handlers, model.tar.gz, and `us8k serve` + SIGTERM."""
import base64
import collections
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
import soundfile as sf
import tf_serving_rest

from serving import inference
from serving.server import start_server
from tfdata.audio import decode_audio, prepare_waveform
from tfdata.contract import CLASS_NAMES, SAMPLE_RATE, UNDETERMINED
from tfdata.layout import (METADATA_FILE, MODEL_SUBDIR, OUTPUT_PROBABILITIES, OUTPUT_WINDOW_COUNT, SERVING_SIGNATURE,
                           VERSION, serving_inputs)

pytestmark = pytest.mark.timeout(300)

TEST_BATCH_TIMEOUT_MS = 20.0  # long enough that requests sent together share a model call


@pytest.fixture(scope="module")
def server(tiny_export):
    handle = start_server(tiny_export, port=0, max_batch=32, batch_timeout_ms=TEST_BATCH_TIMEOUT_MS)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def signature(tiny_export):
    import tensorflow as tf

    return tf.saved_model.load(str(tiny_export / MODEL_SUBDIR / VERSION)).signatures[SERVING_SIGNATURE]


def model_alone(signature, waveform):
    """Probabilities of one clip, one clip per call, straight from the SavedModel."""
    import tensorflow as tf

    out = signature(**serving_inputs(tf.constant(waveform[None], tf.float32), tf.constant([waveform.size], tf.int32)))
    return out[OUTPUT_PROBABILITIES].numpy()[0], int(out[OUTPUT_WINDOW_COUNT].numpy()[0])


def clip(seconds, rate=SAMPLE_RATE, freq=440.0, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise).astype(np.float32)


def encode(samples, rate, fmt="WAV", subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def probs(prediction):
    return np.array([prediction["probabilities"][c] for c in CLASS_NAMES])


def post(http, content, content_type, params=None, headers=None):
    return http.post("/invocations", content=content, params=params,
                     headers={"Content-Type": content_type, **(headers or {})})


def check_prediction(prediction, expected, threshold=0.6, atol=2e-6):
    assert set(prediction) >= {"label", "confidence", "probabilities", "undetermined"}
    np.testing.assert_allclose(probs(prediction), expected, atol=atol)
    assert prediction["confidence"] == pytest.approx(float(expected.max()), abs=atol)
    assert prediction["undetermined"] == (prediction["confidence"] < threshold)
    assert prediction["label"] == (UNDETERMINED if prediction["undetermined"] else CLASS_NAMES[int(expected.argmax())])


def test_ping(http):
    response = http.get("/ping")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("content_type,fmt,subtype", [
    ("audio/wav", "WAV", "PCM_16"), ("audio/x-wav", "WAV", "PCM_24"), ("audio/flac", "FLAC", "PCM_16"),
    ("audio/ogg", "OGG", "VORBIS"), ("audio/mpeg", "MP3", "MPEG_LAYER_III"),
    ("application/octet-stream", "FLAC", "PCM_24")])
def test_audio_bodies(http, signature, content_type, fmt, subtype):
    data = encode(np.stack([clip(4.0, 44100), clip(4.0, 44100, seed=1)], axis=1), 44100, fmt, subtype)
    response = post(http, data, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    (prediction,) = response.json()["predictions"]
    expected, _ = model_alone(signature, decode_audio(data))
    check_prediction(prediction, expected)


def test_json_batch_of_mixed_lengths(http, signature):
    rows = [clip(0.5, freq=300), clip(4.0, freq=1000, seed=1), clip(9.0, freq=150, seed=2)]
    response = http.post("/invocations", json={"instances": [r.tolist() for r in rows]}, params={"windows": "true"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    for row, prediction in zip(rows, predictions):
        expected, windows = model_alone(signature, row)
        check_prediction(prediction, expected)
        assert [w["start_s"] for w in prediction["windows"]] == [2.0 * k for k in range(windows)]
    assert len(predictions[2]["windows"]) == 4  # 9 s: 4 s windows at 0, 2, 4, 6 s


def test_json_with_sample_rate_is_resampled(http, signature):
    rows = [clip(1.0, 16000), clip(3.0, 16000, freq=800, seed=3), clip(5.0, 16000, freq=2000, seed=4)]
    response = http.post("/invocations", json={"instances": [r.tolist() for r in rows], "sample_rate": 16000})
    assert response.status_code == 200, response.text
    for row, prediction in zip(rows, response.json()["predictions"]):
        check_prediction(prediction, model_alone(signature, prepare_waveform(row, 16000))[0])


def test_base64_instances_answer_like_audio_bodies(http):
    wav, flac = encode(clip(2.0, 48000), 48000), encode(clip(3.0, 8000, seed=5), 8000, "FLAC")
    response = http.post("/invocations", json={"instances": [{"b64": base64.b64encode(wav).decode()},
                                                             {"b64": base64.b64encode(flac).decode()}]})
    assert response.status_code == 200, response.text
    batched = response.json()["predictions"]
    assert batched[0] == post(http, wav, "audio/wav").json()["predictions"][0]
    np.testing.assert_allclose(probs(batched[1]), probs(post(http, flac, "audio/flac").json()["predictions"][0]),
                               atol=1e-5)


@pytest.mark.parametrize("how", ["query", "custom attributes"])
def test_threshold_per_request_makes_undetermined(http, how):
    wav = encode(clip(4.0, 22050, freq=660, seed=6), 22050)
    (base,) = post(http, wav, "audio/wav").json()["predictions"]
    assert base["confidence"] < 1.0
    above, below = min(1.0, base["confidence"] + 1e-3), base["confidence"] / 2

    def ask(threshold):
        if how == "query":
            return post(http, wav, "audio/wav", params={"threshold": threshold})
        return post(http, wav, "audio/wav", headers={"X-Amzn-SageMaker-Custom-Attributes": f"threshold={threshold}"})

    (strict,) = ask(above).json()["predictions"]
    assert strict["label"] == UNDETERMINED and strict["undetermined"] is True
    assert strict["confidence"] == base["confidence"] and strict["probabilities"] == base["probabilities"]
    (lenient,) = ask(below).json()["predictions"]
    assert lenient["undetermined"] is False and lenient["label"] == CLASS_NAMES[int(probs(base).argmax())]


def test_endpoint_threshold_from_metadata_and_override(tiny_export, server):
    metadata = json.loads((tiny_export / METADATA_FILE).read_text())
    assert server.config.threshold == metadata["threshold"]
    with start_server(tiny_export, port=0, threshold=0.99) as strict, \
            httpx.Client(base_url=strict.url, timeout=60) as client:
        (prediction,) = post(client, encode(clip(4.0), 22050), "audio/wav").json()["predictions"]
        assert prediction["confidence"] < 0.99 and prediction["label"] == UNDETERMINED


BAD = [
    ("empty body", b"", "audio/wav", None, 400, "empty input"),
    ("undecodable", b"\x00\x01 not an audio file at all", "audio/wav", None, 400, "not decodable audio"),
    ("truncated wav", encode(clip(1.0), 22050)[:5000], "audio/wav", None, 400, "truncated WAV"),
    ("bad json", b'{"instances": [[0.1, 0.2]', "application/json", None, 400, "not valid JSON"),
    ("no instances", b'{"waveform": [0.1]}', "application/json", None, 400, '"instances"'),
    ("empty row", b'{"instances": [[0.1], []]}', "application/json", None, 400, "instance 1: empty waveform"),
    ("NaN", b'{"instances": [[0.1, NaN, 0.2]]}', "application/json", None, 400, "NaN"),
    ("Inf", b'{"instances": [[-Infinity]]}', "application/json", None, 400, "Inf"),
    ("2-D row", b'{"instances": [[[0.1], [0.2]]]}', "application/json", None, 400, "flat list"),
    ("strings", b'{"instances": [["x"]]}', "application/json", None, 400, "numbers"),
    ("bad base64", b'{"instances": [{"b64": "%%%"}]}', "application/json", None, 400, "invalid base64"),
    ("bad sample rate", b'{"instances": [[0.1]], "sample_rate": -5}', "application/json", None, 400, "sample_rate"),
    ("too long", encode(np.zeros(601 * 1000, np.float32), 1000, "WAV", "PCM_U8"), "audio/wav", None, 400,
     "the limit is 600 s per request"),
    ("bad threshold", encode(clip(1.0), 22050), "audio/wav", {"threshold": "2"}, 400, "threshold"),
    ("too big", b"\0" * (6 * 1024 * 1024 + 1), "audio/wav", None, 413, "6291456 bytes"),
    ("unknown type", b"a,b,c", "text/csv", None, 415, "unsupported content type 'text/csv'"),
]


@pytest.mark.parametrize("name,data,content_type,params,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_4xx_and_the_server_keeps_serving(http, name, data, content_type, params, status, message):
    response = post(http, data, content_type, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    assert http.get("/ping").status_code == 200
    assert post(http, encode(clip(0.5), 22050), "audio/wav").status_code == 200


def test_wrong_method_and_path_are_json_errors(http):
    assert http.get("/invocations").status_code == 405
    missing = http.get("/nowhere")
    assert missing.status_code == 404 and "error" in missing.json()


def test_concurrent_requests_are_batched_without_changing_answers(server, http):
    requests = []
    for i in range(30):
        seconds = [0.3, 1.0, 2.5, 4.0, 6.0][i % 5]
        if i % 3 == 0:
            requests.append((encode(clip(seconds, 44100, 200 + 37 * i, i), 44100), "audio/wav"))
        else:
            requests.append((json.dumps({"instances": [clip(seconds, freq=200 + 37 * i, seed=i).tolist()]}).encode(),
                             "application/json"))
    alone = []
    for data, content_type in requests:  # one at a time: every model call holds one request
        response = post(http, data, content_type)
        assert response.status_code == 200
        alone.append(response.json()["predictions"][0])
    before = server.batcher.stats.batches
    results = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def send(i):
        with httpx.Client(base_url=server.url, timeout=120) as client:
            barrier.wait()
            results[i] = post(client, *requests[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    calls = server.batcher.stats.batches - before
    assert all(r is not None and r.status_code == 200 for r in results)
    for result, single in zip(results, alone):
        (prediction,) = result.json()["predictions"]
        np.testing.assert_allclose(probs(prediction), probs(single), atol=1e-5)
        assert prediction["label"] == single["label"]
    assert calls < len(requests), f"{calls} model calls for {len(requests)} concurrent requests: no batching"
    assert server.batcher.stats.largest > 1


def test_a_lone_request_does_not_wait_for_the_batch_timeout(tiny_export):
    """The batcher waits for company only while other requests are being read: with a 60 s
    batch timeout, lone requests still answer well inside the client's 30 s timeout."""
    wav = encode(clip(1.0), 22050)
    with start_server(tiny_export, port=0, batch_timeout_ms=60_000) as lone, \
            httpx.Client(base_url=lone.url, timeout=30) as client:
        for _ in range(3):
            assert post(client, wav, "audio/wav").status_code == 200
        assert lone.batcher.stats.batches == 3


def test_endpoint_savedmodel_and_container_handlers_agree(http, signature, tiny_export, monkeypatch):
    import tensorflow as tf

    rows = [clip(0.8, freq=500, seed=7), clip(4.0, freq=3000, seed=8), clip(5.5, freq=120, seed=9)]
    request = json.dumps({"instances": [r.tolist() for r in rows]}).encode()
    endpoint = http.post("/invocations", content=request, headers={"Content-Type": "application/json"}).json()
    # the container: input_handler → TF Serving's REST predict (the signature) → output_handler
    monkeypatch.setenv(inference.METADATA_ENV, str(tiny_export / METADATA_FILE))
    monkeypatch.setattr(inference, "_container_config", None)
    Context = collections.namedtuple("Context", "custom_attributes request_content_type accept_header")
    ctx = Context(None, "application/json", "application/json")
    loaded = tf.saved_model.load(str(tiny_export / MODEL_SUBDIR / VERSION))
    tfs_answer = tf_serving_rest.predict(loaded, inference.input_handler(io.BytesIO(request), ctx))
    container = json.loads(inference.output_handler(tfs_answer, ctx)[0])
    for row, from_endpoint, from_container in zip(rows, endpoint["predictions"], container["predictions"]):
        direct, _ = model_alone(signature, row)
        check_prediction(from_endpoint, direct)
        check_prediction(from_container, direct, atol=2e-5)  # the container sends int16 PCM
        assert from_endpoint["label"] == from_container["label"]


def test_serves_a_model_tar_gz(tiny_package, http):
    wav = encode(clip(3.0, 32000, seed=10), 32000)
    with start_server(tiny_package, port=0) as packaged, httpx.Client(base_url=packaged.url, timeout=60) as client:
        assert client.get("/ping").status_code == 200
        assert post(client, wav, "audio/wav").json() == post(http, wav, "audio/wav").json()


def test_stop_lets_in_flight_requests_finish(tiny_export):
    """Graceful shutdown: a request whose body is still arriving when stop() is called is answered."""
    import time

    handle = start_server(tiny_export, port=0)
    wav = encode(clip(2.0), 22050)
    first_part_sent = threading.Event()
    result = {}

    def slow_body():
        yield wav[:1000]
        first_part_sent.set()
        time.sleep(1.0)
        yield wav[1000:]

    def send():
        result["response"] = httpx.post(handle.url + "/invocations", content=slow_body(), timeout=60,
                                        headers={"Content-Type": "audio/wav", "Content-Length": str(len(wav))})

    sender = threading.Thread(target=send)
    sender.start()
    assert first_part_sent.wait(30)
    time.sleep(0.2)  # the server has the first part: the request is in flight
    handle.stop()
    sender.join(60)
    assert result["response"].status_code == 200
    assert len(result["response"].json()["predictions"]) == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "/ping", timeout=5)


def test_cli_serve_starts_answers_and_stops_on_sigterm(tiny_package):
    process = subprocess.Popen([sys.executable, "-m", "us8k", "serve", str(tiny_package), "--port", "0",
                                "--max-batch", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        url = None
        for line in process.stdout:
            match = re.search(r"serving .* at (http://127\.0\.0\.1:\d+) ", line)
            if match:
                url = match.group(1)
                break
        assert url, process.stderr.read()
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/ping").status_code == 200
            response = post(client, encode(clip(1.0), 22050), "audio/wav")
            assert response.status_code == 200 and len(response.json()["predictions"]) == 1
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "us8k serve: stopped (1 clips in 1 model calls)" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_listening_socket_is_tcp_so_replies_are_not_delayed():
    """asyncio sets TCP_NODELAY on accepted connections only for proto=IPPROTO_TCP sockets; with
    proto 0 every keep-alive reply waited for a delayed ACK (≈40 ms here)."""
    import socket

    from serving.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
    finally:
        sock.close()


# ---------------------------------------------------------------- the exported threshold is served

EXPORTED_THRESHOLD = 0.01  # not the default 0.6: a server that ignored the model's metadata would answer otherwise


@pytest.fixture(scope="module")
def low_threshold_export(tmp_path_factory):
    import keras

    from models.architectures import build_model
    from models.export import export_model
    from tfdata.contract import FRONTEND

    export_dir = tmp_path_factory.mktemp("threshold") / "export"
    keras.utils.set_random_seed(0)
    model = build_model("tiny", np.zeros(FRONTEND.n_mels, np.float32), np.ones(FRONTEND.n_mels, np.float32))
    export_model(model, export_dir, threshold=EXPORTED_THRESHOLD)
    assert json.loads((export_dir / METADATA_FILE).read_text())["threshold"] == EXPORTED_THRESHOLD
    return export_dir


def test_the_exported_threshold_is_served_and_overridden_in_order(low_threshold_export, monkeypatch):
    """Order: ?threshold= > X-Amzn-SageMaker-Custom-Attributes > --threshold (US8K_THRESHOLD in the
    container) > the export's metadata.json > 0.6. The clip's confidence is below 0.6, so the default
    would say undetermined; the exported 0.01 says its label."""
    import tensorflow as tf

    candidates = [encode(clip(4.0, freq=f, seed=s), 22050) for f, s in [(660, 6), (150, 2), (3000, 8), (440, 0)]]
    attrs = "X-Amzn-SageMaker-Custom-Attributes"
    with start_server(low_threshold_export, port=0) as default, \
            httpx.Client(base_url=default.url, timeout=60) as client:
        assert default.config.threshold == EXPORTED_THRESHOLD
        answers = [post(client, wav, "audio/wav").json()["predictions"][0] for wav in candidates]
        wav, base = next((w, a) for w, a in zip(candidates, answers) if a["confidence"] < 0.6)
        assert not base["undetermined"] and base["label"] != UNDETERMINED  # the model's 0.01, not 0.6
        high = f"{(base['confidence'] + 1) / 2:.4f}"  # above the confidence
        (by_header,) = post(client, wav, "audio/wav", headers={attrs: f"threshold={high}"}).json()["predictions"]
        assert by_header["undetermined"]
        (query_wins,) = post(client, wav, "audio/wav", params={"threshold": "0.01"},
                             headers={attrs: f"threshold={high}"}).json()["predictions"]
        assert not query_wins["undetermined"]
    with start_server(low_threshold_export, port=0, threshold=float(high)) as strict, \
            httpx.Client(base_url=strict.url, timeout=60) as client:
        (endpoint,) = post(client, wav, "audio/wav").json()["predictions"]
        assert endpoint["undetermined"] and endpoint["label"] == UNDETERMINED  # --threshold over the model's
        (header_wins,) = post(client, wav, "audio/wav", headers={attrs: "threshold=0.01"}).json()["predictions"]
        assert not header_wins["undetermined"]
        (query_wins,) = post(client, wav, "audio/wav", params={"threshold": high},
                             headers={attrs: "threshold=0.01"}).json()["predictions"]
        assert query_wins["undetermined"]
    # the container: input_handler → TF Serving on its payload → output_handler
    loaded = tf.saved_model.load(str(low_threshold_export / MODEL_SUBDIR / VERSION))
    monkeypatch.setenv(inference.METADATA_ENV, str(low_threshold_export / METADATA_FILE))
    monkeypatch.delenv(inference.THRESHOLD_ENV, raising=False)
    monkeypatch.setattr(inference, "_container_config", None)
    Context = collections.namedtuple("Context", "custom_attributes request_content_type accept_header")

    def container(attributes=None):
        ctx = Context(attributes, "audio/wav", "application/json")
        response = tf_serving_rest.predict(loaded, inference.input_handler(io.BytesIO(wav), ctx))
        return json.loads(inference.output_handler(response, ctx)[0])["predictions"][0]

    assert not container()["undetermined"]  # the export's 0.01
    assert container(f"threshold={high}")["undetermined"]
    monkeypatch.setenv(inference.THRESHOLD_ENV, high)
    monkeypatch.setattr(inference, "_container_config", None)
    assert container()["undetermined"]  # the endpoint's, over the model's
    assert not container("threshold=0.01")["undetermined"]  # the request's, over the endpoint's
