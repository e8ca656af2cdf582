"""`us8k bench frontend`: log-mel throughput of the in-graph frontend vs librosa, on the same cores.

The TensorFlow side runs `LogMelSpectrogram` on one batch (default 64 × 88200 samples) as a
`tf.function`, stock and with XLA (`jit_compile=True`), in a process of its own using every core.
The librosa side runs the seed's per-clip `melspectrogram` + `power_to_db` in one single-threaded
worker process per core. Each side gets a fresh spawned process: librosa after TensorFlow in one
process ran 3–7× slower when measured here (librosa's numba/BLAS threads compete with
TensorFlow's thread pools). Figures are clips per second of wall time, warm.
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
import time

from benchmarks import BenchmarkError

BATCH = 64
ITERATIONS = 10  # timed batches for each TensorFlow variant (after two warm-up calls)
LIBROSA_CLIPS = 128  # per worker process
REPEATS = 3  # rounds of (TensorFlow, librosa); medians are reported — the cores may be shared
SEED = 0
TARGET_OVER_LIBROSA = 2.0  # the in-graph frontend / librosa on the same cores
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _clips(count: int, seed: int):
    """Noise with a tone: the content does not change the cost, only the size does."""
    import numpy as np

    from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE

    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    return (0.05 * rng.standard_normal((count, CLIP_SAMPLES)) + tone).astype(np.float32)


def _tensorflow_side(batch: int, iterations: int, queue) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from models.frontend import LogMelSpectrogram

    layer = LogMelSpectrogram()
    waveforms = tf.constant(_clips(batch, SEED))
    results = {}
    outputs = {}
    for name, jit in (("stock", False), ("xla", True)):
        function = tf.function(layer.__call__, jit_compile=jit)
        for _ in range(2):
            outputs[name] = function(waveforms).numpy()  # trace, compile, warm caches
        start = time.monotonic()
        for _ in range(iterations):
            function(waveforms).numpy()
        results[name] = batch * iterations / (time.monotonic() - start)
    results["xla_max_abs_db_diff"] = float(np.abs(outputs["xla"] - outputs["stock"]).max())
    results["tensorflow_version"] = tf.__version__
    queue.put(results)


def _librosa_worker(clips: int, seed: int, barrier, queue) -> None:
    import librosa

    from tfdata.contract import FRONTEND as F

    def log_mel(y):
        power = librosa.feature.melspectrogram(y=y, sr=F.sample_rate, n_fft=F.n_fft, hop_length=F.hop_length,
                                               n_mels=F.n_mels, fmin=F.fmin, fmax=F.fmax)
        return librosa.power_to_db(power, ref=F.ref_power, amin=F.amin, top_db=F.top_db)

    waveforms = _clips(clips, seed)
    log_mel(waveforms[0])  # warm: imports, filterbank cache
    barrier.wait()
    start = time.monotonic()
    for y in waveforms:
        log_mel(y)
    queue.put((clips, start, time.monotonic()))


def measure(batch: int = BATCH, iterations: int = ITERATIONS, librosa_clips: int = LIBROSA_CLIPS,
            workers: int | None = None, repeats: int = REPEATS) -> dict:
    """Alternate the two sides `repeats` times; return the median of each figure (and all rounds)."""
    rounds = [_measure_once(batch, iterations, librosa_clips, workers or _cores()) for _ in range(repeats)]
    figures = dict(rounds[0])
    for key in ("stock", "xla", "librosa"):
        figures[key] = statistics.median(r[key] for r in rounds)
        figures[f"{key}_rounds"] = [r[key] for r in rounds]
    figures["xla_max_abs_db_diff"] = max(r["xla_max_abs_db_diff"] for r in rounds)
    return figures


def _measure_once(batch: int, iterations: int, librosa_clips: int, workers: int) -> dict:
    """Both sides in spawned processes, TensorFlow then librosa."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    tensorflow = context.Process(target=_tensorflow_side, args=(batch, iterations, queue))
    tensorflow.start()
    figures = queue.get()
    tensorflow.join()

    saved = {key: os.environ.get(key) for key in SINGLE_THREAD_ENV}
    os.environ.update({key: "1" for key in SINGLE_THREAD_ENV})  # one core per librosa process
    try:
        barrier = context.Barrier(workers)
        processes = [context.Process(target=_librosa_worker, args=(librosa_clips, SEED + 1 + i, barrier, queue))
                     for i in range(workers)]
        for process in processes:
            process.start()
        spans = [queue.get() for _ in processes]
        for process in processes:
            process.join()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    total = sum(count for count, _, _ in spans)
    wall = max(end for _, _, end in spans) - min(start for _, start, _ in spans)
    figures.update(librosa=total / wall, workers=workers, batch=batch, cores=_cores())
    return figures


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=BATCH, help=f"clips per TensorFlow batch (default {BATCH})")
    parser.add_argument("--iterations", type=int, default=ITERATIONS,
                        help=f"timed TensorFlow batches per variant (default {ITERATIONS})")
    parser.add_argument("--librosa-clips", type=int, default=LIBROSA_CLIPS,
                        help=f"clips per librosa worker process (default {LIBROSA_CLIPS})")
    parser.add_argument("--workers", type=int, default=None,
                        help="librosa worker processes (default: one per available core)")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"alternating rounds, medians reported (default {REPEATS})")


def run(args) -> int:
    for name in ("batch", "iterations", "librosa_clips", "repeats"):
        if getattr(args, name) < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise BenchmarkError("--workers must be at least 1")
    from tfdata.contract import CLIP_SAMPLES

    print(f"frontend: log-mel of {CLIP_SAMPLES}-sample clips on {_cores()} cores, {args.repeats} rounds of "
          f"TensorFlow (batch {args.batch} × {args.iterations}) then librosa; load average before "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    figures = measure(args.batch, args.iterations, args.librosa_clips, args.workers, args.repeats)

    def rounds(key):
        return ", ".join(f"{v:.0f}" for v in figures[f"{key}_rounds"])

    print(f"  tf.signal frontend, stock     {figures['stock']:8.1f} clips/s  median of [{rounds('stock')}] "
          f"(TensorFlow {figures['tensorflow_version']})")
    print(f"  tf.signal frontend, XLA       {figures['xla']:8.1f} clips/s  median of [{rounds('xla')}] "
          f"(max |XLA - stock| {figures['xla_max_abs_db_diff']:.1e} dB)")
    print(f"  librosa, {figures['workers']} process(es)      {figures['librosa']:8.1f} clips/s  "
          f"median of [{rounds('librosa')}]")
    print(f"  ratio stock / librosa {figures['stock'] / figures['librosa']:.2f}, "
          f"XLA / librosa {figures['xla'] / figures['librosa']:.2f}; load average after "
          f"{os.getloadavg()[0]:.1f} (above {_cores()} the cores were shared: figures are low)", flush=True)
    # For `us8k bench all` (benchmarks.report): every figure against its baseline of this run.
    return {"baselines": {"librosa": {"value": figures["librosa"], "unit": "clips/s",
                                      "what": f"librosa melspectrogram, {figures['workers']} process(es)"}},
            "figures": {"stock": {"value": figures["stock"], "unit": "clips/s", "baseline": "librosa",
                                  "what": "tf.signal log-mel frontend, stock",
                                  "target": {"op": ">=", "ratio": TARGET_OVER_LIBROSA}},
                        "xla": {"value": figures["xla"], "unit": "clips/s", "baseline": "librosa",
                                "what": "tf.signal log-mel frontend, XLA",
                                "target": {"op": ">=", "ratio": TARGET_OVER_LIBROSA}}},
            "params": {"batch": args.batch, "iterations": args.iterations, "librosa_clips": args.librosa_clips,
                       "repeats": args.repeats, "xla_max_abs_db_diff": figures["xla_max_abs_db_diff"]}}
