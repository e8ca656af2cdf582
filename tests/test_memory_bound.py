"""The most memory one request can cost, measured: `us8k serve` in its own process, its peak RSS
(VmHWM, reset through /proc/PID/clear_refs) around each of the largest requests the limits allow,
over its resident memory just before. docs/serving.md states the bound asserted here."""
import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from wav_files import encode

from serving.inference import MAX_BODY_BYTES, MAX_INSTANCES, MAX_SECONDS

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")]

PEAK_BOUND_MB = 320  # docs/serving.md: at most 251 MB measured over an idle server at the limits (test model)


def kib(pid, field):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def reset_peak(pid):
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def wav(samples, rate, subtype="PCM_U8", fmt="WAV"):
    return encode(samples, rate, fmt, subtype)


def largest_requests():
    """The largest requests the limits allow, one per path that allocates."""
    rng = np.random.default_rng(0)
    seconds = MAX_SECONDS

    def tone(n, rate):
        return (0.3 * np.sin(np.arange(n) * 2 * np.pi * 440 / rate) + 0.01 * rng.standard_normal(n)).astype(np.float32)

    long_wav = wav(tone(int(seconds * 8000), 8000), 8000)  # 4.8 MB: 600 s at 8 kHz, 8-bit
    flac = io.BytesIO()
    with sf.SoundFile(flac, "w", 48000, 2, "PCM_16", format="FLAC") as out:  # 600 s of 48 kHz stereo near-silence
        for _ in range(int(seconds) // 10):
            out.write(np.zeros((480_000, 2), np.float32))
    rows_1k = json.dumps({"instances": [np.round(tone(int(seconds * 1000), 1000).astype(np.float64), 2).tolist()],
                          "sample_rate": 1000}).encode()  # 600 s at 1 kHz: resampled ×22
    floats = []  # 6 MB of JSON numbers at 22050 Hz, each a distinct float object while parsing
    size = 40
    while size < MAX_BODY_BYTES - 16:
        value = f"{rng.uniform(-0.9, 0.9):.1f}"
        floats.append(value)
        size += len(value) + 1
    json_6mb = ('{"instances": [[' + ",".join(floats) + "]]}").encode()
    short = wav(tone(8000, 8000), 8000)  # 64 instances: 63 × 1 s and one of 520 s, split over model calls
    long_b64 = wav(tone(520 * 8000, 8000), 8000)
    many = json.dumps({"instances": [{"b64": base64.b64encode(short).decode()}] * (MAX_INSTANCES - 1)
                       + [{"b64": base64.b64encode(long_b64).decode()}]}).encode()
    cases = {"WAV 600 s 8 kHz": (long_wav, "audio/wav"),
             "FLAC 600 s 48 kHz stereo": (flac.getvalue(), "audio/flac"),
             "JSON 600 s at 1 kHz": (rows_1k, "application/json"),
             "JSON 6 MB of numbers": (json_6mb, "application/json"),
             "JSON 64 files, 583 s": (many, "application/json")}
    for name, (body, _) in cases.items():
        assert len(body) <= MAX_BODY_BYTES, (name, len(body))
    return cases


class Server:
    """`us8k serve --quiet` in a process of its own."""

    def __init__(self, export):
        # at TensorFlow's own thread count, as it serves outside the tests (conftest sets one intra-op thread)
        env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}
        self.process = subprocess.Popen([sys.executable, "-m", "us8k", "serve", str(export), "--port", "0", "--quiet"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"})
        self.url = None
        for line in self.process.stdout:
            match = re.search(r" at (http://\S+) ", line)
            if match:
                self.url = match.group(1)
                break
        assert self.url, "the server did not start"

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_peak_memory_of_the_largest_requests(tiny_export, capsys):
    """Each case on a fresh server (warmed with one 4 s WAV, so the model's first-call costs are not
    counted): its peak RSS during the request over its RSS just before, i.e. what the request costs
    from an idle server (a second such request reuses that memory)."""
    cases = largest_requests()
    warm = wav(np.zeros(4 * 22050, np.float32), 22050, "PCM_16")
    peaks, idle = {}, {}
    for name, (body, content_type) in cases.items():
        server = Server(tiny_export)
        try:
            pid = server.process.pid
            with httpx.Client(base_url=server.url, timeout=300) as client:
                warmed = client.post("/invocations", content=warm, headers={"Content-Type": "audio/wav"})
                assert warmed.status_code == 200
                time.sleep(0.2)
                reset_peak(pid)
                before = kib(pid, "VmRSS")
                answer = client.post("/invocations", content=body, headers={"Content-Type": content_type})
                assert answer.status_code == 200, (name, answer.text)
                peaks[name] = (kib(pid, "VmHWM") - before) / 1024
                idle[name] = before / 1024
        finally:
            server.stop()
    with capsys.disabled():
        print(f"\npeak RSS over the idle server (≈ {min(idle.values()):.0f}–{max(idle.values()):.0f} MB) "
              "during one request:")
        for name, peak in peaks.items():
            print(f"  {name:<28} {peak:7.1f} MB")
    assert max(peaks.values()) <= PEAK_BOUND_MB, peaks
