"""`us8k bench quality`: does the stronger model with augmentation beat the baseline's CNN? Measured, not assumed.

On a synthetic set (`us8k synth --difficulty hard`, so the baseline's CNN is far from 100 %), ingested with
`us8k ingest`, it trains two arms with the same commands a user types:

    seed     us8k train --models cnn        (the baseline's recipe: Adam 1e-3, roll/placement/gain only)
    strong   us8k train --models deep_cnn   + background mixing, mixup, SpecAugment, cosine schedule with
                                              a 2-epoch warm-up, label smoothing, weight decay, patience 15
                                              (STRONG_FLAGS: docs/results.md's real-data recipe)

`--protocol cost` times each augmentation per batch against a training step. `--protocol split`:
folds 1–8 / 9 / 10, once per seed (`--seeds 0,1,2`), test-fold accuracy and
macro-F1 as mean ± std (sample std) over the seeds. `--protocol cv`: `us8k cv` over the folds
(`--folds`) once per arm, the per-fold mean ± std. `both` runs the two. Every run's wall time is
recorded. Writes WORK/quality.json and prints a Markdown table. Runs are resumable (finished
runs are read back, not retrained); `--deterministic` is passed through to every run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from models.architectures import build_model
from tfdata import contract as c
from tfdata import dataset
from tfdata.layout import CV_SUMMARY_JSON, REPORT_DIR, REPORT_FILE, SELECTION_FILE

DIFFICULTY = "hard"
SPLIT_CLIPS = 6  # per class per fold: 480 training, 60 validation, 60 test clips
CV_CLIPS = 3
EPOCHS = 12
CV_EPOCHS = 8
BATCH_SIZE = 32
SEEDS = "0,1,2"
SEED_FLAGS = ("--models", "cnn")
STRONG_FLAGS = ("--models", "deep_cnn", "--augment-background", "--augment-mix", "mixup", "--spec-augment",
                "--lr-schedule", "cosine", "--warmup-epochs", "2", "--label-smoothing", "0.1",
                "--weight-decay", "0.0001",
                "--patience", "15")
ARMS = {"seed": SEED_FLAGS, "strong": STRONG_FLAGS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", default="bench_quality", help="working directory (data, records, runs)")
    parser.add_argument("--protocol", choices=("split", "cv", "both", "cost"), default="split",
                        help="cost: only the per-batch cost of each augmentation against a seed-CNN training step")
    parser.add_argument("--difficulty", default=DIFFICULTY, help=f"us8k synth --difficulty (default {DIFFICULTY})")
    parser.add_argument("--clips-per-class-per-fold", type=int, default=SPLIT_CLIPS,
                        help=f"single split's data (default {SPLIT_CLIPS})")
    parser.add_argument("--cv-clips-per-class-per-fold", type=int, default=CV_CLIPS,
                        help=f"10-fold data (default {CV_CLIPS})")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"single split (default {EPOCHS})")
    parser.add_argument("--cv-epochs", type=int, default=CV_EPOCHS, help=f"10-fold (default {CV_EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--seeds", default=SEEDS, help=f"single split: one run per seed (default {SEEDS})")
    parser.add_argument("--folds", default="1,2,3,4,5,6,7,8,9,10", help="10-fold: the test folds to run")
    parser.add_argument("--arms", default="seed,strong", help="comma-separated: seed, strong")
    parser.add_argument("--deterministic", action="store_true", help="pass --deterministic to every run")


def _us8k(*args: str, log: Path | None = None) -> float:
    """Run `us8k ARGS` as a subprocess (output to `log` if given); return its wall time in seconds."""
    print(f"$ us8k {' '.join(args)}", flush=True)
    started = time.perf_counter()
    if log is None:
        done = subprocess.run([sys.executable, "-m", "us8k", *args])
    else:
        with open(log, "a") as f:
            done = subprocess.run([sys.executable, "-m", "us8k", *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"us8k bench quality: error: `us8k {args[0]}` failed with exit status {done.returncode}"
                         + (f" (log: {log})" if log else ""))
    return time.perf_counter() - started


def _records(work: Path, name: str, clips: int, difficulty: str) -> Path:
    data, records = work / f"data_{name}", work / f"records_{name}"
    if not (records / c.MANIFEST_FILE).is_file():
        _us8k("synth", str(data), "--clips-per-class-per-fold", str(clips), "--difficulty", difficulty,
              "--seed", "0", "--overwrite")
        _us8k("ingest", "--data-dir", str(data), "--output", str(records))
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_split(work: Path, args, arms) -> dict:
    records = _records(work, "split", args.clips_per_class_per_fold, args.difficulty)
    results = {}
    for arm in arms:
        runs = []
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            run_dir = work / f"split_{arm}_seed{seed}"
            report_path = run_dir / REPORT_DIR / REPORT_FILE
            seconds = None
            if not report_path.is_file():
                flags = [*ARMS[arm], "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                         "--seed", str(seed), "--verbose", "2", *(["--deterministic"] if args.deterministic else [])]
                seconds = _us8k("train", "--records", str(records), "--output", str(run_dir), *flags,
                                log=work / f"split_{arm}_seed{seed}.log")
            report = json.loads(report_path.read_text())
            selection = json.loads((run_dir / SELECTION_FILE).read_text())
            model = report["selected"]
            entry = report["models"][model]
            runs.append({"seed": seed, "model": model, "test_accuracy": entry["accuracy"],
                         "test_macro_f1": entry["macro_f1"], "val_accuracy": entry["val_accuracy"],
                         "train_seconds": selection["models"][model]["seconds"], "wall_seconds": seconds,
                         "epochs_run": selection["models"][model]["epochs_run"]})
            print(f"  {arm} seed {seed}: test accuracy {entry['accuracy']:.4f}", flush=True)
        acc = _mean_std([r["test_accuracy"] for r in runs])
        f1 = _mean_std([r["test_macro_f1"] for r in runs])
        results[arm] = {"runs": runs, "test_accuracy_mean": acc[0], "test_accuracy_std": acc[1],
                        "test_macro_f1_mean": f1[0], "test_macro_f1_std": f1[1]}
    return {"records": str(records), "clips_per_class_per_fold": args.clips_per_class_per_fold,
            "epochs": args.epochs, "arms": results}


def run_cv(work: Path, args, arms) -> dict:
    records = _records(work, "cv", args.cv_clips_per_class_per_fold, args.difficulty)
    results = {}
    for arm in arms:
        run_dir = work / f"cv_{arm}"
        flags = [*ARMS[arm], "--epochs", str(args.cv_epochs), "--batch-size", str(args.batch_size), "--seed", "0",
                 "--verbose", "2", *(["--deterministic"] if args.deterministic else [])]
        seconds = _us8k("cv", "--records", str(records), "--output", str(run_dir), "--folds", args.folds, *flags,
                        log=work / f"cv_{arm}.log")
        summary = json.loads((run_dir / CV_SUMMARY_JSON).read_text())
        model = next(iter(summary["models"]))
        results[arm] = {"model": model, **summary["models"][model], "wall_seconds": seconds}
        print(f"  {arm}: 10-fold mean accuracy {summary['models'][model]['accuracy_mean']:.4f}", flush=True)
    return {"records": str(records), "clips_per_class_per_fold": args.cv_clips_per_class_per_fold,
            "epochs": args.cv_epochs, "arms": results}


def table(result: dict) -> str:
    lines = []
    if "split" in result:
        split = result["split"]
        lines += [f"Single split (folds 1–8 / 9 / 10), {split['clips_per_class_per_fold']} clips per class per "
                  f"fold, {split['epochs']} epochs:", "",
                  "| Arm | Model | Test accuracy per seed | Mean ± std | Macro-F1 mean ± std | Train s per run |",
                  "|---|---|---|---|---|---|"]
        for arm, r in split["arms"].items():
            per_seed = ", ".join(f"{x['test_accuracy']:.3f}" for x in r["runs"])
            secs = ", ".join(f"{x['train_seconds']:.0f}" for x in r["runs"])
            lines.append(f"| {arm} | {r['runs'][0]['model']} | {per_seed} | {r['test_accuracy_mean']:.3f} ± "
                         f"{r['test_accuracy_std']:.3f} | {r['test_macro_f1_mean']:.3f} ± {r['test_macro_f1_std']:.3f} "
                         f"| {secs} |")
        lines.append("")
    if "cv" in result:
        cv = result["cv"]
        lines += [f"10-fold CV, {cv['clips_per_class_per_fold']} clips per class per fold, {cv['epochs']} epochs:", "",
                  "| Arm | Model | Folds | Accuracy mean ± std | Macro-F1 mean ± std | Wall s |",
                  "|---|---|---|---|---|---|"]
        for arm, r in cv["arms"].items():
            lines.append(f"| {arm} | {r['model']} | {len(r['folds'])} | "
                         f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} "
                         f"| {r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f} | {r['wall_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


COST_BATCH = 32
COST_REPEATS = 5


def augmentation_cost(batch_size: int = COST_BATCH, repeats: int = COST_REPEATS) -> dict:
    """Seconds per batch of each augmentation (graph mode, after a warm-up call) and of one training
    step of the baseline's CNN and of deep_cnn (with SpecAugment) on the same batch, measured together."""
    rng = np.random.default_rng(0)
    x = tf.constant((0.1 * rng.standard_normal((batch_size, c.CLIP_SAMPLES))).astype(np.float32))
    n = tf.constant(rng.integers(c.SAMPLE_RATE, c.CLIP_SAMPLES + 1, batch_size).astype(np.int32))
    classes = len(c.URBANSOUND8K_CLASSES)  # a batch of UrbanSound8K's ten classes
    y = tf.one_hot(tf.constant(rng.integers(0, classes, batch_size)), classes)
    off = dataset.AugmentParams(roll=False, place=False, min_gain_db=0.0, max_gain_db=0.0)
    variants = {"none": off, "roll + place + gain (seed)": dataset.DEFAULT_AUGMENT,
                "speed ±10 % (pitch + tempo)": dataclasses.replace(off, speed=0.1),
                "background mix": dataclasses.replace(off, background=True),
                "mixup": dataclasses.replace(off, mix="mixup"),
                "between-class": dataclasses.replace(off, mix="between_class")}

    def timed(fn):
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) / repeats

    out = {}
    for name, params in variants.items():
        step = tf.function(lambda a, b, d, s, p=params: dataset.augment_training_batch(a, b, d, s, p))
        out[name] = timed(lambda: [t.numpy() for t in step(x, n, y, tf.constant([1, 2], tf.int64))])
    spec = {"time_masks": 2, "time_mask_frames": 20, "freq_masks": 2, "freq_mask_bins": 16, "seed": 0}
    for name, model_name, spec_augment in (("cnn training step", "cnn", None),
                                           ("deep_cnn training step, SpecAugment off", "deep_cnn", None),
                                           ("deep_cnn training step, SpecAugment on", "deep_cnn", spec)):
        model = build_model(model_name, spec_augment=spec_augment, num_classes=classes)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        out[name] = timed(lambda: model.train_on_batch(x, y))
        keras.backend.clear_session()
    return {"batch_size": batch_size, "repeats": repeats, "seconds_per_batch": out,
            "load_average": os.getloadavg()[0]}


def run(args: argparse.Namespace) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"us8k bench quality: error: unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    path = work / "quality.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if args.protocol == "cost":
        cost = augmentation_cost()
        result["cost"] = cost
        path.write_text(json.dumps(result, indent=2))
        print(f"Per batch of {cost['batch_size']} (mean of {cost['repeats']}, load average "
              f"{cost['load_average']:.1f}):\n\n| What | s per batch |\n|---|---|")
        for name, seconds in cost["seconds_per_batch"].items():
            print(f"| {name} | {seconds:.4f} |")
        return _cost_report(cost)
    if args.protocol in ("split", "both"):
        result["split"] = run_split(work, args, arms)
        path.write_text(json.dumps(result, indent=2))
    if args.protocol in ("cv", "both"):
        result["cv"] = run_cv(work, args, arms)
        path.write_text(json.dumps(result, indent=2))
    result["arm_flags"] = {a: list(ARMS[a]) for a in arms}
    path.write_text(json.dumps(result, indent=2))
    print(table(result), flush=True)
    print(f"Results: {path}", flush=True)
    return _report(result, arms)


def _report(result: dict, arms) -> dict:
    """For `us8k bench all` (benchmarks.report): each arm's mean test accuracy and macro-F1 against the
    seed arm's of the same protocol; the strong arm's target is to beat it (ratio ≥ 1)."""
    stored = {"split": {"accuracy": "test_accuracy", "macro_f1": "test_macro_f1"},  # quality.json's keys
              "cv": {"accuracy": "accuracy", "macro_f1": "macro_f1"}}
    baselines, figures = {}, {}
    for protocol in ("split", "cv"):
        if protocol not in result:
            continue
        for metric, key in stored[protocol].items():
            base_key = f"{protocol}_seed_{metric}"
            for arm in arms:
                r = result[protocol]["arms"].get(arm)
                if r is None:
                    continue
                entry = {"value": r[f"{key}_mean"], "std": r[f"{key}_std"], "unit": "",
                         "what": f"{protocol}: {arm} arm, test {metric.replace('_', '-')} mean"}
                if arm == "seed":
                    baselines[base_key] = entry
                else:
                    figures[f"{protocol}_{arm}_{metric}"] = {**entry, "baseline": base_key,
                                                             "target": {"op": ">=", "ratio": 1.0}}
    params = {p: {"clips_per_class_per_fold": result[p]["clips_per_class_per_fold"], "epochs": result[p]["epochs"]}
              for p in ("split", "cv") if p in result}
    return {"baselines": baselines, "figures": figures, "params": params}


def _cost_report(cost: dict) -> dict:
    """For `us8k bench all`: each augmentation's seconds per batch against one seed-CNN training step."""
    per_batch = cost["seconds_per_batch"]
    return {"baselines": {"cnn_step": {"value": per_batch["cnn training step"], "unit": "s/batch",
                                       "what": "cnn training step"}},
            "figures": {name: {"value": seconds, "unit": "s/batch", "baseline": "cnn_step", "what": name,
                               "lower_is_better": True}
                        for name, seconds in per_batch.items() if name != "cnn training step"},
            "params": {"batch_size": cost["batch_size"], "repeats": cost["repeats"]}}


if __name__ == "__main__":
    sys.exit("run through the CLI: us8k bench quality")
