"""`us8k bench serving`: the local endpoint's requests/s and latency, batching on and off.

The server is the real one (`us8k serve` in a process of its own, on a free loopback port, one
process per batching mode, loaded at each concurrency in turn); the load comes from client threads
here (httpx, one keep-alive connection each) sending one 4 s 16-bit 22050 Hz mono WAV per request.
For each concurrency (1, 8, 32), with dynamic batching on (--max-batch 32) and off (--max-batch 1),
after a warm-up at that concurrency (longer at a server's first: TensorFlow's first calls happen
there; at the next ones only the new connections open): requests/s, p50 / p99 latency, and clips per
model call over the timed load (the difference of the server's /metrics `us8k_model_call_rows` sum and count).

Reference figures, measured here on the same export before any server runs:
  limit  = the bare SavedModel's clips/s at batch 32 (the signature called directly on decoded
           clips): the endpoint at concurrency 32 with batching should reach ≥ 0.7× of it;
  single = p50 of decode_audio(WAV bytes) + one signature call on that one clip: the endpoint's
           p50 for the same WAV at concurrency 1 should be ≤ 1.5× of it.
The model: --export DIR (e.g. the demo's), else a `cnn` with random weights exported to a temp
dir (speed does not depend on the weights). Prints figures only; asserts nothing. The machine's
other load shows in the figures: run it on a quiet machine (the load average is printed).

`--soak SECONDS`: one server (batching on, the defaults) under concurrency 32 (the highest of
--concurrency) for that long, after a warm-up: req/s, p50/p99, errors, and the server's resident
memory after the warm-up and at the end.
`--worst-case`: the largest requests the limits allow (a 600 s 8 kHz WAV; 64 files totalling
≈ 583 s in one JSON body), at the server's defaults: latency over HTTP and the server's peak memory
for each, and the same bodies through the SageMaker container's path in this process
(input_handler → the SavedModel's signature on its TF Serving payload → output_handler).
"""
from __future__ import annotations

import argparse
import base64
import collections
import io
import json
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

import numpy as np
import soundfile as sf

from benchmarks import BenchmarkError
from serving import inference
from serving.batcher import BATCH_TIMEOUT_MS, MAX_BATCH  # batching on: the server's defaults
from serving.inference import MAX_INSTANCES, MAX_SECONDS
from serving.model_files import locate_model
from tfdata.audio import decode_audio
from tfdata.contract import FRONTEND, SAMPLE_RATE, URBANSOUND8K_CLASSES
from tfdata.layout import OUTPUT_PROBABILITIES, SERVING_SIGNATURE, serving_inputs

CONCURRENCY = (1, 8, 32)
SECONDS = 8.0  # timed load per run
WARMUP_SECONDS = 1.5  # untimed load first (connections, TF's first calls)
LEVEL_WARMUP_SECONDS = 0.5  # untimed load before each later concurrency on the same, warm server (its new connections)
CLIP_SECONDS = 4.0
LIMIT_ITERATIONS = 8  # timed batch-32 calls for the limit
WARMUP_CALLS = 6  # untimed calls of each shape before any timing
SINGLE_REPEATS = 40  # timed decode + 1-clip calls
RANDOM_MODEL = "cnn"
SEED = 0
SOAK_WARMUP_SECONDS = 10.0  # untimed load before the soak's first memory reading
SOAK_SAMPLE_SECONDS = 30.0
WORST_CASE_REPEATS = 3


def add_arguments(parser) -> None:
    parser.add_argument("--export", default=None, help="export directory to serve (default: a random-weight cnn)")
    parser.add_argument("--model", default=RANDOM_MODEL,
                        help=f"architecture to export without --export ({RANDOM_MODEL})")
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"timed load per run (default {SECONDS:g})")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="comma-separated client counts (default 1,8,32)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help=f"batching on: rows per call ({MAX_BATCH})")
    parser.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS,
                        help=f"batching on: wait for company (default {BATCH_TIMEOUT_MS:g} ms)")
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                        help="hold the highest concurrency for SECONDS and report memory at start and end")
    parser.add_argument("--worst-case", action="store_true",
                        help="latency and memory of the largest allowed requests, over HTTP and the container path")


def wav_bytes(seconds: float) -> bytes:
    """A 440 Hz tone in light noise as 16-bit WAV at the contract's rate: the benchmarks' request."""
    rng = np.random.default_rng(SEED)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _export_random(model_name: str, directory: Path) -> Path:
    # Keras and models/ only when this benchmark runs: `us8k bench` imports every benchmark for its parser.
    import keras

    from models.architectures import build_model
    from models.export import export_model

    keras.utils.set_random_seed(SEED)
    model = build_model(model_name, np.zeros(FRONTEND.n_mels, np.float32), np.ones(FRONTEND.n_mels, np.float32),
                        num_classes=len(URBANSOUND8K_CLASSES))
    export_model(model, directory, class_names=URBANSOUND8K_CLASSES)
    return directory


class _BareModel:
    """The SavedModel's signature called directly, in this process (no HTTP, no batcher)."""

    def __init__(self, export_dir: Path, wav: bytes, batch: int):
        import tensorflow as tf  # only when this benchmark runs: `us8k bench` imports every benchmark

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
             "--batch-timeout-ms", str(timeout_ms), "--quiet"],
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

    def memory_mb(self, field: str = "VmRSS") -> float:
        """The server's resident memory (VmRSS) or its peak since the last reset (VmHWM), MB."""
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024

    def model_calls(self) -> tuple[float, float]:
        """(clips, model calls) so far: the sum and count of /metrics' us8k_model_call_rows histogram."""
        import httpx  # the test extra

        text = httpx.get(self.url + "/metrics", timeout=30).text
        return tuple(float(re.search(rf"^us8k_model_call_rows_{field} (\S+)$", text, re.M).group(1))
                     for field in ("sum", "count"))

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def stop(self) -> None:
        """SIGTERM, wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=120)
        self._log.close()


def _load(url: str, body: bytes, concurrency: int, seconds: float,
          content_type: str = "audio/wav") -> tuple[list[float], int, float]:
    """`concurrency` threads posting `body` for `seconds`: (latencies, errors, elapsed)."""
    import httpx  # the test extra

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
                try:
                    response = http.post("/invocations", content=body, headers={"Content-Type": content_type})
                    status = response.status_code
                except httpx.HTTPError:
                    status = None
                elapsed = time.perf_counter() - t0
                with lock:
                    if status == 200:
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


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def _soak(export_dir: Path, wav: bytes, args, concurrency: int, work: Path) -> dict:
    server = _Server(export_dir, args.max_batch, args.batch_timeout_ms, work / "server-soak.log")
    try:
        load_before = _loadavg()
        _load(server.url, wav, concurrency, SOAK_WARMUP_SECONDS)
        start_mb = server.memory_mb()
        samples, stop = [], threading.Event()

        def sample():  # the server's RSS every SOAK_SAMPLE_SECONDS: growth that settles vs a leak
            while not stop.wait(SOAK_SAMPLE_SECONDS):
                samples.append(server.memory_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        before = server.model_calls()
        latencies, errors, elapsed = _load(server.url, wav, concurrency, args.soak)
        clips, calls = (after - then for after, then in zip(server.model_calls(), before))  # the timed load's
        stop.set()
        sampler.join()
        end_mb = server.memory_mb()
        load_after = _loadavg()
    finally:
        server.stop()
    print(f"bench serving --soak: {args.soak:g} s at concurrency {concurrency} (after {SOAK_WARMUP_SECONDS:g} s of "
          f"warm-up), one {CLIP_SECONDS:g} s WAV per request, batching on (max {args.max_batch}, "
          f"{args.batch_timeout_ms:g} ms); load average {load_before} before, {load_after} after")
    print(f"  {len(latencies) / elapsed:.1f} req/s, p50 {_percentile(latencies, 0.5) * 1e3:.1f} ms, "
          f"p99 {_percentile(latencies, 0.99) * 1e3:.1f} ms, {errors} errors, {len(latencies)} answered, "
          f"{clips / max(calls, 1):.1f} clips per model call")
    print(f"  server memory (RSS): {start_mb:.0f} MB after the warm-up, {end_mb:.0f} MB at the end "
          f"({(end_mb - start_mb) / start_mb * 100:+.1f} %)"
          + (f"; every {SOAK_SAMPLE_SECONDS:g} s: {', '.join(f'{m:.0f}' for m in samples)} MB" if samples else ""),
          flush=True)
    return {"baselines": {"rss_start": {"value": start_mb, "unit": "MB", "what": "server RSS after the warm-up"}},
            "figures": {"rss_end": {"value": end_mb, "unit": "MB", "baseline": "rss_start", "lower_is_better": True,
                                    "what": f"server RSS after {args.soak:g} s at concurrency {concurrency}",
                                    "samples_mb": samples}},
            "params": {"soak_seconds": args.soak, "concurrency": concurrency, "answered": len(latencies),
                       "errors": errors, "rps": len(latencies) / elapsed}}


def _worst_case_bodies() -> dict[str, tuple[bytes, str]]:
    """The largest requests the default limits allow."""
    rng = np.random.default_rng(SEED)

    def wav8k(seconds):
        t = np.arange(int(seconds * 8000)) / 8000
        x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
        buf = io.BytesIO()
        sf.write(buf, x.astype(np.float32), 8000, format="WAV", subtype="PCM_U8")
        return buf.getvalue()

    files = [base64.b64encode(wav8k(1.0)).decode()] * (MAX_INSTANCES - 1) + [base64.b64encode(wav8k(520)).decode()]
    return {f"one WAV, {MAX_SECONDS:g} s at 8 kHz": (wav8k(MAX_SECONDS), "audio/wav"),
            f"{MAX_INSTANCES} files in JSON, 583 s": (json.dumps({"instances": [{"b64": f} for f in files]}).encode(),
                                                    "application/json")}


def _container_path(export_dir: Path, bodies: dict[str, tuple[bytes, str]]) -> dict[str, tuple[float, float, float]]:
    """input_handler → the signature its payload names (as TF Serving runs it) → output_handler, in
    this process: (handler in, model, handler out) seconds per body, the best of WORST_CASE_REPEATS."""
    import tensorflow as tf  # only when this benchmark runs: `us8k bench` imports every benchmark

    files = locate_model(export_dir)
    os.environ[inference.METADATA_ENV] = str(files.metadata_path)
    inference.reload_container_config()
    loaded = tf.saved_model.load(str(files.saved_model_dir))
    Context = collections.namedtuple("Context", "custom_attributes request_content_type accept_header")
    Response = collections.namedtuple("Response", "status_code content")

    def tf_serving(request_json: str) -> Response:
        request = json.loads(request_json)
        signature = loaded.signatures[request.get("signature_name", SERVING_SIGNATURE)]
        specs = signature.structured_input_signature[1]
        inputs = {}
        for name, value in request["inputs"].items():
            if specs[name].dtype == tf.string:
                value = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in value]
            inputs[name] = tf.constant(value, specs[name].dtype)
        outputs = signature(**inputs)
        return Response(200, json.dumps({"outputs": {k: v.numpy().tolist() for k, v in outputs.items()
                                                     if v.dtype != tf.string}}).encode())

    times = {}
    try:
        for name, (body, content_type) in bodies.items():
            ctx = Context("windows=true", content_type, "application/json")
            best = None
            for _ in range(WORST_CASE_REPEATS):
                t0 = time.perf_counter()
                payload = inference.input_handler(io.BytesIO(body), ctx)
                t1 = time.perf_counter()
                response = tf_serving(payload)
                t2 = time.perf_counter()
                inference.output_handler(response, ctx)
                t3 = time.perf_counter()
                run = (t1 - t0, t2 - t1, t3 - t2)
                best = run if best is None or sum(run) < sum(best) else best
            times[name] = best
    finally:
        files.cleanup()
    return times


def _worst_case(export_dir: Path, args, work: Path) -> None:
    import httpx  # the test extra

    bodies = _worst_case_bodies()
    server = _Server(export_dir, args.max_batch, args.batch_timeout_ms, work / "server-worst.log")
    results = {}
    try:
        with httpx.Client(base_url=server.url, timeout=300) as http:
            http.post("/invocations", content=wav_bytes(CLIP_SECONDS), headers={"Content-Type": "audio/wav"})
            for name, (body, content_type) in bodies.items():
                latencies, peak = [], 0.0
                for _ in range(WORST_CASE_REPEATS):
                    time.sleep(0.2)
                    server.reset_peak()
                    before = server.memory_mb()
                    t0 = time.perf_counter()
                    response = http.post("/invocations", content=body, headers={"Content-Type": content_type},
                                         params={"windows": "true"})
                    latencies.append(time.perf_counter() - t0)
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
                    peak = max(peak, server.memory_mb("VmHWM") - before)
                results[name] = (len(body), latencies, peak)
    finally:
        server.stop()
    container = _container_path(export_dir, bodies)
    print(f"bench serving --worst-case: the largest requests at the defaults (--max-seconds {MAX_SECONDS:g}, "
          f"max batch {args.max_batch}); load average {_loadavg()}; SageMaker's invocation limit is 60 s")
    print(f"  {'request':<28}{'body MB':>9}{'HTTP s (worst of ' + str(WORST_CASE_REPEATS) + ')':>24}"
          f"{'peak MB':>9}{'container: in + model + out s':>32}")
    for name, (size, latencies, peak) in results.items():
        t_in, t_model, t_out = container[name]
        print(f"  {name:<28}{size / 1e6:>9.2f}{max(latencies):>24.2f}{peak:>9.0f}"
              f"{f'{t_in:.2f} + {t_model:.2f} + {t_out:.2f} = {t_in + t_model + t_out:.2f}':>32}", flush=True)


TARGET_THROUGHPUT = 0.7  # endpoint at the top concurrency, batching on / the bare model's batch limit
TARGET_LATENCY = 1.5  # endpoint p50 at concurrency 1 / bare decode + forward


def _report(results: dict, *, limit: float, limit_before: float, limit_after: float, single: float, args,
            description: str) -> dict:
    """The runs' figures for `us8k bench all`: {"baselines", "figures", "params"} (benchmarks.report)."""
    top = max(c for _, c in results)
    baselines = {"limit": {"value": limit, "unit": "clips/s",
                           "what": f"bare model, batch {args.max_batch} (higher of before/after the runs)"},
                 "single": {"value": single * 1e3, "unit": "ms", "what": "bare decode + 1-clip forward, p50"}}
    figures = {}
    for (max_batch, concurrency), (rate, p50, p99, errors, per_call) in results.items():
        batching = "on" if max_batch > 1 else "off"
        extra = {"p99_ms": p99 * 1e3, "errors": errors, "clips_per_call": per_call}
        figures[f"rps_batching_{batching}_c{concurrency}"] = {
            "value": rate, "unit": "req/s", "baseline": "limit", **extra,
            "what": f"endpoint, batching {batching}, {concurrency} client{'s' if concurrency > 1 else ''}",
            **({"target": {"op": ">=", "ratio": TARGET_THROUGHPUT}} if max_batch > 1 and concurrency == top else {})}
        if concurrency == 1:
            figures[f"p50_batching_{batching}_c1"] = {
                "value": p50 * 1e3, "unit": "ms", "baseline": "single", "lower_is_better": True, **extra,
                "what": f"endpoint p50, one WAV, batching {batching}, 1 client",
                "target": {"op": "<=", "ratio": TARGET_LATENCY}}
    return {"baselines": baselines, "figures": figures,
            "params": {"model": description, "seconds": args.seconds, "max_batch": args.max_batch,
                       "batch_timeout_ms": args.batch_timeout_ms, "limit_before": round(limit_before, 1),
                       "limit_after": round(limit_after, 1)}}


def _load_runs(export_dir: Path, wav: bytes, args, levels: list[int], work: Path) -> dict:
    """One server per batching mode (on / off), loaded at each concurrency in turn for args.seconds after a
    warm-up at that concurrency (WARMUP_SECONDS at the first, LEVEL_WARMUP_SECONDS at the next):
    {(max batch, concurrency): (req/s, p50 s, p99 s, errors, clips per model call over the timed load)},
    a line printed for each."""
    results = {}
    for label, max_batch, timeout_ms in ((f"on (max {args.max_batch}, {args.batch_timeout_ms:g} ms)",
                                          args.max_batch, args.batch_timeout_ms), ("off (max 1)", 1, 0.0)):
        server = _Server(export_dir, max_batch, timeout_ms, work / f"server-{max_batch}.log")
        try:
            for index, concurrency in enumerate(levels):
                _load(server.url, wav, concurrency, LEVEL_WARMUP_SECONDS if index else WARMUP_SECONDS)
                before = server.model_calls()
                latencies, errors, elapsed = _load(server.url, wav, concurrency, args.seconds)
                clips, calls = (after - then for after, then in zip(server.model_calls(), before))
                rate, per_call = len(latencies) / elapsed, clips / max(calls, 1)
                results[(max_batch, concurrency)] = (rate, _percentile(latencies, 0.5),
                                                     _percentile(latencies, 0.99), errors, per_call)
                print(f"  {label:<16}{concurrency:>8}{rate:>9.1f}{_percentile(latencies, 0.5) * 1e3:>9.1f}"
                      f"{_percentile(latencies, 0.99) * 1e3:>9.1f}{per_call:>12.1f}{errors:>8}", flush=True)
        finally:
            server.stop()
    return results


def run(args) -> int:
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    work = Path(tempfile.mkdtemp(prefix="us8k-bench-serving-"))
    try:
        if args.export:
            export_dir = Path(args.export)
        else:
            print(f"bench serving: exporting a random-weight {args.model} to {work / 'export'}", flush=True)
            export_dir = _export_random(args.model, work / "export")
        wav = wav_bytes(CLIP_SECONDS)
        if args.soak is not None:
            if not 0 < args.soak < float("inf"):
                raise BenchmarkError("--soak must be a positive number of seconds")
            return _soak(export_dir, wav, args, max(levels), work)
        if args.worst_case:
            _worst_case(export_dir, args, work)
            return 0
        bare = _BareModel(export_dir, wav, args.max_batch)
        limit_before, single = bare.limit(), bare.single_p50()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"bench serving: {bare.description}; requests = one {CLIP_SECONDS:g} s 16-bit 22050 Hz WAV "
              f"({len(wav) / 1e3:.0f} kB); {cores} cores; {args.seconds:g} s per run", flush=True)
        print(f"  bare model, batch {args.max_batch} (signature call)   {limit_before:8.1f} clips/s   (the limit; "
              f"measured again after the runs)")
        print(f"  bare decode + 1-clip forward, p50     {single * 1e3:8.1f} ms", flush=True)
        print(f"  {'batching':<16}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'clips/call':>12}{'errors':>8}")
        results = _load_runs(export_dir, wav, args, levels, work)
        limit_after = bare.limit()
        limit = max(limit_before, limit_after)  # the stricter baseline
        print(f"  bare model, batch {args.max_batch}, after the runs    {limit_after:8.1f} clips/s   "
              f"(ratios below use the higher, {limit:.1f})")
        top = max(levels)
        if (args.max_batch, top) in results:
            ratio = results[(args.max_batch, top)][0] / limit
            print(f"  endpoint@{top} with batching / limit: {ratio:.2f}×  (target ≥ {TARGET_THROUGHPUT}×)")
        if (1, 1) in results:
            print(f"  p50 one WAV, 1 client, batching off / bare decode + forward: "
                  f"{results[(1, 1)][1] / single:.2f}×  (target ≤ {TARGET_LATENCY}×)")
        if (args.max_batch, 1) in results:
            print(f"  p50 one WAV, 1 client, batching on  / bare decode + forward: "
                  f"{results[(args.max_batch, 1)][1] / single:.2f}×  (target ≤ {TARGET_LATENCY}×)")
        return _report(results, limit=limit, limit_before=limit_before, limit_after=limit_after, single=single,
                       args=args, description=bare.description)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="us8k bench serving")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
