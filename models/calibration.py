"""Calibration and the "undetermined" rule: temperature scaling, reliability, threshold choice.

Temperature scaling (Guo et al., 2017): one scalar T > 0, fitted on the VALIDATION fold by
minimising the negative log-likelihood of softmax(log p / T); T > 1 softens over-confident
answers, and the argmax (so the accuracy) never changes. The expected calibration error (ECE) is
the bin-weighted gap between confidence and accuracy over equal-width confidence bins
(`ECE_BINS`), reported before and after, with a reliability diagram.

The threshold of the "undetermined" rule (top probability below it → no answer) is chosen on
the calibrated validation probabilities for a stated target:

- `precision` (default 0.9): the smallest threshold at which the answered clips are correct at
  least that often (the largest coverage that meets the target). Where no threshold meets it, the
  one whose answered precision comes closest (the highest; ties: the larger coverage) — with
  `reached: false` and a warning that the report shows;
- `coverage`: the largest threshold that still answers at least that fraction of the clips.

`us8k evaluate` writes the result to RUN/calibration.json (`tfdata.layout.CALIBRATION_FILE`);
`us8k export` puts the temperature into
the serving graph and the threshold into metadata.json, the endpoint's default.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from models.figures import figure_png

ECE_BINS = 15
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
PROBABILITY_FLOOR = 1e-12
TARGETS = ("precision", "coverage")


def apply_temperature(probabilities, temperature: float) -> np.ndarray:
    """softmax(log p / T) per row (the same as dividing the logits by T)."""
    logp = np.log(np.maximum(np.asarray(probabilities, np.float64), PROBABILITY_FLOOR)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def nll(probabilities, labels) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.asarray(probabilities, np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.maximum(p, PROBABILITY_FLOOR)).mean())


def fit_temperature(probabilities, labels) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] minimising the NLL (bounded search over log T)."""
    result = minimize_scalar(lambda log_t: nll(apply_temperature(probabilities, np.exp(log_t)), labels),
                             bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)), method="bounded",
                             options={"xatol": 1e-4})
    best = float(np.exp(result.x))
    # never worse than no scaling (the bounded search could stop in a flat region)
    return best if nll(apply_temperature(probabilities, best), labels) <= nll(probabilities, labels) else 1.0


def reliability(probabilities, labels, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: its range, count, mean confidence and accuracy (None when empty)."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                    "confidence": float(confidence[inside].mean()) if n else None,
                    "accuracy": float(correct[inside].mean()) if n else None})
    return out


def ece(probabilities, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error: Σ_bins (n_b / N) · |accuracy_b − confidence_b|."""
    total = len(labels)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in reliability(probabilities, labels, bins) if b["count"]))


def choose_threshold(probabilities, labels, target: str = "precision", value: float = 0.9) -> dict:
    """The threshold for `target` (see the module docstring) on these (calibrated) probabilities."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"target value must be within [0, 1], got {value}")
    probabilities = np.asarray(probabilities)
    top = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    candidates = np.unique(np.concatenate([[0.0], top]))  # ascending; each answers top >= t
    rows = []
    for t in candidates:
        answered = top >= t
        n = int(answered.sum())
        rows.append((float(t), n / len(top), float(correct[answered].mean()) if n else None))
    if target == "precision":
        meeting = [r for r in rows if r[2] is not None and r[2] >= value]
        if meeting:
            t, coverage, precision = min(meeting, key=lambda r: r[0])
            reached = True
        else:
            t, coverage, precision = max((r for r in rows if r[2] is not None), key=lambda r: (r[2], r[1]))
            reached = False
    else:
        meeting = [r for r in rows if r[1] >= value]
        t, coverage, precision = max(meeting, key=lambda r: r[0])
        reached = True
    warning = None if reached else (f"no threshold reaches answered precision {value:g} on validation; "
                                    f"the closest, {t:.4f}, gives {precision:.4f} at coverage {coverage:.3f}")
    return {"target": target, "target_value": float(value), "threshold": float(t), "reached": reached,
            "validation_coverage": float(coverage), "validation_precision": precision, "warning": warning}


def calibrate(val_probabilities, val_labels, target: str = "precision", value: float = 0.9) -> dict:
    """Fit the temperature on validation, then choose the threshold there on the calibrated probabilities."""
    temperature = fit_temperature(val_probabilities, val_labels)
    calibrated = apply_temperature(val_probabilities, temperature)
    return {"temperature": temperature,
            **choose_threshold(calibrated, val_labels, target, value),
            "validation": {"examples": int(len(val_labels)),
                           "nll_before": nll(val_probabilities, val_labels), "nll_after": nll(calibrated, val_labels),
                           "ece_before": ece(val_probabilities, val_labels), "ece_after": ece(calibrated, val_labels),
                           "reliability_before": reliability(val_probabilities, val_labels),
                           "reliability_after": reliability(calibrated, val_labels)}}


def check_on(probabilities, labels, temperature: float, threshold: float) -> dict:
    """ECE before/after the temperature and the rule at `threshold` on other data (test, robustness)."""
    calibrated = apply_temperature(probabilities, temperature)
    answered = calibrated.max(axis=1) >= threshold
    correct = calibrated.argmax(axis=1) == np.asarray(labels)
    return {"examples": int(len(labels)), "ece_before": ece(probabilities, labels),
            "ece_after": ece(calibrated, labels),
            "nll_before": nll(probabilities, labels), "nll_after": nll(calibrated, labels),
            "threshold": float(threshold), "coverage": float(answered.mean()),
            "answered_precision": float(correct[answered].mean()) if answered.any() else None,
            "reliability_before": reliability(probabilities, labels),
            "reliability_after": reliability(calibrated, labels)}


def reliability_png(panels: list[tuple[str, list[dict], list[dict]]]) -> bytes:
    """Reliability diagrams, one panel per (title, bins before, bins after): accuracy against confidence."""
    def draw(*axes):
        for ax, (title, before, after) in zip(axes, panels):
            ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect")
            for bins, label, marker in ((before, "before", "o"), (after, "after T", "s")):
                xs = [b["confidence"] for b in bins if b["count"]]
                ys = [b["accuracy"] for b in bins if b["count"]]
                ax.plot(xs, ys, marker=marker, label=label)
            ax.set_xlabel("confidence (top probability)")
            ax.set_ylabel("accuracy")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_title(title)
            ax.legend(loc="upper left")
            ax.grid(alpha=0.3)

    return figure_png((4.5 * len(panels), 4.2), draw, panels=len(panels))
