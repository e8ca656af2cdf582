"""A hostile client against the real server on loopback: every class of bad input gets a 4xx JSON
error naming what is wrong (never a 500) before any decoding or model call, and the server still
answers /ping; bodies over the cap (declared or streamed) are cut off; clients that vanish mid-body
or mid-answer leave the server serving; at most PARSE_WORKERS requests decode at once; a 500 only
for a real server fault (a model that fails); long recordings answered with their timeline.

"Before decoding" is observed, not timed: `libsndfile_reads` counts the frames libsndfile hands the
decoder (every block tfdata.audio decodes goes through soundfile.SoundFile.read, wrapped here to
count and pass through), the batcher's stats count model calls, and /metrics counts refusals."""
import io
import json
import socket
import threading
import time

import endpoint_servers
import httpx
import numpy as np
import pytest
import soundfile as sf
from endpoint_servers import http, metric, scrape  # noqa: F401  (http: the module's client fixture)
from wav_files import encode as wav

from serving.address import http_url
from serving.http_helpers import DISCARD_LIMIT, PARSE_WORKERS
from serving.inference import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_SECONDS, ServingConfig
from serving.server import bind_socket, create_app, uvicorn_server
from tfdata.audio import BLOCK_SAMPLES
from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE, UNDETERMINED, URBANSOUND8K_CLASSES, WINDOW_HOP_SAMPLES

pytestmark = pytest.mark.timeout(300)

server = endpoint_servers.server_fixture()


@pytest.fixture
def libsndfile_reads(monkeypatch):
    """The frame count of every block libsndfile decodes in this process (the server's threads
    included) while the test runs: soundfile.SoundFile.read, counted and passed through."""
    frames = []
    read = sf.SoundFile.read

    def counted(self, *args, **kwargs):
        out = read(self, *args, **kwargs)
        frames.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", counted)
    return frames


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
    ("string samples", b'{"instances": [["0.5"]]}', "json", None,
     "instance 0: samples must all be numbers, found a string"),
    ("bool samples", b'{"instances": [[true, false]]}', "json", None, "found a boolean"),
    ("null sample", b'{"instances": [[0.1, null]]}', "json", None, "found null"),
    ("object sample", b'{"instances": [[{}]]}', "json", None, "found an object"),
    ("b64 not a string", b'{"instances": [{"b64": 5}]}', "json", None, '{"b64"'),
    ("top-level list", b'[[0.1]]', "json", None, '"instances"'),
    # nesting, any depth
    ("nested 9", b'{"instances": ' + b"[" * 9 + b"0.1" + b"]" * 9 + b"}", "json", None,
     f"deeper than {MAX_JSON_DEPTH}"),
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
def test_hostile_input_gets_4xx_json_naming_the_field(server, http, libsndfile_reads, name, body, kind, query,
                                                      message):
    """Refused by the checks that come before the work (the structure scan, the declared sizes, the
    options, the header): nothing decoded, no model call, counted under its reason."""
    body, headers, params = _body_and_headers(body, kind, query)
    before, calls = scrape(http), server.batcher.stats.batches
    response = http.post("/invocations", content=body, headers=headers, params=params)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"], response.json()["error"]
    assert libsndfile_reads == [], f"{name}: {sum(libsndfile_reads)} frames decoded before the refusal"
    assert server.batcher.stats.batches == calls  # the model never saw it
    after = scrape(http)
    refusals = {key[1]: after[key] - before.get(key, 0.0) for key in after
                if key[0] == "us8k_decode_failures_total" and after[key] != before.get(key, 0.0)}
    assert len(refusals) == 1 and list(refusals.values()) == [1.0], refusals  # one refusal, one reason class
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


def test_declared_lengths_are_refused_before_decoding(http, libsndfile_reads):
    """Containers that declare more than the budget are refused from their headers: an 8 kHz WAV of
    11 minutes, and a small FLAC that says it holds an hour at 384 kHz × 8 channels (≈ 44 GB of
    float32 if decoded): libsndfile decodes not one frame of either."""
    long_wav = wav(np.zeros(int((MAX_SECONDS + 60) * 8000), np.float32), 8000, "WAV", "PCM_U8")
    hour = flac_declaring(1.0, 384_000, 8, 3600 * 384_000)
    assert len(long_wav) < MAX_BODY_BYTES and len(hour) < MAX_BODY_BYTES
    for body, content_type, message in [(long_wav, "audio/wav", "660.0 s of audio"),
                                        (hour, "audio/flac", "3600.0 s of audio")]:
        response = http.post("/invocations", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 400 and message in response.json()["error"], response.text
        assert libsndfile_reads == []
        assert http.get("/ping").status_code == 200
    # what the count sees when a file is decoded: every frame of it
    ok = http.post("/invocations", content=wav(np.zeros(8000 * 3, np.float32), 8000),
                   headers={"Content-Type": "audio/wav"})
    assert ok.status_code == 200 and sum(libsndfile_reads) == 8000 * 3


def test_undeclared_lengths_stop_decoding_past_the_limit(http, libsndfile_reads):
    """A FLAC whose header does not state its length (total samples 0) holding 20 minutes: decoding
    stops within one block past the 10-minute limit, with the same 400, having read half the file."""
    rate, seconds = 8000, 2 * MAX_SECONDS
    undeclared = flac_declaring(seconds, rate, 1, 0)
    assert len(undeclared) < MAX_BODY_BYTES
    response = http.post("/invocations", content=undeclared, headers={"Content-Type": "audio/flac"})
    assert response.status_code == 400, response.text
    assert f"audio past it, over the limit (the limit is {MAX_SECONDS:g} s per request)" in response.json()["error"]
    limit = int(MAX_SECONDS * rate)
    assert limit < sum(libsndfile_reads) <= limit + BLOCK_SAMPLES < seconds * rate
    assert http.get("/ping").status_code == 200


def test_a_model_failure_is_a_500_and_the_server_goes_on():
    """A server fault (here: a model whose call raises, standing in for a broken SavedModel) is the only 500."""
    calls = []

    def broken_model(batch, lengths):
        calls.append(batch.shape)
        raise RuntimeError("the model is broken")

    app = create_app(broken_model, ServingConfig(URBANSOUND8K_CLASSES))
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn_server(app)
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


# ---------------------------------------------------------------- bodies over the cap, vanishing clients


def raw_request(server, head: bytes) -> socket.socket:
    """A connection to the server with `head` (request line and headers) sent; the body is the caller's.
    Its reads time out after 60 s: a server that waited for more than it was sent fails the test."""
    sock = socket.create_connection((server.host, server.port), timeout=60)
    sock.sendall(head)
    return sock


def invocation_head(extra: str) -> bytes:
    return f"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: audio/wav\r\n{extra}\r\n".encode()


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the one response on `sock` (Content-Length framed, as uvicorn sends errors)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed before a response: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        more = sock.recv(65536)
        assert more, "connection closed mid-response"
        body += more
    return int(head.split()[1]), json.loads(body[:length])


def test_a_declared_length_over_the_cap_is_refused_from_the_header(server, http):
    """Content-Length of 1 GiB and no body sent: answered 413 at once, from the header (a server
    that waited for the body would never answer); 7 MiB sent whole: read, dropped, 413 with its size."""
    with raw_request(server, invocation_head(f"Content-Length: {1 << 30}\r\n")) as sock:
        status, answer = read_response(sock)
    assert status == 413 and answer["error"] == (f"request body is {1 << 30} bytes; the limit is {MAX_BODY_BYTES} "
                                                 "bytes (6 MiB)")
    over = MAX_BODY_BYTES + (1 << 20)
    response = http.post("/invocations", content=b"\0" * over, headers={"Content-Type": "audio/wav"})
    assert response.status_code == 413 and f"request body is {over} bytes" in response.json()["error"]
    assert http.get("/ping").status_code == 200


def test_a_streamed_body_is_cut_off_at_the_cap(server, http):
    """Chunked bodies (no Content-Length): 7 MiB, ended, gets 413 with its size; one that goes on past
    DISCARD_LIMIT and is never ended gets 413 once the server has read DISCARD_LIMIT (a server that
    read to the end would wait for the last chunk forever), saying how much it read."""
    def chunked(sock, total, end):
        chunk = b"\0" * (1 << 16)
        for _ in range(total // len(chunk)):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        if end:
            sock.sendall(b"0\r\n\r\n")

    with raw_request(server, invocation_head("Transfer-Encoding: chunked\r\n")) as sock:
        chunked(sock, 7 << 20, end=True)
        status, answer = read_response(sock)
    assert status == 413 and answer["error"].startswith(f"request body is {7 << 20} bytes")
    with raw_request(server, invocation_head("Transfer-Encoding: chunked\r\n")) as sock:
        sender = threading.Thread(target=chunked, args=(sock, DISCARD_LIMIT + (4 << 20), False))
        sender.start()
        status, answer = read_response(sock)
        sender.join(60)
    assert status == 413
    read = int(answer["error"].split()[3])
    assert DISCARD_LIMIT < read <= DISCARD_LIMIT + (1 << 20), read  # cut off within one read of the cap
    assert http.get("/ping").status_code == 200


def wait_for(condition, timeout=60.0):
    """Poll until `condition()` holds; fail the test if it does not within `timeout` s (a guard, not a measure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.02)


def test_a_client_gone_mid_body_leaves_the_server_serving(server, http, libsndfile_reads):
    before, calls = scrape(http), server.batcher.stats.batches
    body = wav(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    with raw_request(server, invocation_head(f"Content-Length: {len(body)}\r\n")) as sock:
        sock.sendall(body[:1000])  # then gone
    wait_for(lambda: metric(scrape(http), "us8k_requests_total", status="400")
             == metric(before, "us8k_requests_total", status="400") + 1)  # the server saw it go
    after = scrape(http)
    assert metric(after, "us8k_requests_in_flight") == 0 and libsndfile_reads == []
    assert server.batcher.stats.batches == calls
    assert http.post("/invocations", content=body, headers={"Content-Type": "audio/wav"}).status_code == 200


def test_a_client_gone_mid_answer_leaves_the_server_serving(server, http):
    """Two clients vanish: one right after sending a long recording (the answer is still being
    computed), one after reading the first bytes of a large answer (a 2-minute timeline). The server
    finishes both (counted as answered), holds nothing in flight and answers the next request."""
    rate = 8000
    t = np.arange(rate * 120) / rate
    long = wav((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    before = metric(scrape(http), "us8k_requests_total", status="200")
    head = "POST /invocations?windows=true&threshold=0 HTTP/1.1\r\nHost: test\r\nContent-Type: audio/wav\r\n" \
           f"Content-Length: {len(long)}\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sock.sendall(head.encode() + long)  # then gone, before the answer
    wait_for(lambda: metric(scrape(http), "us8k_requests_total", status="200") == before + 1)
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head.encode() + long)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")  # the answer has begun
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close with a reset
    wait_for(lambda: metric(scrape(http), "us8k_requests_total", status="200") == before + 2)
    wait_for(lambda: metric(scrape(http), "us8k_requests_in_flight") == 0)
    assert http.post("/invocations", content=wav(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE),
                     headers={"Content-Type": "audio/wav"}).status_code == 200


def test_at_most_parse_workers_requests_decode_at_once(server, http, monkeypatch):
    """Five WAV requests at once, with libsndfile's reads held at a gate: PARSE_WORKERS of them reach
    the decoder, the others wait their turn (all read: /metrics counts them waiting), and none
    enters while the first ones are held; once the gate opens all five are answered."""
    gate, lock = threading.Event(), threading.Lock()
    inside, entered, most = [0], set(), [0]
    read = sf.SoundFile.read

    def held(self, *args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            entered.add(threading.get_ident())
        try:
            gate.wait(120)
            return read(self, *args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(sf.SoundFile, "read", held)
    body = wav(np.zeros(SAMPLE_RATE // 2, np.float32), SAMPLE_RATE)
    results = []

    def send():
        with httpx.Client(base_url=server.url, timeout=120) as client:
            results.append(client.post("/invocations", content=body, headers={"Content-Type": "audio/wav"}))

    senders = [threading.Thread(target=send) for _ in range(5)]
    for sender in senders:
        sender.start()
    def settled():  # two decoding, three waiting: every request read, none can enter meanwhile
        with lock:
            assert inside[0] <= PARSE_WORKERS, f"{inside[0]} requests decoding at once"
        samples = scrape(http)
        return (metric(samples, "us8k_requests_parsing"),
                metric(samples, "us8k_requests_waiting_to_parse")) == (PARSE_WORKERS, 5 - PARSE_WORKERS)

    try:
        wait_for(settled)
        with lock:
            assert inside[0] == len(entered) == PARSE_WORKERS  # the waiting ones never reached the decoder
    finally:
        gate.set()
        for sender in senders:
            sender.join(120)
    assert [r.status_code for r in results] == [200] * 5
    assert most[0] == PARSE_WORKERS
    samples = scrape(http)
    assert metric(samples, "us8k_requests_parsing") == metric(samples, "us8k_requests_waiting_to_parse") == 0
