"""`us8k bench serving`: the local endpoint's requests/s and latency, batching on and off.

The server is the real one (`us8k serve` in a process of its own, on a free loopback port, one
fresh process per run); the load comes from client threads here (httpx, one keep-alive
connection each) sending one 4 s 16-bit 22050 Hz mono WAV per request. For each concurrency
(1, 8, 32), with dynamic batching on (--max-batch 32) and off (--max-batch 1): requests/s,
p50 / p99 latency, and clips per model call (from the server's exit line).

Reference figures, measured here on the same export before any server runs:
  limit  = the bare SavedModel's clips/s at batch 32 (the signature called directly on decoded
           clips): the endpoint at concurrency 32 with batching should reach ≥ 0.7× of it;
  single = p50 of decode_audio(WAV bytes) + one signature call on that one clip: the endpoint's
           p50 for the same WAV at concurrency 1 should be ≤ 1.5× of it.
The model: --export DIR (e.g. the demo's), else a `cnn` with random weights exported to a temp
dir (speed does not depend on the weights). Prints figures only; asserts nothing. The machine's
other load shows in the figures: run it on a quiet machine.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serving.batcher import BATCH_TIMEOUT_MS, MAX_BATCH  # batching on: the server's defaults
from tfdata.layout import OUTPUT_PROBABILITIES, SERVING_SIGNATURE, serving_inputs

CONCURRENCY = (1, 8, 32)
SECONDS = 8.0  # timed load per run
WARMUP_SECONDS = 1.5  # untimed load first (connections, TF's first calls)
CLIP_SECONDS = 4.0
LIMIT_ITERATIONS = 8  # timed batch-32 calls for the limit
WARMUP_CALLS = 6  # untimed calls of each shape before any timing
SINGLE_REPEATS = 40  # timed decode + 1-clip calls
RANDOM_MODEL = "cnn"
SEED = 0


def add_arguments(parser) -> None:
    parser.add_argument("--export", default=None, help="export directory to serve (default: a random-weight cnn)")
    parser.add_argument("--model", default=RANDOM_MODEL, help=f"architecture to export without --export ({RANDOM_MODEL})")
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"timed load per run (default {SECONDS:g})")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="comma-separated client counts (default 1,8,32)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help=f"batching on: rows per call ({MAX_BATCH})")
    parser.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS,
                        help=f"batching on: wait for company (default {BATCH_TIMEOUT_MS:g} ms)")


def _wav_bytes(seconds: float) -> bytes:
    import numpy as np
    import soundfile as sf

    from tfdata.contract import SAMPLE_RATE

    rng = np.random.default_rng(SEED)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _export_random(model_name: str, directory: Path) -> Path:
    import numpy as np

    from models.architectures import build_model
    from models.export import export_model
    from tfdata.contract import FRONTEND

    import keras

    keras.utils.set_random_seed(SEED)
    model = build_model(model_name, np.zeros(FRONTEND.n_mels, np.float32), np.ones(FRONTEND.n_mels, np.float32))
    export_model(model, directory)
    return directory


class _BareModel:
    """The SavedModel's signature called directly, in this process (no HTTP, no batcher)."""

    def __init__(self, export_dir: Path, wav: bytes, batch: int):
        import numpy as np
        import tensorflow as tf

        from serving.model_files import locate_model
        from tfdata.audio import decode_audio

        files = locate_model(export_dir)
        try:
            self.signature = tf.saved_model.load(str(files.saved_model_dir)).signatures[SERVING_SIGNATURE]
            self.description = _parameters(files)
        finally:
            files.cleanup()
        self._tf, self._decode, self.wav = tf, decode_audio, wav
        clip = decode_audio(wav)
        self.clips = np.repeat(clip[None], batch, axis=0)
        self.lengths = np.full((batch,), clip.size, np.int32)
        self.one = np.array([clip.size], np.int32)
        for _ in range(WARMUP_CALLS):  # oneDNN picks its kernels over the first calls
            self._forward(self.clips, self.lengths)
            self._forward(clip[None], self.one)

    def _forward(self, x, n):
        tf = self._tf
        return self.signature(**serving_inputs(tf.constant(x), tf.constant(n)))[OUTPUT_PROBABILITIES].numpy()

    def limit(self) -> float:
        """clips/s at the batch size given (decoded clips, signature only)."""
        start = time.perf_counter()
        for _ in range(LIMIT_ITERATIONS):
            self._forward(self.clips, self.lengths)
        return LIMIT_ITERATIONS * self.clips.shape[0] / (time.perf_counter() - start)

    def single_p50(self) -> float:
        """Median seconds of decode_audio(WAV) + one 1-clip signature call."""
        times = []
        for _ in range(SINGLE_REPEATS):
            t0 = time.perf_counter()
            self._forward(self._decode(self.wav)[None], self.one)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _parameters(files) -> str:
    import json

    if files.metadata_path and files.metadata_path.is_file():
        meta = json.loads(files.metadata_path.read_text())
        return f"{meta.get('model_name', '?')}, {meta.get('parameters', 0) / 1e6:.2f} M parameters"
    return "unknown model"


class _Server:
    """`us8k serve` in its own process on a free loopback port."""

    def __init__(self, export_dir: Path, max_batch: int, timeout_ms: float, log_path: Path):
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "us8k", "serve", str(export_dir), "--port", "0", "--max-batch", str(max_batch),
             "--batch-timeout-ms", str(timeout_ms)],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        self.url = None
        for line in self.process.stdout:
            match = re.search(r" at (http://\S+) ", line)
            if match:
                self.url = match.group(1)
                break
        if self.url is None:
            self.stop()
            raise RuntimeError(f"the server did not start; see {log_path}")

    def stop(self) -> tuple[int, int]:
        """SIGTERM, wait; returns (clips, model calls) from its exit line."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=120)
        self._log.close()
        match = re.search(r"stopped \((\d+) clips in (\d+) model calls\)", out or "")
        return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _load(url: str, body: bytes, concurrency: int, seconds: float) -> tuple[list[float], int, float]:
    """`concurrency` threads posting `body` for `seconds`: (latencies, errors, elapsed)."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client():
        with httpx.Client(base_url=url, timeout=120) as http:
            http.get("/ping")
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                t0 = time.perf_counter()
                response = http.post("/invocations", content=body, headers={"Content-Type": "audio/wav"})
                elapsed = time.perf_counter() - t0
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    start = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def run(args) -> int:
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    work = Path(tempfile.mkdtemp(prefix="us8k-bench-serving-"))
    try:
        if args.export:
            export_dir = Path(args.export)
        else:
            print(f"bench serving: exporting a random-weight {args.model} to {work / 'export'}", flush=True)
            export_dir = _export_random(args.model, work / "export")
        wav = _wav_bytes(CLIP_SECONDS)
        bare = _BareModel(export_dir, wav, args.max_batch)
        limit_before, single = bare.limit(), bare.single_p50()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"bench serving: {bare.description}; requests = one {CLIP_SECONDS:g} s 16-bit 22050 Hz WAV "
              f"({len(wav) / 1e3:.0f} kB); {cores} cores; {args.seconds:g} s per run", flush=True)
        print(f"  bare model, batch {args.max_batch} (signature call)   {limit_before:8.1f} clips/s   (the limit; "
              f"measured again after the runs)")
        print(f"  bare decode + 1-clip forward, p50     {single * 1e3:8.1f} ms", flush=True)
        print(f"  {'batching':<16}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'clips/call':>12}{'errors':>8}")
        results = {}
        for label, max_batch, timeout_ms in ((f"on (max {args.max_batch}, {args.batch_timeout_ms:g} ms)",
                                              args.max_batch, args.batch_timeout_ms), ("off (max 1)", 1, 0.0)):
            for concurrency in levels:
                server = _Server(export_dir, max_batch, timeout_ms, work / f"server-{max_batch}-{concurrency}.log")
                try:
                    _load(server.url, wav, concurrency, WARMUP_SECONDS)
                    latencies, errors, elapsed = _load(server.url, wav, concurrency, args.seconds)
                finally:
                    clips, calls = server.stop()
                rate = len(latencies) / elapsed
                results[(max_batch, concurrency)] = (rate, _percentile(latencies, 0.5))
                print(f"  {label:<16}{concurrency:>8}{rate:>9.1f}{_percentile(latencies, 0.5) * 1e3:>9.1f}"
                      f"{_percentile(latencies, 0.99) * 1e3:>9.1f}{clips / max(calls, 1):>12.1f}{errors:>8}", flush=True)
        limit_after = bare.limit()
        limit = max(limit_before, limit_after)  # the stricter baseline
        print(f"  bare model, batch {args.max_batch}, after the runs    {limit_after:8.1f} clips/s   "
              f"(ratios below use the higher, {limit:.1f})")
        top = max(levels)
        if (args.max_batch, top) in results:
            ratio = results[(args.max_batch, top)][0] / limit
            print(f"  endpoint@{top} with batching / limit: {ratio:.2f}×  (target ≥ 0.7×)")
        if (1, 1) in results:
            print(f"  p50 one WAV, 1 client, batching off / bare decode + forward: "
                  f"{results[(1, 1)][1] / single:.2f}×  (target ≤ 1.5×)")
        if (args.max_batch, 1) in results:
            print(f"  p50 one WAV, 1 client, batching on  / bare decode + forward: "
                  f"{results[(args.max_batch, 1)][1] / single:.2f}×  (target ≤ 1.5×)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    _parser = argparse.ArgumentParser(prog="us8k bench serving")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
