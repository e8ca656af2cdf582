"""Answers from probabilities: one prediction, a per-window timeline, and event segments.

A model answers a clip with one probability row per 4 s window (every 2 s) and their mean. Averaged
over a 10-minute street recording one label says little, so a long answer also gets its timeline
(each window's start second, label and confidence) and its *event segments*: runs of consecutive
windows with the same confident label, merged into (start, end, label, confidence). A window whose
top probability is below the threshold is "undetermined": it is in the timeline but ends a run and
is in no segment. A segment spans its first window's start to its last window's end (start + 4 s,
capped at the clip's duration when known), so two adjacent segments of different labels overlap by
the windows' overlap (2 s); its confidence is the mean, over its windows, of its label's probability.

Pure Python and numpy: the serving handlers (`serving.inference`, shipped to the SageMaker container
in `code/lib/tfdata/`) and a batch (Beam) job can both import it.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tfdata.contract import CLASS_NAMES, CLIP_SAMPLES, DEFAULT_THRESHOLD, SAMPLE_RATE, UNDETERMINED, WINDOW_HOP_SAMPLES

DECIMALS = 6  # probabilities and confidences in answers
TIME_DECIMALS = 3  # seconds in answers
WINDOW_SECONDS = CLIP_SAMPLES / SAMPLE_RATE  # 4.0
HOP_SECONDS = WINDOW_HOP_SAMPLES / SAMPLE_RATE  # 2.0


class Segment(NamedTuple):
    start_s: float
    end_s: float
    label: str
    confidence: float

    def to_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "label": self.label, "confidence": self.confidence}


def prediction(probabilities: Sequence[float], class_names: Sequence[str] = CLASS_NAMES,
               threshold: float = DEFAULT_THRESHOLD) -> dict:
    """One probability row → {"label", "confidence", "probabilities": {class: p}, "undetermined"}:
    the label is UNDETERMINED when the top probability is below `threshold`."""
    row = [float(p) for p in probabilities]
    if len(row) != len(class_names) or not row:
        raise ValueError(f"expected {len(class_names)} probabilities, got {len(row)}")
    top = max(range(len(row)), key=row.__getitem__)
    confidence = row[top]
    undetermined = confidence < threshold
    return {"label": UNDETERMINED if undetermined else class_names[top],
            "confidence": confidence,
            "probabilities": dict(zip(class_names, row)),
            "undetermined": undetermined}


def window_labels(window_probabilities, class_names: Sequence[str] = CLASS_NAMES,
                  threshold: float = DEFAULT_THRESHOLD) -> list[tuple[str, float]]:
    """[K, C] rows → each window's (label or UNDETERMINED, top probability)."""
    rows = _rows(window_probabilities, class_names)
    if rows.shape[0] == 0:
        return []
    top = rows.argmax(axis=1)
    confidence = rows[np.arange(rows.shape[0]), top]
    return [(UNDETERMINED if c < threshold else class_names[t], float(c)) for t, c in zip(top.tolist(), confidence)]


def timeline(window_probabilities, class_names: Sequence[str] = CLASS_NAMES, threshold: float = DEFAULT_THRESHOLD,
             hop_seconds: float = HOP_SECONDS, *, with_probabilities: bool = True) -> list[dict]:
    """[K, C] rows → [{"start_s", "label", "confidence", "undetermined"[, "probabilities"]}] per window."""
    rows = np.round(_rows(window_probabilities, class_names), DECIMALS)
    out = []
    for k, row in enumerate(rows.tolist()):
        entry = {"start_s": round(k * hop_seconds, TIME_DECIMALS), **prediction(row, class_names, threshold)}
        if not with_probabilities:
            del entry["probabilities"]
        out.append(entry)
    return out


def segments(window_probabilities, class_names: Sequence[str] = CLASS_NAMES, threshold: float = DEFAULT_THRESHOLD,
             hop_seconds: float = HOP_SECONDS, window_seconds: float = WINDOW_SECONDS,
             duration_s: float | None = None) -> list[Segment]:
    """[K, C] window rows of one clip → its event segments (see the module's docstring), in time order."""
    rows = _rows(window_probabilities, class_names)
    labels = window_labels(rows, class_names, threshold)
    found: list[Segment] = []
    k = 0
    while k < len(labels):
        label = labels[k][0]
        if label == UNDETERMINED:
            k += 1
            continue
        end = k
        while end + 1 < len(labels) and labels[end + 1][0] == label:
            end += 1
        column = list(class_names).index(label)
        confidence = float(rows[k:end + 1, column].mean())
        stop = end * hop_seconds + window_seconds
        if duration_s is not None:
            stop = min(stop, max(float(duration_s), k * hop_seconds))
        found.append(Segment(round(k * hop_seconds, TIME_DECIMALS), round(stop, TIME_DECIMALS), label,
                             round(confidence, DECIMALS)))
        k = end + 1
    return found


def _rows(window_probabilities, class_names: Sequence[str]) -> np.ndarray:
    rows = np.asarray(window_probabilities, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(class_names):
        raise ValueError(f"expected window rows [windows, {len(class_names)}], got shape {rows.shape}")
    return rows
