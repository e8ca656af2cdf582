"""Evaluating a training run (`us8k evaluate RUN`): test-fold metrics for its models → RUN/report/.

For the selected model and every other trained one: accuracy, macro-F1, per-class precision /
recall / F1 (scikit-learn), the confusion matrix (JSON + PNG), and the "undetermined" rule (top
probability below a threshold → no answer): its coverage and the accuracy of the answers given,
at contract.DEFAULT_THRESHOLD and over a sweep of thresholds (JSON + PNG). Then calibration
(`models.calibration`): the temperature fitted on the validation fold, the threshold chosen there
for the run's target (answered precision ≥ 0.9 by default), the expected calibration error and a
reliability diagram before and after, on validation and on the test fold, and the test fold's
coverage and precision at the calibrated threshold; RUN/calibration.json keeps each model's
temperature and threshold for `us8k export`. `--robustness` adds the test fold re-encoded,
re-levelled, resampled and embedded in longer recordings (`models.robustness`, selected model): the
caller hands `evaluate_run` that check, so this module (which the training job imports) needs
neither PyAV nor soxr. Writes `report.json`, the PNGs and a short `summary.md`; prints the selected
model's test accuracy. The classes are the run's (RUN/classes.json, `models.run_classes`; a run written
before runs kept them is UrbanSound8K's): per-class figures and the confusion matrix over them, and
report.json's "class_names"; a model whose output size differs from that list is refused.
Figures are per clip: a clip that ingestion stored as its 4 s windows counts once, with the mean of its
windows' probabilities (`predict_clips`), as the endpoint answers the same audio.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from models import architectures  # noqa: F401  (registers the custom layers for load_model)
from models import calibration as cal
from models.config import EVAL_BATCH_SIZE
from models.errors import EvaluationError
from models.figures import figure_png
from models.run_classes import RunClasses, output_mismatch, read_run_classes
from tfdata import contract as c
from tfdata.classes import ClassListError
from tfdata.layout import (
    CALIBRATION_FILE,
    REPORT_DIR,
    REPORT_FILE,
    REPORT_SUMMARY_FILE,
    checkpoint_path,
    read_selection,
    report_figure,
)
from tfdata.records import read_clip_windows
from tfdata.windowing import average_windows

SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))  # 0.00, 0.05, …, 1.00
MAX_LABELLED_CLASSES = 40  # the confusion figure names its classes (and counts its cells) up to this many
# A check of the selected model on other inputs: (model, records_dir, test_fold, *, temperature,
# threshold, verbose) → its report section (`models.robustness.evaluate_robustness`).
SelectedModelCheck = Callable[..., dict]


# ---------------------------------------------------------------------------- predictions
class _Inference:
    """model(waveform, training=False) as a callable object: TensorFlow keys its retracing warning on
    a function's code, so a lambda per model would warn once several models were evaluated."""

    def __init__(self, model):
        self.model = model

    def __call__(self, waveform):
        return self.model(waveform, training=False)


def _predictor(model):
    """model(waveform, training=False) traced once for every batch size (a partial last batch does not retrace)."""
    return tf.function(_Inference(model), input_signature=[tf.TensorSpec([None, c.CLIP_SAMPLES], tf.float32)])


def predict_dataset(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` over batches of (waveform, label) → (probabilities [N, classes], labels [N])."""
    predict = _predictor(model)
    probabilities, labels = [], []
    for element in dataset:  # (waveform, label[, sample weight]); a one-hot label counts as its argmax
        waveform, label = element[0], element[1].numpy()
        probabilities.append(predict(waveform).numpy().astype(np.float64))
        labels.append(label.argmax(axis=-1) if label.ndim == 2 else label)
    if not labels:
        raise EvaluationError("the evaluation dataset is empty")
    return np.concatenate(probabilities), np.concatenate(labels).astype(np.int64)


def predict_clips(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` over batches of (waveform, label, clip key) (tfdata.records.read_clip_windows) → one
    row per clip: (probabilities [clips, classes], labels [clips]). A clip stored as its windows answers
    with the mean of its windows' probabilities, as the endpoint answers for the same audio."""
    predict = _predictor(model)
    probabilities, labels, keys = [], [], []
    for waveform, label, key in dataset:
        probabilities.append(predict(waveform).numpy().astype(np.float64))
        labels.append(label.numpy())
        keys += key.numpy().tolist()
    if not labels:
        raise EvaluationError("the evaluation dataset is empty")
    clips: dict[bytes, int] = {}
    clip_of = np.array([clips.setdefault(k, len(clips)) for k in keys])
    mean, _, _ = average_windows(np.concatenate(probabilities), clip_of, len(clips))
    first = np.unique(clip_of, return_index=True)[1]  # each clip's first record (its windows share its label)
    return mean, np.concatenate(labels).astype(np.int64)[first]


# ---------------------------------------------------------------------------- metrics
def undetermined_rule(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Answers only where the top probability ≥ threshold: coverage and accuracy of those answers."""
    confident = probabilities.max(axis=1) >= threshold  # [N]
    correct = probabilities.argmax(axis=1) == labels  # [N]
    answered = int(confident.sum())
    return {
        "threshold": float(threshold),
        "coverage": answered / len(labels),  # fraction that gets a class, not "undetermined"
        "answered_accuracy": float(correct[confident].mean()) if answered else None,
        "undetermined": len(labels) - answered,
    }


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float,
                           class_names) -> dict:
    """Every test-fold figure for one model's probabilities, per class of `class_names` (label order)."""
    classes = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    present = support > 0  # macro-F1 over the classes the test fold holds
    return {
        "examples": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=np.flatnonzero(present), average="macro",
                                   zero_division=0)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),  # rows: true
        "undetermined_rule": undetermined_rule(probabilities, labels, threshold),
        "threshold_sweep": [undetermined_rule(probabilities, labels, t) for t in SWEEP_THRESHOLDS],
    }


# ---------------------------------------------------------------------------- figures


def confusion_png(matrix, title: str, class_names) -> bytes:
    """The confusion matrix (rows true, columns predicted, in `class_names`' order) as PNG bytes. Up to
    MAX_LABELLED_CLASSES classes the ticks name them and the cells hold their counts; above, the axes
    give label numbers and the colour alone the counts (names and digits would overlap)."""
    matrix = np.asarray(matrix)
    labelled = len(class_names) <= MAX_LABELLED_CLASSES

    def draw(ax):
        ax.imshow(matrix, cmap="Blues", interpolation="nearest")
        if labelled:
            ticks = range(len(class_names))
            ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=10 if len(class_names) <= 15 else 7)
            ax.set_yticks(ticks, class_names, fontsize=10 if len(class_names) <= 15 else 7)
        ax.set_xlabel("predicted" if labelled else "predicted (label number)")
        ax.set_ylabel("true" if labelled else "true (label number)")
        ax.set_title(title)
        if not labelled:
            return
        limit = matrix.max() / 2 if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", color="white" if count > limit else "black",
                        fontsize=10 if len(class_names) <= 15 else 6)

    side = 7 if len(class_names) <= 15 else 11
    return figure_png((side + 1, side), draw)


def sweep_png(sweep: list[dict], threshold: float, title: str) -> bytes:
    """Coverage and answered accuracy against the threshold, the chosen threshold marked."""
    xs = [p["threshold"] for p in sweep]

    def draw(ax):
        ax.plot(xs, [p["coverage"] for p in sweep], marker="o", label="coverage (answered)")
        ax.plot(xs, [np.nan if p["answered_accuracy"] is None else p["answered_accuracy"] for p in sweep],
                marker="s", label="accuracy of answers")
        ax.axvline(threshold, color="gray", linestyle="--", label=f"threshold {threshold:g}")
        ax.set_xlabel("threshold on the top probability")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3)

    return figure_png((7, 4.5), draw)


# ---------------------------------------------------------------------------- the run
def evaluate_run(run_dir: str | os.PathLike, *, threshold: float = c.DEFAULT_THRESHOLD,
                 batch_size: int = EVAL_BATCH_SIZE, records_dir: str | os.PathLike | None = None,
                 verbose: bool = True, robustness: SelectedModelCheck | None = None) -> dict:
    """Evaluate every model in RUN/selection.json on its test fold; write RUN/report/; return the report.

    `robustness` (e.g. `models.robustness.evaluate_robustness`) runs on the selected model with its
    calibration; its result is the report's "robustness" section (None without it).
    A bad selection or a missing checkpoint raises `SelectionError`, anything else `EvaluationError`."""
    if not 0.0 <= threshold <= 1.0:
        raise EvaluationError(f"threshold must be in [0, 1], got {threshold}")
    run_dir = os.fspath(run_dir)
    selection = read_selection(run_dir)
    classes = _run_classes(run_dir)
    class_names = classes.class_names
    records_dir = os.fspath(records_dir or selection["records"])
    test_fold = int(selection["test_fold"])
    try:
        test_ds = read_clip_windows(records_dir, [test_fold], batch_size)
    except FileNotFoundError as e:
        raise EvaluationError(str(e)) from None
    config = selection.get("config") or {}
    target = config.get("calibration_target", "precision")
    target_value = float(config.get("calibration_target_value", 0.9))
    val_fold = selection.get("val_fold")
    try:
        val_ds = None if val_fold is None else read_clip_windows(records_dir, [int(val_fold)], batch_size)
    except FileNotFoundError:
        val_ds = None  # no validation records here: no calibration
    report_dir = os.path.join(run_dir, REPORT_DIR)
    os.makedirs(report_dir, exist_ok=True)

    results = {}
    robustness_report = None
    for name, entry in selection["models"].items():
        model = keras.models.load_model(checkpoint_path(run_dir, selection, name), compile=False)
        probabilities, labels = _test_predictions(model, name, test_ds, test_fold, classes)
        metrics = classification_metrics(probabilities, labels, threshold, class_names)
        files = {"confusion_png": report_figure("confusion", name), "threshold_png": report_figure("threshold", name)}
        Path(report_dir, files["confusion_png"]).write_bytes(confusion_png(
            metrics["confusion_matrix"], f"{name}: test fold {test_fold} (accuracy {metrics['accuracy']:.3f})",
            class_names))
        Path(report_dir, files["threshold_png"]).write_bytes(sweep_png(
            metrics["threshold_sweep"], threshold, f"{name}: undetermined rule, test fold"))
        calibration = None
        if val_ds is not None:
            calibration = _calibration(model, val_ds, probabilities, labels, target, target_value)
            files["reliability_png"] = report_figure("reliability", name)
            Path(report_dir, files["reliability_png"]).write_bytes(cal.reliability_png([
                (f"{name}: validation (fold {val_fold})", calibration["validation"]["reliability_before"],
                 calibration["validation"]["reliability_after"]),
                (f"{name}: test (fold {test_fold})", calibration["test"]["reliability_before"],
                 calibration["test"]["reliability_after"])]))
            if calibration["warning"] and verbose:
                print(f"[{name}] warning: {calibration['warning']}", flush=True)
        results[name] = {**metrics, "val_accuracy": entry.get("best_val_accuracy"), "files": files,
                         "calibration": calibration}
        if robustness is not None and name == selection["selected"]:
            robustness_report = robustness(
                model, records_dir, test_fold, temperature=(calibration or {}).get("temperature", 1.0),
                threshold=(calibration or {}).get("threshold", threshold), verbose=verbose)
        keras.backend.clear_session(free_memory=True)

    report = {
        "selected": selection["selected"],
        "test_fold": test_fold,
        "records": records_dir,
        "threshold": threshold,
        "class_names": list(class_names),  # the run's (RUN/classes.json), label order
        "models": results,
        "robustness": robustness_report,
    }
    _write_report(run_dir, report_dir, report, val_fold)
    if verbose:
        selected = report["selected"]
        print(f"Test accuracy ({selected}, selected by validation accuracy, fold {test_fold}): "
              f"{results[selected]['accuracy']:.4f}")
        print(f"Report: {os.path.join(report_dir, REPORT_FILE)}", flush=True)
    return report


def _run_classes(run_dir: str) -> RunClasses:
    """The run's class list (RUN/classes.json; UrbanSound8K's for a run written before), else EvaluationError."""
    try:
        return read_run_classes(run_dir)
    except ClassListError as error:
        raise EvaluationError(str(error)) from None


def _test_predictions(model, name: str, test_ds, test_fold: int, classes: RunClasses):
    """(probabilities, labels) of model `name` on the test fold, after checking that its outputs and the
    records' labels are the run's classes (EvaluationError in one line otherwise)."""
    mismatch = output_mismatch(model.output_shape[-1], classes.class_names, f"model {name!r}")
    if mismatch:
        raise EvaluationError(f"{mismatch} ({classes.source})")
    probabilities, labels = predict_clips(model, test_ds)
    outside = labels[(labels < 0) | (labels >= classes.num_classes)]
    if outside.size:
        raise EvaluationError(f"test fold {test_fold} holds label {int(outside[0])}, outside the run's "
                              f"{classes.num_classes} classes: other records than the run's?")
    return probabilities, labels


def _calibration(model, val_ds, probabilities, labels, target: str, target_value: float) -> dict:
    """Temperature and threshold fitted on the validation fold, checked on the test fold's predictions."""
    val_probabilities, val_labels = predict_clips(model, val_ds)
    calibration = cal.calibrate(val_probabilities, val_labels, target, target_value)
    calibration["test"] = cal.check_on(probabilities, labels, calibration["temperature"], calibration["threshold"])
    return calibration


def _write_report(run_dir: str, report_dir: str, report: dict, val_fold) -> None:
    """RUN/calibration.json (each calibrated model's temperature and threshold), RUN/report/report.json
    and RUN/report/summary.md."""
    calibrated = {name: {k: m["calibration"][k] for k in ("temperature", "threshold", "target", "target_value",
                                                         "reached", "warning", "validation_coverage",
                                                         "validation_precision")}
                  for name, m in report["models"].items() if m["calibration"]}
    with open(os.path.join(run_dir, CALIBRATION_FILE), "w") as f:
        json.dump({"selected": report["selected"], "val_fold": val_fold, "models": calibrated}, f, indent=2)
    with open(os.path.join(report_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(report_dir, REPORT_SUMMARY_FILE), "w") as f:
        f.write(summary_markdown(report))


def summary_markdown(report: dict) -> str:
    threshold = report["threshold"]
    selected = report["selected"]
    lines = [f"# Test fold {report['test_fold']}: {selected} selected by validation accuracy", "",
             f"| Model | Val Accuracy | Test Accuracy | Macro-F1 | Coverage @ {threshold:g} | "
             f"Accuracy of answers @ {threshold:g} |",
             "|---|---|---|---|---|---|"]
    for name, m in sorted(report["models"].items(), key=lambda kv: kv[1]["accuracy"]):
        rule = m["undetermined_rule"]
        answered = "–" if rule["answered_accuracy"] is None else f"{rule['answered_accuracy']:.4f}"
        val = "–" if m["val_accuracy"] is None else f"{m['val_accuracy']:.4f}"
        label = f"**{name}**" if name == selected else name
        lines.append(f"| {label} | {val} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                     f"{rule['coverage']:.3f} | {answered} |")
    best = report["models"][selected]
    lines += ["", f"## {selected}: per class", "", "| Class | Precision | Recall | F1 | Support |",
              "|---|---|---|---|---|"]
    for name, p in best["per_class"].items():
        lines.append(f"| {name} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | {p['support']} |")
    lines += ["", f"Figures: `{best['files']['confusion_png']}`, `{best['files']['threshold_png']}` "
                  "(and the same for every model).", ""]
    calibrated = {n: m["calibration"] for n, m in report["models"].items() if m.get("calibration")}
    if calibrated:
        lines += ["## Calibration (temperature and threshold fitted on the validation fold)", "",
                  "| Model | T | Val NLL before → after | Val ECE before → after | Test ECE before → after | "
                  "Threshold (target) | Test coverage | Test precision of answers |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, k in calibrated.items():
            v, t = k["validation"], k["test"]
            precision = "–" if t["answered_precision"] is None else f"{t['answered_precision']:.4f}"
            lines.append(f"| {name} | {k['temperature']:.3f} | {v['nll_before']:.4f} → {v['nll_after']:.4f} | "
                         f"{v['ece_before']:.4f} → {v['ece_after']:.4f} | "
                         f"{t['ece_before']:.4f} → {t['ece_after']:.4f} | "
                         f"{k['threshold']:.4f} ({k['target']} ≥ {k['target_value']:g}) | {t['coverage']:.3f} | "
                         f"{precision} |")
        warnings = [f"- **warning** ({name}): {k['warning']}" for name, k in calibrated.items() if k["warning"]]
        lines += ["", *warnings, "" if warnings else "",
                  f"Reliability diagrams: `{report_figure('reliability', selected)}` (and the same for every model).",
                  ""]
    if report.get("robustness"):
        lines += robustness_lines(report["robustness"])
    return "\n".join(lines)


def robustness_lines(section: dict) -> list[str]:
    """summary.md's robustness table, from the report's "robustness" section (`models.robustness`)."""
    lines = [f"## Robustness (selected model, test fold {section['test_fold']}, {section['examples']} clips; "
             f"temperature {section['temperature']:.3f}, threshold {section['threshold']:.4f})", "",
             "| Condition | Accuracy | Δ vs clean | Macro-F1 | ECE raw → calibrated | Coverage | "
             "Precision of answers |",
             "|---|---|---|---|---|---|---|"]
    for name, r in section["conditions"].items():
        precision = "–" if r["answered_precision"] is None else f"{r['answered_precision']:.4f}"
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['delta_accuracy']:+.4f} | {r['macro_f1']:.4f} | "
                     f"{r['ece_before']:.4f} → {r['ece_after']:.4f} | {r['coverage']:.3f} | {precision} |")
    return lines + [""]
