"""A hostile client against the real server on loopback: every class of bad input gets a 4xx JSON
error naming what is wrong (never a 500), cheaply, and the server still answers /ping; a 500 only
for a real server fault (a model that fails); long recordings answered with their timeline."""
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from serving.inference import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_SECONDS, ServingConfig
from serving.server import _uvicorn_server, bind_socket, create_app, http_url, start_server
from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE, UNDETERMINED, WINDOW_HOP_SAMPLES

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tiny_export):
    handle = start_server(tiny_export, port=0)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def wav(samples, rate, subtype="PCM_16", fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav_declaring(rate, frames=100, channels=1):
    """A well-formed 16-bit PCM WAV whose header states `rate` Hz."""
    data = np.zeros(frames * channels, "<i2").tobytes()
    fmt = (b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + channels.to_bytes(2, "little")
           + rate.to_bytes(4, "little") + (rate * 2 * channels).to_bytes(4, "little")
           + (2 * channels).to_bytes(2, "little") + (16).to_bytes(2, "little"))
    chunk = b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + (4 + len(fmt) + len(chunk)).to_bytes(4, "little") + b"WAVE" + fmt + chunk


BAD = [  # (class, body, content type, query, expected text in the error); all 400 unless noted
    # non-finite numbers, in every field
    ("nan sample_rate", b'{"instances": [[0.1]], "sample_rate": NaN}', "json", None, "sample_rate"),
    ("inf sample_rate", b'{"instances": [[0.1]], "sample_rate": Infinity}', "json", None, "sample_rate"),
    ("-inf sample_rate", b'{"instances": [[0.1]], "sample_rate": -Infinity}', "json", None, "sample_rate"),
    ("overflowing sample_rate", b'{"instances": [[0.1]], "sample_rate": 1e999}', "json", None, "sample_rate"),
    ("nan sample", b'{"instances": [[0.1, NaN]]}', "json", None, "instance 0: samples contain NaN"),
    ("inf sample", b'{"instances": [[0.1], [1e999]]}', "json", None, "instance 1: samples contain NaN, Inf"),
    ("beyond float32", b'{"instances": [[1e39]]}', "json", None, "instance 0: samples contain NaN, Inf"),
    ("huge integer", b'{"instances": [[' + b"9" * 400 + b']]}', "json", None, "float32"),
    ("nan threshold", None, "wav", {"threshold": "nan"}, "threshold"),
    ("inf threshold", None, "wav", {"threshold": "Infinity"}, "threshold"),
    ("nan threshold attribute", None, "wav", {"X-Amzn-SageMaker-Custom-Attributes": "threshold=NaN"}, "threshold"),
    # out-of-range values
    ("sample_rate 1", b'{"instances": [[0.1, 0.2]], "sample_rate": 1}', "json", None, "sample_rate"),
    ("sample_rate 999", b'{"instances": [[0.1]], "sample_rate": 999}', "json", None, "1000..384000"),
    ("sample_rate 384001", b'{"instances": [[0.1]], "sample_rate": 384001}', "json", None, "sample_rate"),
    ("threshold 1.5", None, "wav", {"threshold": "1.5"}, "threshold"),
    ("wav at 1 Hz", wav_declaring(1), "audio/wav", None, "sample rate 1 Hz is outside 1000..384000"),
    ("wav at 500 kHz", wav_declaring(500_000), "audio/wav", None, "outside 1000..384000"),
    # wrong types
    ("string sample_rate", b'{"instances": [[0.1]], "sample_rate": "16000"}', "json", None, "sample_rate"),
    ("bool sample_rate", b'{"instances": [[0.1]], "sample_rate": true}', "json", None, "sample_rate"),
    ("list sample_rate", b'{"instances": [[0.1]], "sample_rate": [16000]}', "json", None, "sample_rate"),
    ("null sample_rate", b'{"instances": [[0.1]], "sample_rate": null}', "json", None, "sample_rate"),
    ("instances object", b'{"instances": {"a": 1}}', "json", None, '"instances" must be a non-empty list'),
    ("instance number", b'{"instances": [3]}', "json", None, "instance 0: expected a list"),
    ("string samples", b'{"instances": [["0.5"]]}', "json", None, "instance 0: samples must all be numbers, found a string"),
    ("bool samples", b'{"instances": [[true, false]]}', "json", None, "found a boolean"),
    ("null sample", b'{"instances": [[0.1, null]]}', "json", None, "found null"),
    ("object sample", b'{"instances": [[{}]]}', "json", None, "found an object"),
    ("b64 not a string", b'{"instances": [{"b64": 5}]}', "json", None, '{"b64"'),
    ("top-level list", b'[[0.1]]', "json", None, '"instances"'),
    # nesting, any depth
    ("nested 9", b'{"instances": ' + b"[" * 9 + b"0.1" + b"]" * 9 + b"}", "json", None, f"deeper than {MAX_JSON_DEPTH}"),
    ("nested 50000", b'{"instances": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", "json", None, "deeper than"),
    ("nested unclosed", b"[" * 200_000, "json", None, "deeper than"),
    ("nested objects", b'{"a":' * 40_000 + b"1" + b"}" * 40_000, "json", None, "deeper than"),
    ("brackets in strings do not hide depth", b'{"x": "]]]]]]]]]]]]", "instances": [[[[[[[[[[0.1]]]]]]]]]]}',
     "json", None, "deeper than"),
    ("many containers", b'{"instances": [' + b",".join([b"[]"] * 100_000) + b"]}", "json", None,
     "more than"),
    ("many strings", b'{"instances": [[0.1]], "x": [' + b",".join([b'"ab"'] * 100_000) + b"]}", "json", None,
     "more than"),
    # not UTF-8, not JSON
    ("latin-1", b'{"instances": [[0.1]], "n\xe9": 1}', "json", None, "not UTF-8"),
    ("utf-16", '{"instances": [[0.1]]}'.encode("utf-16"), "json", None, "not UTF-8"),
    ("unterminated string", b'{"instances": [[0.1]], "x": "' + b'\\"' * 50_000, "json", None, "not valid JSON"),
    ("trailing garbage", b'{"instances": [[0.1]]} x', "json", None, "not valid JSON"),
    # ragged rows
    ("ragged", b'{"instances": [[0.1, [0.2]]]}', "json", None, "found an array"),
    ("2-D row", b'{"instances": [[[0.1, 0.2], [0.3]]]}', "json", None, "found an array"),
    # declared sizes beyond the budget: refused before decoding or resampling
    ("1 Hz row, 2 KB", json.dumps({"instances": [[0.0] * 500], "sample_rate": 1}).encode(), "json", None,
     "sample_rate"),
    ("rows over the seconds", json.dumps({"instances": [[0.0] * 601_000], "sample_rate": 1000}).encode(),
     "json", None, f"the limit is {MAX_SECONDS:g} s per request"),
]


def _body_and_headers(body, kind, query):
    headers, params = {}, None
    if body is None:
        body = wav(np.zeros(2205, np.float32), SAMPLE_RATE)
    if query and any(k.startswith("X-") for k in query):
        headers.update(query)
    else:
        params = query
    content_type = {"json": "application/json", "wav": "audio/wav"}.get(kind, kind)
    return body, {"Content-Type": content_type, **headers}, params


@pytest.mark.parametrize("name,body,kind,query,message", BAD, ids=[b[0] for b in BAD])
def test_hostile_input_gets_4xx_json_naming_the_field(http, name, body, kind, query, message):
    body, headers, params = _body_and_headers(body, kind, query)
    started = time.perf_counter()
    response = http.post("/invocations", content=body, headers=headers, params=params)
    elapsed = time.perf_counter() - started
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"], response.json()["error"]
    assert elapsed < 5.0, f"{name}: {elapsed:.1f} s to refuse"
    assert http.get("/ping").status_code == 200


def flac_declaring(seconds_written, rate, channels, declared_frames):
    """A FLAC of silence whose STREAMINFO states `declared_frames` (0: unknown) total frames."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds_written * rate), channels), np.float32), rate, format="FLAC")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | declared_frames
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def test_declared_lengths_are_refused_before_decoding(http):
    """Containers that declare more than the budget are refused from their headers: an 8 kHz WAV of
    11 minutes, and a small FLAC that says it holds an hour at 384 kHz × 8 channels (≈ 44 GB of
    float32 if decoded): neither is decoded (each answer is quick)."""
    long_wav = wav(np.zeros(int((MAX_SECONDS + 60) * 8000), np.float32), 8000, "PCM_U8")
    hour = flac_declaring(1.0, 384_000, 8, 3600 * 384_000)
    assert len(long_wav) < MAX_BODY_BYTES and len(hour) < MAX_BODY_BYTES
    for body, content_type, message in [(long_wav, "audio/wav", "660.0 s of audio"),
                                        (hour, "audio/flac", "3600.0 s of audio")]:
        started = time.perf_counter()
        response = http.post("/invocations", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 400 and message in response.json()["error"], response.text
        assert time.perf_counter() - started < 2.0
        assert http.get("/ping").status_code == 200


def test_undeclared_lengths_stop_decoding_past_the_limit(http):
    """A FLAC whose header does not state its length (total samples 0) holding 11 minutes: decoding
    stops once the limit is passed, with the same 400."""
    undeclared = flac_declaring(MAX_SECONDS + 60, 8000, 1, 0)
    assert len(undeclared) < MAX_BODY_BYTES
    response = http.post("/invocations", content=undeclared, headers={"Content-Type": "audio/flac"})
    assert response.status_code == 400, response.text
    assert f"audio past it, over the limit (the limit is {MAX_SECONDS:g} s per request)" in response.json()["error"]
    assert http.get("/ping").status_code == 200


def test_a_model_failure_is_a_500_and_the_server_goes_on():
    """A server fault (here: a model whose call raises, standing in for a broken SavedModel) is the only 500."""
    calls = []

    def broken_model(batch, lengths):
        calls.append(batch.shape)
        raise RuntimeError("the model is broken")

    app = create_app(broken_model, ServingConfig())
    sock = bind_socket("127.0.0.1", 0)
    server = _uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        with httpx.Client(base_url=http_url(*sock.getsockname()[:2]), timeout=30) as client:
            response = client.post("/invocations", json={"instances": [[0.1] * 100]})
            assert response.status_code == 500
            assert response.json()["error"] == "internal error: RuntimeError: the model is broken"
            bad = client.post("/invocations", content=b'{"instances": [[NaN]]}',
                              headers={"Content-Type": "application/json"})
            assert bad.status_code == 400  # bad input never reaches the model
            assert client.get("/ping").status_code == 200
            assert len(calls) == 1
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_five_minute_recording_is_answered_with_its_timeline(http, tiny_export):
    """5 minutes at 8 kHz, 16-bit (4.8 MB): answered, with one timeline entry per 4 s window every
    2 s and event segments that agree with it (threshold 0: every window has a label)."""
    rate, seconds = 8000, 300
    t = np.arange(rate * seconds) / rate
    rng = np.random.default_rng(0)
    x = np.where((t // 60) % 2 == 0, 0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * rng.standard_normal(t.size))
    body = wav(x.astype(np.float32), rate)
    assert len(body) < MAX_BODY_BYTES
    response = http.post("/invocations", content=body, headers={"Content-Type": "audio/wav"},
                         params={"windows": "true", "threshold": "0"})
    assert response.status_code == 200, response.text
    (answer,) = response.json()["predictions"]
    samples = seconds * SAMPLE_RATE
    expected_windows = 1 + -(-(samples - CLIP_SAMPLES) // WINDOW_HOP_SAMPLES)
    windows = answer["windows"]
    assert len(windows) == expected_windows == 149
    assert [w["start_s"] for w in windows] == [2.0 * k for k in range(expected_windows)]
    assert all(w["label"] != UNDETERMINED for w in windows)
    segments = answer["segments"]
    assert segments[0]["start_s"] == 0.0 and segments[-1]["end_s"] == 300.0
    covered = []  # each segment is a maximal run of one label in the timeline
    for segment in segments:
        run = [w for w in windows if segment["start_s"] <= w["start_s"] < segment["end_s"] - 2.0 + 1e-9]
        assert {w["label"] for w in run} == {segment["label"]}
        assert segment["confidence"] == pytest.approx(np.mean([w["probabilities"][segment["label"]] for w in run]),
                                                      abs=1e-5)
        covered += run
    assert len(covered) == len(windows)
    assert all(a["label"] != b["label"] for a, b in zip(segments, segments[1:]))
