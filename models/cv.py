"""Cross-validation (`us8k cv`): K-fold cross-validation over the dataset's own folds (UrbanSound8K's official
protocol, 10-fold on its predefined folds; 5-fold for ESC-50; K for a collection ingestion split into K).

For each test fold k (every fold present, or the `--folds` given): validation on the fold before it (k - 1;
the last fold for the first: so for UrbanSound8K k = 10 is the baseline's split, validation 9 / test 10),
training on the others. Each fold is an ordinary `us8k train` run in RUN/fold{k:02d}/
(`tfdata.layout.cv_fold_run_name`) — its own normalisation statistics from its own training folds
only, its own selection by validation accuracy, its own test-fold evaluation and calibration, its
classes (the records') — plus RUN/fold{k:02d}/split.json, the record ids (slice_file_name) of its
training, validation and test clips. Folds absent from the records are
skipped in the rotation (validation is then the previous present fold).

    RUN/cv.json        the configuration, the records, the plan (test fold → validation fold)
    RUN/fold01/ …      one training run per test fold (config.json, checkpoints, report/ …)
    RUN/summary.json   per model: per-fold test accuracy and macro-F1 (+ validation accuracy,
                       temperature, threshold), their mean ± std (sample std over the folds);
                       "selected": the per-fold selected model's figures (the whole procedure)
    RUN/summary.md     the same as tables

Resumable fold by fold: a finished fold (its report exists) is read back, not retrained; a fold
killed half-way resumes inside `train_models` (finished models skipped, a partly trained one
continues from its last epoch). The summary is rewritten after every fold.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time

import tensorflow as tf

from models.config import SPLIT_FIELDS, TrainConfig
from models.errors import CVError
from models.folds import available_folds, resolve_folds
from models.run_files import write_json
from models.train import train_models
from tfdata import contract as c
from tfdata import records
from tfdata.layout import (
    CV_FILE,
    CV_SPLIT_FILE,
    CV_SUMMARY_JSON,
    CV_SUMMARY_MD,
    REPORT_DIR,
    REPORT_FILE,
    cv_fold_run_name,
)

SELECTED = "selected"  # the summary's row for the per-fold selected model


def validation_fold(test_fold: int, present: list[int]) -> int:
    """The documented rule: the fold before the test fold in the cyclic order of the present folds."""
    ordered = sorted(present)
    if test_fold not in ordered:
        raise CVError(f"test fold {test_fold} has no shards")
    if len(ordered) < 3:
        raise CVError(f"cross-validation needs at least 3 folds (test, validation, training), found {ordered}")
    return ordered[ordered.index(test_fold) - 1]


def plan(records_dir: str, folds=None) -> dict[int, int]:
    """{test fold: validation fold} for the requested test folds (default: every present fold)."""
    if not os.path.isdir(records_dir):
        raise CVError(f"records directory not found: {records_dir}")
    present = available_folds(records_dir)
    if not present:
        raise CVError(f"no TFRecord shards (foldK/*{c.RECORD_SUFFIX}) under {records_dir}")
    folds = present if folds is None else sorted(set(int(k) for k in folds))
    missing = [k for k in folds if k not in present]
    if missing:
        raise CVError(f"fold(s) {missing} have no shards under {records_dir} (present: {present})")
    return {k: validation_fold(k, present) for k in folds}


def record_ids(records_dir: str, folds) -> list[str]:
    """slice_file_name of every record of the folds, read from their shards."""
    spec = {c.KEY_FILE: records.FEATURE_SPEC[c.KEY_FILE]}
    ds = tf.data.TFRecordDataset(records.fold_files(records_dir, folds)).batch(1024)
    ids = []
    for batch in ds.map(lambda s: tf.io.parse_example(s, spec)[c.KEY_FILE]).as_numpy_iterator():
        ids += [v.decode() for v in batch]
    return ids


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fold_result(fold_dir: str) -> dict:
    """A finished fold's figures per model (from its report)."""
    with open(os.path.join(fold_dir, REPORT_DIR, REPORT_FILE)) as f:
        report = json.load(f)
    models = {}
    for name, m in report["models"].items():
        calibration = m.get("calibration") or {}
        models[name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "val_accuracy": m.get("val_accuracy"),
                        "temperature": calibration.get("temperature"), "threshold": calibration.get("threshold"),
                        "ece_before": (calibration.get("test") or {}).get("ece_before"),
                        "ece_after": (calibration.get("test") or {}).get("ece_after")}
    return {"selected": report["selected"], "models": models}


def summarise(results: dict[int, dict], plan_: dict[int, int]) -> dict:
    names = sorted({n for r in results.values() for n in r["models"]})
    rows = {}
    for name in [*names, SELECTED]:
        folds = {}
        for k, r in sorted(results.items()):
            chosen = r["selected"] if name == SELECTED else name
            if chosen in r["models"]:
                folds[str(k)] = {**r["models"][chosen], "val_fold": plan_[k], **({"model": chosen} if name == SELECTED
                                                                                 else {})}
        acc = _mean_std([f["accuracy"] for f in folds.values()])
        f1 = _mean_std([f["macro_f1"] for f in folds.values()])
        ece_b = _mean_std([f["ece_before"] for f in folds.values()])
        ece_a = _mean_std([f["ece_after"] for f in folds.values()])
        rows[name] = {"folds": folds, "accuracy_mean": acc[0], "accuracy_std": acc[1], "macro_f1_mean": f1[0],
                      "macro_f1_std": f1[1], "test_ece_before_mean": ece_b[0], "test_ece_after_mean": ece_a[0]}
    return rows


def summary_markdown(summary: dict) -> str:
    folds = summary["test_folds"]
    lines = [f"# {len(summary['completed'])}-fold cross-validation ({len(folds)} planned) on {summary['records']}", "",
             "Test on fold k, validate on the fold before it, train on the rest; normalisation from the "
             "training folds only. Std: sample standard deviation over the folds.", "",
             "| Model | " + " | ".join(f"fold {k}" for k in folds) + " | Accuracy mean ± std | Macro-F1 mean ± std |",
             "|---|" + "---|" * len(folds) + "---|---|"]
    for name, row in summary["models"].items():
        cells = [f"{row['folds'][str(k)]['accuracy']:.4f}" if str(k) in row["folds"] else "–" for k in folds]
        mean = "–" if row["accuracy_mean"] is None else f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}"
        f1 = "–" if row["macro_f1_mean"] is None else f"{row['macro_f1_mean']:.4f} ± {row['macro_f1_std']:.4f}"
        label = "selected per fold (by validation)" if name == SELECTED else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} | {f1} |")
    lines.append("")
    return "\n".join(lines)


def without_split(config: dict | None) -> dict | None:
    """A configuration's fields but the split, which the protocol chooses per fold (a cv.json written
    before the split defaulted to the dataset's folds holds 9 and 10 there)."""
    return None if config is None else {k: v for k, v in config.items() if k not in SPLIT_FIELDS}


def run_cv(records_dir, output, config: TrainConfig | None = None, *, folds=None, force: bool = False,
           verbose="auto") -> dict:
    """Run (or resume) the cross-validation; write RUN/summary.json and summary.md; return the summary."""
    config = TrainConfig() if config is None else config
    records_dir = os.path.abspath(os.fspath(records_dir))
    output = os.path.abspath(os.fspath(output))
    plan_ = plan(records_dir, folds)
    os.makedirs(output, exist_ok=True)
    cv_path = os.path.join(output, CV_FILE)
    neutral = dataclasses.replace(config, val_fold=None, test_fold=None, train_folds=None)  # chosen per fold
    record = {"config": neutral.to_dict(), "records": records_dir,
              "rule": "test fold k, validation fold k-1 (cyclic over the present folds), training: the rest"}
    if os.path.isfile(cv_path) and not force:
        with open(cv_path) as f:
            saved = json.load(f)
        if (without_split(saved.get("config")), saved.get("records")) != (without_split(record["config"]),
                                                                           record["records"]):
            raise CVError(f"{output} holds a cross-validation with another configuration or records; "
                          "use --force or a new --output")
    previous = {}
    if os.path.isfile(cv_path):
        with open(cv_path) as f:
            previous = {int(k): v for k, v in json.load(f).get("plan", {}).items()}
    write_json(cv_path, {**record, "plan": {str(k): v for k, v in {**previous, **plan_}.items()}})

    results = {}
    started = time.perf_counter()
    for i, (test_fold, val_fold) in enumerate(plan_.items(), 1):
        fold_dir = os.path.join(output, cv_fold_run_name(test_fold))
        report = os.path.join(fold_dir, REPORT_DIR, REPORT_FILE)
        if os.path.isfile(report) and not force:
            print(f"[cv {i}/{len(plan_)}] test fold {test_fold}: finished earlier, read back", flush=True)
        else:
            fold_config = dataclasses.replace(config, val_fold=val_fold, test_fold=test_fold, train_folds=None)
            print(f"[cv {i}/{len(plan_)}] test fold {test_fold}, validation fold {val_fold} "
                  f"({time.perf_counter() - started:.0f} s so far)", flush=True)
            os.makedirs(fold_dir, exist_ok=True)
            train_folds = resolve_folds(records_dir, val_fold, test_fold)
            write_json(os.path.join(fold_dir, CV_SPLIT_FILE), {
                "test_fold": test_fold, "val_fold": val_fold, "train_folds": train_folds,
                "test_ids": record_ids(records_dir, [test_fold]), "val_ids": record_ids(records_dir, [val_fold]),
                "train_ids": record_ids(records_dir, train_folds)})
            train_models(records_dir, fold_dir, fold_config, force=force, evaluate=True, verbose=verbose)
        results[test_fold] = fold_result(fold_dir)
        # every finished fold of this output (also from earlier invocations with other --folds)
        all_plan = {**previous, **plan_}
        done = {k: fold_result(os.path.join(output, cv_fold_run_name(k)))
                for k in sorted(all_plan)
                if os.path.isfile(os.path.join(output, cv_fold_run_name(k), REPORT_DIR, REPORT_FILE))}
        summary = {"records": records_dir, "test_folds": sorted(all_plan), "completed": sorted(done),
                   "plan": {str(k): v for k, v in sorted(all_plan.items())},
                   "config": neutral.to_dict(), "models": summarise(done, all_plan)}
        write_json(os.path.join(output, CV_SUMMARY_JSON), summary)
        with open(os.path.join(output, CV_SUMMARY_MD), "w") as f:
            f.write(summary_markdown(summary))
    print(summary_markdown(summary), flush=True)
    print(f"Summary: {os.path.join(output, CV_SUMMARY_JSON)} ({time.perf_counter() - started:.0f} s)", flush=True)
    return summary
