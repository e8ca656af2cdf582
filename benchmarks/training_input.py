"""`us8k bench pipeline`: can the tf.data input keep a training step fed, and what does training cost in memory?

1. Pipeline: examples/s that `tfdata.dataset.make_dataset` delivers from TFRecord shards in
   training mode (shuffle, batched parse, augmentation), iterating batches with no model.
2. Model: examples/s one training step of build_model(MODEL) consumes on this CPU (a compiled
   `train_on_batch` on one fixed batch, after warm-up) and `fit` fed by the pipeline; the same step
   XLA-compiled (`us8k train --xla`) and, with --mixed-precision, under the mixed_float16 policy
   (off by default: on a CPU that step is very slow, see --help).
3. The ratio pipeline / step (target ≥ 10×: the input side is then not what limits training).
   And `fit` fed by records of long clips (LONG_CLIP_SECONDS, stored as their 4 s windows as ingestion
   stores them) against `fit` fed by 4 s records (target ≥ 0.9×).
4. Peak memory (the child's own VmHWM) of a short `us8k train` run on demo-sized data, in a subprocess.
Figures only; the machine is shared, so re-run before relying on one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from models.architectures import build_model
from tfdata import contract as c
from tfdata import synth
from tfdata.dataset import DatasetConfig, make_dataset
from tfdata.example import serialize_clip_windows

RECORDS = 384  # written to SHARDS shards over two folds
SHARDS = 8
BATCH_SIZE = 32
PIPELINE_BATCHES = 60
WARMUP_BATCHES = 5
MODEL = "cnn"
TRAIN_STEPS = 8
WARMUP_STEPS = 2
FIT_STEPS = 8
MEMORY_TRAIN_CLIPS = 320  # the demo's size: 8 folds × 40 clips (4 per class per fold)
MEMORY_EVAL_CLIPS = 40
MEMORY_EPOCHS = 1
TARGET_PIPELINE_OVER_STEP = 10.0
UNIQUE_CLIPS = 40  # synthesised once, then reused (content does not change the pipeline's cost)
LONG_CLIP_SECONDS = 10.0  # an ESC-50-or-longer clip: 4 windows
TARGET_LONG_OVER_SHORT = 0.9
LONG_CLIP_ROUNDS = 3


def write_records(records_dir: str, per_fold: dict[int, int], shards_per_fold: int, seed: int = 0,
                  long_seconds: float | None = None) -> int:
    """Synthetic clips (tfdata.synth) as fold shards; every 4th clip shorter than 4 s, or every clip
    `long_seconds` long, stored as its windows. Returns the count of records."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(UNIQUE_CLIPS):
        label = i % len(c.URBANSOUND8K_CLASSES)  # tfdata.synth's generators: one per UrbanSound8K class
        seconds = long_seconds or (float(rng.uniform(1.0, 4.0)) if i % 4 == 3 else float(c.CLIP_SECONDS))
        x = 0.5 * synth.synthesize_clip(label, rng, c.SAMPLE_RATE, seconds)
        clips += serialize_clip_windows(x, label=label, class_name=c.URBANSOUND8K_CLASSES[label], fold=1, fsid=i,
                                        slice_file_name=f"{i}-{label}-0-0.wav", salience=1)
    total = 0
    for fold, count in per_fold.items():
        os.makedirs(os.path.join(records_dir, c.fold_dir_name(fold)), exist_ok=True)
        writers = [tf.io.TFRecordWriter(os.path.join(records_dir, c.fold_dir_name(fold),
                                                     f"bench-{s:05d}-of-{shards_per_fold:05d}{c.RECORD_SUFFIX}"))
                   for s in range(shards_per_fold)]
        for i in range(count):
            writers[i % shards_per_fold].write(clips[i % len(clips)])
        for w in writers:
            w.close()
        total += count
    return total


def pipeline_rate(records_dir: str, folds, batch_size: int, batches: int, **settings) -> float:
    """Examples/s delivered by make_dataset (repeating; `settings`: DatasetConfig's), after WARMUP_BATCHES."""
    ds = make_dataset(records_dir, folds, DatasetConfig(batch_size=batch_size, repeat=True, **settings))
    iterator = iter(ds)
    for _ in range(WARMUP_BATCHES):
        next(iterator)
    start = time.perf_counter()
    examples = sum(int(next(iterator)[1].shape[0]) for _ in range(batches))
    return examples / (time.perf_counter() - start)


def step_rate(model_name: str, batch_size: int, steps: int, *, xla: bool = False,
              mixed_precision: bool = False) -> tuple[float, object]:
    """train_on_batch examples/s on one fixed batch after WARMUP_STEPS, as `us8k train --xla` /
    `--mixed-precision` build and compile the model; returns (rate, the compiled model)."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    try:
        model = build_model(model_name, num_classes=len(c.URBANSOUND8K_CLASSES))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=xla)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (batch_size, c.CLIP_SAMPLES)).astype(np.float32)
    y = rng.integers(0, len(c.URBANSOUND8K_CLASSES), batch_size).astype(np.int32)
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch_size * steps / (time.perf_counter() - start), model


def fit_rate(model, records_dir: str, folds, batch_size: int) -> float:
    """fit-from-pipeline examples/s of a compiled model, after a warm-up fit."""
    ds = make_dataset(records_dir, folds, DatasetConfig(batch_size=batch_size, training=True, repeat=True))
    model.fit(ds, steps_per_epoch=WARMUP_STEPS, epochs=1, shuffle=False, verbose=0)  # warm-up (new function for fit)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=FIT_STEPS, epochs=1, shuffle=False, verbose=0)
    return batch_size * FIT_STEPS / (time.perf_counter() - start)


def long_clip_rates(model, work: str, records_dir: str, args) -> tuple[float, float]:
    """fit fed by LONG_CLIP_SECONDS clips stored as their windows, and fit fed by the 4 s records, timed in
    LONG_CLIP_ROUNDS alternating rounds (a short fit's figures drift with the machine): the medians; prints
    the ratio."""
    long_dir = os.path.join(work, "long-records")
    write_records(long_dir, {1: args.records // 2, 2: args.records - args.records // 2}, max(args.shards // 2, 1),
                  long_seconds=LONG_CLIP_SECONDS)
    short, long = [], []
    for _ in range(LONG_CLIP_ROUNDS):
        short.append(fit_rate(model, records_dir, [1, 2], args.batch_size))
        long.append(fit_rate(model, long_dir, [1, 2], args.batch_size))
    fit_short, fit_long = float(np.median(short)), float(np.median(long))
    print(f"Model {args.model}: fit fed by {LONG_CLIP_SECONDS:g} s clips' windows {fit_long:8,.1f} examples/s: "
          f"{fit_long / fit_short:.2f}x the 4 s records' {fit_short:,.1f} (medians of {LONG_CLIP_ROUNDS} alternating "
          f"rounds: {', '.join(f'{s:.1f}/{v:.1f}' for s, v in zip(short, long))}; "
          f"target >= {TARGET_LONG_OVER_SHORT:g}x)", flush=True)
    return fit_long, fit_short


# Runs `us8k ARGS` in this child and prints the child's own VmHWM last. Neither RUSAGE_CHILDREN nor
# wait4's rusage would do: Linux carries the spawning process's high-water RSS into the child's
# ru_maxrss at exec (the parent here holds TensorFlow and a model: 2.7 GB read against 1.6 GB alone).
_PEAK_WRAPPER = """
import runpy, sys
sys.argv = ["us8k", *sys.argv[1:]]
try:
    runpy.run_module("us8k", run_name="__main__")
finally:
    from benchmarks.ingest import peak_rss_mib
    print(f"VmHWM_MiB {peak_rss_mib()}", file=sys.stderr)
"""


def us8k_peak_rss(args: list[str]) -> tuple[float | None, float]:
    """Run `us8k ARGS` in a subprocess; return (its own peak RSS in MiB, None without /proc; wall seconds)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"us8k bench: error: `us8k {args[0]}` subprocess failed: {result.stderr.strip()[-500:]}")
    reported = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("VmHWM_MiB ")]
    peak = float(reported[-1]) if reported and reported[-1] != "None" else None
    return peak, seconds


def training_peak_rss(records_dir: str, run_dir: str, model_name: str, epochs: int) -> tuple[float | None, float]:
    """`us8k train` on the records: (its own peak RSS in MiB or None, wall seconds)."""
    return us8k_peak_rss(["train", "--records", records_dir, "--output", run_dir, "--models", model_name,
                          "--epochs", str(epochs), "--val-fold", "2", "--test-fold", "3", "--verbose", "0",
                          "--skip-evaluate"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=RECORDS, help="records written to temporary shards")
    parser.add_argument("--shards", type=int, default=SHARDS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--batches", type=int, default=PIPELINE_BATCHES, help="pipeline batches timed")
    parser.add_argument("--model", default=MODEL, help="architecture whose training step is timed")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS, help="training steps timed")
    parser.add_argument("--skip-memory", action="store_true", help="skip the training-memory subprocess")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="also time the step under mixed_float16 (slow on a CPU: float16 convolutions have no "
                             "fast CPU kernels; the cnn's 10 steps took over 8 minutes here)")


def run(args: argparse.Namespace) -> int:
    work = tempfile.mkdtemp(prefix="us8k-bench-pipeline-")
    try:
        print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (shared machine: "
              "figures vary)", flush=True)
        records_dir = os.path.join(work, "records")
        half = max(args.shards // 2, 1)
        n = write_records(records_dir, {1: args.records // 2, 2: args.records - args.records // 2}, half)
        print(f"Records: {n} in {2 * half} shards ({_dir_mib(records_dir):.0f} MiB)")

        rates = {
            "training (shuffle + augment)": pipeline_rate(records_dir, [1, 2], args.batch_size, args.batches,
                                                          training=True),
            "training, no augmentation": pipeline_rate(records_dir, [1, 2], args.batch_size, args.batches,
                                                       training=True, augment=False),
            "evaluation (ordered)": pipeline_rate(records_dir, [1, 2], args.batch_size, args.batches,
                                                  training=False),
        }
        for name, rate in rates.items():
            print(f"Pipeline {name:<30} {rate:10,.0f} examples/s  (batch {args.batch_size})", flush=True)

        stock, model = step_rate(args.model, args.batch_size, args.steps)
        params = model.count_params()
        print(f"Model {args.model} ({params:,} parameters): train step {stock:8,.1f} examples/s "
              f"(train_on_batch, fixed batch {args.batch_size})", flush=True)
        fit = fit_rate(model, records_dir, [1, 2], args.batch_size)
        print(f"Model {args.model}: fit fed by the pipeline {fit:8,.1f} examples/s", flush=True)
        fit_long, fit_short = long_clip_rates(model, work, records_dir, args)
        ratio = rates["training (shuffle + augment)"] / stock
        print(f"Ratio pipeline / training step: {ratio:,.1f}x (target >= {TARGET_PIPELINE_OVER_STEP:g}x)", flush=True)
        variants = {}
        timed = [("step_xla", "--xla", {"xla": True})]
        if args.mixed_precision:
            timed.append(("step_mixed_precision", "--mixed-precision", {"mixed_precision": True}))
        for key, flag, kwargs in timed:
            variants[key] = (flag, step_rate(args.model, args.batch_size, args.steps, **kwargs)[0])
            print(f"Model {args.model}, {flag}: train step {variants[key][1]:8,.1f} examples/s "
                  f"({variants[key][1] / stock:.2f}x stock)", flush=True)

        result = {  # for `us8k bench all` (benchmarks.report): every figure against its baseline of this run
            "baselines": {"train_step": {"value": stock, "unit": "examples/s",
                                         "what": f"{args.model} train_on_batch, batch {args.batch_size}"},
                          "fit_4s_records": {"value": fit_short, "unit": "examples/s",
                                             "what": f"{args.model} fit fed by 4 s records (median of "
                                                     f"{LONG_CLIP_ROUNDS}, alternating with the long clips)"}},
            "figures": {**{key: {"value": rates[name], "unit": "examples/s", "baseline": "train_step",
                                 "what": f"pipeline, {name}",
                                 **({"target": {"op": ">=", "ratio": TARGET_PIPELINE_OVER_STEP}}
                                    if key == "pipeline_training" else {})}
                           for key, name in (("pipeline_training", "training (shuffle + augment)"),
                                             ("pipeline_no_augment", "training, no augmentation"),
                                             ("pipeline_evaluation", "evaluation (ordered)"))},
                        "fit": {"value": fit, "unit": "examples/s", "baseline": "train_step",
                                "what": f"{args.model} fit fed by the pipeline"},
                        "fit_long_clips": {"value": fit_long, "unit": "examples/s", "baseline": "fit_4s_records",
                                           "what": f"{args.model} fit fed by {LONG_CLIP_SECONDS:g} s clips' windows",
                                           "target": {"op": ">=", "ratio": TARGET_LONG_OVER_SHORT}},
                        **{key: {"value": rate, "unit": "examples/s", "baseline": "train_step",
                                 "what": f"{args.model} train_on_batch, {flag}"}
                           for key, (flag, rate) in variants.items()}},
            "params": {"records": n, "batch_size": args.batch_size, "batches": args.batches, "steps": args.steps,
                       "model": args.model, "parameters": int(params)}}
        if not args.skip_memory:
            memory_dir = os.path.join(work, "memory-records")
            write_records(memory_dir, {1: MEMORY_TRAIN_CLIPS, 2: MEMORY_EVAL_CLIPS, 3: MEMORY_EVAL_CLIPS}, 4)
            peak_mib, seconds = training_peak_rss(memory_dir, os.path.join(work, "run"), args.model, MEMORY_EPOCHS)
            shown = "unknown (no /proc)" if peak_mib is None else f"{peak_mib:,.0f} MiB"
            print(f"Training peak RSS: {shown}  ({args.model}, {MEMORY_TRAIN_CLIPS} training clips, "
                  f"{MEMORY_EPOCHS} epoch, batch 32, subprocess wall {seconds:.1f} s)", flush=True)
            result["params"].update(training_peak_rss_mib=None if peak_mib is None else round(peak_mib, 1),
                                    training_seconds=round(seconds, 1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _dir_mib(path: str) -> float:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files) / 2**20
