"""serving.server over real HTTP on loopback: formats, options, every bad input → its 4xx (and the
server keeps serving), dynamic batching that does not change answers, the same predictions as
the SavedModel alone and as the container's handlers (to the bounds docs/serving.md states), the
exported threshold and its overrides, model.tar.gz, graceful stop, and `us8k serve`: its refusals
(flags, missing export, port in use) and the command in its own process (token, access log, SIGTERM)."""
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import container_context
import endpoint_servers
import export_copies
import httpx
import numpy as np
import pytest
from cli_failure import failure
from endpoint_servers import endpoint, http, post  # noqa: F401  (http: the module's client fixture)
from wav_files import encode

import us8k
from serving import inference
from serving.server import EndpointOptions, start_server
from tfdata.audio import decode_audio, prepare_waveform
from tfdata.contract import SAMPLE_RATE, UNDETERMINED, URBANSOUND8K_CLASSES
from tfdata.layout import (
    METADATA_FILE,
    MODEL_SUBDIR,
    OUTPUT_PROBABILITIES,
    OUTPUT_WINDOW_COUNT,
    SERVING_SIGNATURE,
    VERSION,
    serving_inputs,
)

pytestmark = pytest.mark.timeout(300)

TEST_BATCH_TIMEOUT_MS = 20.0  # long enough that requests sent together share a model call
# How far answers may move, on the test model (tests/conftest.py's tiny export), as docs/serving.md states
# them: probabilities are rounded to 6 decimals in answers (tfdata.answers.DECIMALS), so 2e-6 is two
# steps of that rounding. Measured over 120 clips of 0.3–13 s (0.3 sine + 0.05 noise): the endpoint's
# windows mean against serving_default on the whole clip ≤ 5.2e-7; a request batched with 29
# concurrent others against the same request alone ≤ 1e-6; the container's int16 PCM against the
# float32 waveform ≤ 4.4e-6 (6.9e-6 over the 24 clips peaking at 0.1–1 of the test below; quieter
# audio moves more: up to 1.9e-4 measured at a 0.003 peak).
SAME_ANSWER = 2e-6  # windows mean vs serving_default, and batched vs alone (docs/serving.md: "tested to 2e-6")
INT16_ROUNDING = 1e-5  # the container's int16 PCM vs the float32 waveform, clips peaking at 0.1–1

server = endpoint_servers.server_fixture(max_batch=32, batch_timeout_ms=TEST_BATCH_TIMEOUT_MS)


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


def probs(prediction):
    return np.array([prediction["probabilities"][c] for c in URBANSOUND8K_CLASSES])


def check_prediction(prediction, expected, threshold=0.6, atol=SAME_ANSWER):
    assert set(prediction) >= {"label", "confidence", "probabilities", "undetermined"}
    np.testing.assert_allclose(probs(prediction), expected, atol=atol)
    assert prediction["confidence"] == pytest.approx(float(expected.max()), abs=atol)
    assert prediction["undetermined"] == (prediction["confidence"] < threshold)
    top = URBANSOUND8K_CLASSES[int(expected.argmax())]  # tiny_export's classes
    assert prediction["label"] == (UNDETERMINED if prediction["undetermined"] else top)


@pytest.fixture
def container(monkeypatch):
    """serving.inference configured as in the container: `configure(metadata, threshold)` sets the
    environment and reloads the handler's configuration (the environment is restored after)."""
    def configure(metadata, threshold=None):
        monkeypatch.setenv(inference.METADATA_ENV, str(metadata))
        if threshold is None:
            monkeypatch.delenv(inference.THRESHOLD_ENV, raising=False)
        else:
            monkeypatch.setenv(inference.THRESHOLD_ENV, str(threshold))
        return inference.reload_container_config()

    yield configure
    monkeypatch.undo()
    inference.forget_container_config()  # outside the container again: no model's metadata to read


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
    assert lenient["undetermined"] is False and lenient["label"] == URBANSOUND8K_CLASSES[int(probs(base).argmax())]


def test_endpoint_threshold_from_metadata_and_override(tiny_export, server):
    metadata = json.loads((tiny_export / METADATA_FILE).read_text())
    assert server.config.threshold == metadata["threshold"]
    with endpoint(tiny_export, threshold=0.99) as (strict, client):
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
        np.testing.assert_allclose(probs(prediction), probs(single), atol=SAME_ANSWER)
        assert prediction["label"] == single["label"]
    assert calls < len(requests), f"{calls} model calls for {len(requests)} concurrent requests: no batching"
    assert server.batcher.stats.largest > 1


def test_a_lone_request_does_not_wait_for_the_batch_timeout(tiny_export):
    """The batcher waits for company only while other requests are being read: with a 60 s
    batch timeout, lone requests still answer well inside the client's 30 s timeout."""
    wav = encode(clip(1.0), 22050)
    with start_server(tiny_export, EndpointOptions(batch_timeout_ms=60_000), port=0) as lone, \
            httpx.Client(base_url=lone.url, timeout=30) as client:
        for _ in range(3):
            assert post(client, wav, "audio/wav").status_code == 200
        assert lone.batcher.stats.batches == 3


def test_endpoint_savedmodel_and_container_handlers_agree(http, signature, tiny_export, container):
    import tensorflow as tf

    rows = [clip(0.8, freq=500, seed=7), clip(4.0, freq=3000, seed=8), clip(5.5, freq=120, seed=9)]
    request = json.dumps({"instances": [r.tolist() for r in rows]}).encode()
    endpoint_answer = http.post("/invocations", content=request, headers={"Content-Type": "application/json"}).json()
    # the container: input_handler → TF Serving's REST predict (the signature) → output_handler
    container(tiny_export / METADATA_FILE)
    loaded = tf.saved_model.load(str(tiny_export / MODEL_SUBDIR / VERSION))
    from_handlers = container_context.round_trip(inference, loaded, request, "application/json")
    for row, from_endpoint, from_container in zip(rows, endpoint_answer["predictions"], from_handlers["predictions"]):
        direct, _ = model_alone(signature, row)
        check_prediction(from_endpoint, direct)
        check_prediction(from_container, direct, atol=INT16_ROUNDING)  # the container sends int16 PCM
        assert from_endpoint["label"] == from_container["label"]


def test_serves_a_model_tar_gz(tiny_package, http):
    wav = encode(clip(3.0, 32000, seed=10), 32000)
    with endpoint(tiny_package) as (packaged, client):
        assert client.get("/ping").status_code == 200
        assert post(client, wav, "audio/wav").json() == post(http, wav, "audio/wav").json()


def test_stop_lets_in_flight_requests_finish(tiny_export):
    """Graceful shutdown: a request whose body is still arriving when stop() is called is answered."""
    handle = start_server(tiny_export, port=0)
    wav = encode(clip(2.0), 22050)
    first_part_sent, stopped = threading.Event(), threading.Event()
    result = {}

    def slow_body():
        yield wav[:1000]
        first_part_sent.set()
        stopped.wait(60)  # the rest only once stop() has been called
        yield wav[1000:]

    def send():
        result["response"] = httpx.post(handle.url + "/invocations", content=slow_body(), timeout=60,
                                        headers={"Content-Type": "audio/wav", "Content-Length": str(len(wav))})

    sender = threading.Thread(target=send)
    sender.start()
    assert first_part_sent.wait(30)
    with httpx.Client(base_url=handle.url, timeout=30) as client:  # the server has the request in flight
        wait_for(lambda: endpoint_servers.metric(endpoint_servers.scrape(client), "us8k_requests_in_flight") == 1)
    stopper = threading.Thread(target=handle.stop)
    stopper.start()
    wait_for(lambda: not accepts_connections(handle.url))  # shutting down: no new connections
    stopped.set()
    stopper.join(60)
    sender.join(60)
    assert result["response"].status_code == 200
    assert len(result["response"].json()["predictions"]) == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "/ping", timeout=5)


def accepts_connections(url):
    """Whether the server still answers a new connection's /ping (refused, reset or cut off: it does not)."""
    try:
        return httpx.get(url + "/ping", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(condition, timeout=60.0):
    """Poll `condition` until it holds; fail the test if it does not within `timeout` s (a guard, not a measure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.02)


# ---------------------------------------------------------------- `us8k serve`, the command


def test_cli_serve_with_a_token_answers_logs_and_stops_on_sigterm(tiny_package, tmp_path):
    """The real command in its own process: a model.tar.gz, a token file, one line per request (the
    refused one included), and SIGTERM → exit 0 with the batcher's count."""
    token = "s3cret-" + "t" * 24
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    process = subprocess.Popen([sys.executable, "-m", "us8k", "serve", str(tiny_package), "--port", "0",
                                "--max-batch", "4", "--auth-token-file", str(token_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        url = None
        for line in process.stdout:
            match = re.search(r"serving .* at (http://127\.0\.0\.1:\d+) .*max batch 4, .*token required", line)
            if match:
                url = match.group(1)
                break
        assert url, process.stderr.read()
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/ping").status_code == 200  # open, token or not
            assert post(client, encode(clip(1.0), 22050), "audio/wav").status_code == 401
            response = post(client, encode(clip(1.0), 22050), "audio/wav", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200 and len(response.json()["predictions"]) == 1
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "us8k serve: stopped (1 clips in 1 model calls)" in out
        # one line per request (status, bytes, clips, ms), the refused one included
        assert re.search(r"POST /invocations 401 0 B 0 clips [\d.]+ ms", out), out
        assert re.search(r"POST /invocations 200 \d+ B 1 clips [\d.]+ ms", out), out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("flags,message", [
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--threshold", "1.5"], "--threshold must be in [0, 1]"),
    (["--threshold", "nan"], "--threshold must be in [0, 1]"),
    (["--max-seconds", "0"], "--max-seconds must be a positive number"),
    (["--max-seconds", "inf"], "--max-seconds must be a positive number"),
    (["--max-seconds", "nan"], "--max-seconds must be a positive number"),
])
def test_cli_serve_refuses_bad_flags_before_loading(tmp_path, flags, message):
    """Refused from the flags alone: the model path does not even exist."""
    assert failure(["serve", str(tmp_path / "not-loaded"), "--port", "0", *flags]) == f"us8k serve: error: {message}"


@pytest.mark.parametrize("flags,message", [
    (["--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
    (["--max-batch", "many"], "argument --max-batch: invalid int value: 'many'"),
    (["--threshold"], "argument --threshold: expected one argument"),
    (["--workers", "2"], "unrecognized arguments: --workers 2"),
])
def test_cli_serve_refuses_malformed_flags(tiny_export, capsys, flags, message):
    with pytest.raises(SystemExit) as refused:
        us8k.main(["serve", str(tiny_export), *flags])
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_cli_serve_refuses_a_missing_or_empty_export(tmp_path):
    assert re.search(r"^us8k serve: error: .*nowhere is neither an export directory nor a model.tar.gz$",
                     failure(["serve", str(tmp_path / "nowhere"), "--port", "0"]))
    (tmp_path / "empty").mkdir()
    assert re.search(r"^us8k serve: error: no SavedModel under .*empty",
                     failure(["serve", str(tmp_path / "empty"), "--port", "0"]))


def test_cli_serve_refuses_a_port_in_use(tiny_export):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert failure(["serve", str(tiny_export), "--port", str(port), "--quiet"]) == \
            f"us8k serve: error: cannot bind 127.0.0.1:{port}: Address already in use"


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
def low_threshold_export(tiny_export, tmp_path_factory):
    """tiny_export with an exported threshold of 0.01 (tests/export_copies.py: a copy, not a second export)."""
    export_dir = export_copies.with_threshold(tmp_path_factory, tiny_export, EXPORTED_THRESHOLD)
    assert json.loads((export_dir / METADATA_FILE).read_text())["threshold"] == EXPORTED_THRESHOLD
    return export_dir


def test_the_exported_threshold_is_served_and_overridden_in_order(low_threshold_export, container):
    """Order: ?threshold= > X-Amzn-SageMaker-Custom-Attributes > --threshold (US8K_THRESHOLD in the
    container) > the export's metadata.json > 0.6. The clip's confidence is below 0.6, so the default
    would say undetermined; the exported 0.01 says its label."""
    import tensorflow as tf

    candidates = [encode(clip(4.0, freq=f, seed=s), 22050) for f, s in [(660, 6), (150, 2), (3000, 8), (440, 0)]]
    attrs = "X-Amzn-SageMaker-Custom-Attributes"
    with endpoint(low_threshold_export) as (default, client):
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
    with endpoint(low_threshold_export, threshold=float(high)) as (strict, client):
        (endpoint_wide,) = post(client, wav, "audio/wav").json()["predictions"]
        assert endpoint_wide["undetermined"] and endpoint_wide["label"] == UNDETERMINED  # --threshold over the model's
        (header_wins,) = post(client, wav, "audio/wav", headers={attrs: "threshold=0.01"}).json()["predictions"]
        assert not header_wins["undetermined"]
        (query_wins,) = post(client, wav, "audio/wav", params={"threshold": high},
                             headers={attrs: "threshold=0.01"}).json()["predictions"]
        assert query_wins["undetermined"]
    # the container: input_handler → TF Serving on its payload → output_handler
    loaded = tf.saved_model.load(str(low_threshold_export / MODEL_SUBDIR / VERSION))

    def in_container(attributes=None):
        return container_context.round_trip(inference, loaded, wav, "audio/wav", attributes)["predictions"][0]

    assert container(low_threshold_export / METADATA_FILE).threshold == EXPORTED_THRESHOLD
    assert not in_container()["undetermined"]  # the export's 0.01
    assert in_container(f"threshold={high}")["undetermined"]
    assert container(low_threshold_export / METADATA_FILE, threshold=high).threshold == float(high)
    assert in_container()["undetermined"]  # the endpoint's, over the model's
    assert not in_container("threshold=0.01")["undetermined"]  # the request's, over the endpoint's


def test_the_containers_int16_rounding_stays_within_its_bound(signature, tiny_export, container):
    """What docs/serving.md states of the container's int16 PCM against the float32 waveform: over clips
    peaking at 0.1–1 (0.5–8 s, tones over noise), probabilities move by at most INT16_ROUNDING."""
    import tensorflow as tf

    container(tiny_export / METADATA_FILE)
    loaded = tf.saved_model.load(str(tiny_export / MODEL_SUBDIR / VERSION))
    rng = np.random.default_rng(20)
    worst = 0.0
    for peak in np.geomspace(0.1, 1.0, 24):
        t = np.arange(int(rng.uniform(0.5, 8.0) * SAMPLE_RATE)) / SAMPLE_RATE
        x = 0.8 * np.sin(2 * np.pi * rng.uniform(50, 5000) * t) + 0.2 * rng.uniform(-1, 1, t.size)
        row = (peak * x).astype(np.float32)
        body = encode(row, SAMPLE_RATE, "WAV", "FLOAT")  # the float32 samples exactly, quicker than JSON
        (answer,) = container_context.round_trip(inference, loaded, body, "audio/wav")["predictions"]
        worst = max(worst, float(np.abs(probs(answer) - model_alone(signature, row)[0]).max()))
    assert worst <= INT16_ROUNDING, worst
