"""Answers from probabilities: one prediction, a per-window timeline, and event segments.

A model answers a clip with one probability row per 4 s window (every 2 s) and their mean. Averaged
over a 10-minute street recording one label says little, so a long answer also gets its timeline
(each window's start second, label and confidence) and its *event segments*: runs of consecutive
windows with the same confident label, merged into (start, end, label, confidence). A window whose
top probability is below the threshold is "undetermined": it is in the timeline but ends a run and
is in no segment. A segment spans its first window's start to its last window's end (start + 4 s,
capped at the clip's duration when known), so two adjacent segments of different labels overlap by
the windows' overlap (2 s); its confidence is the mean, over its windows, of its label's probability.

The threshold rule lives here too (`answer_config`): the threshold asked for (an endpoint's
`--threshold` or a request's, a labelling job's `--threshold`), else the exported model's calibrated
one (metadata.json's "threshold"), else the contract's DEFAULT_THRESHOLD; and `answers_from_outputs`
turns the serving signature's outputs into the answers the endpoint sends and `us8k label` writes.
The class names are always the exported model's (metadata.json's "class_names", label order), never a
default: every export has written them since the first, so metadata without them is refused.

Pure Python and numpy: the serving handlers (`serving.inference`, shipped to the SageMaker container
in `code/lib/tfdata/`) and the batch labelling job (`beam.label`) both import it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from tfdata.classes import check_class_names
from tfdata.contract import CLIP_SAMPLES, DEFAULT_THRESHOLD, SAMPLE_RATE, UNDETERMINED, WINDOW_HOP_SAMPLES

DECIMALS = 6  # probabilities and confidences in answers
TIME_DECIMALS = 3  # seconds in answers
WINDOW_SECONDS = CLIP_SAMPLES / SAMPLE_RATE  # 4.0
HOP_SECONDS = WINDOW_HOP_SAMPLES / SAMPLE_RATE  # 2.0


class AnswerConfig(NamedTuple):
    """What answers need from the exported model: its class names (label order), threshold, window hop
    (seconds). A NamedTuple: the SageMaker handler is imported without a sys.modules entry, where a
    dataclass with string annotations cannot be built (serving.inference)."""
    class_names: tuple[str, ...]
    threshold: float = DEFAULT_THRESHOLD
    window_hop_seconds: float = HOP_SECONDS


def check_threshold(value: Any, error=ValueError) -> float:
    """`value` as a float in [0, 1], else `error(message)` is raised."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise error(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)


def answer_config(metadata: Mapping[str, Any] | None, threshold: float | None = None) -> AnswerConfig:
    """An export's metadata.json content (None: there is none) → AnswerConfig. The class names are the
    model's ("class_names"); the threshold is `threshold` when given, else the model's own
    ("threshold"), else DEFAULT_THRESHOLD. ValueError in one line when the metadata is missing, lacks
    class_names or holds an invalid list, when the model expects another sample rate than the
    contract's, or when a threshold is outside [0, 1]."""
    if not isinstance(metadata, Mapping):
        raise ValueError("the model has no metadata.json, so its class names are unknown (every export writes "
                         "EXPORT/metadata.json beside model/; serve the export directory or its model.tar.gz)")
    rate = int(metadata.get("sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE:
        raise ValueError(f"model expects {rate} Hz audio, this code prepares {SAMPLE_RATE} Hz")
    if "class_names" not in metadata:
        raise ValueError("the model's metadata.json lacks class_names (the model's class list, which every "
                         "export of this project writes)")
    try:
        class_names = check_class_names(metadata["class_names"])
    except ValueError as error:
        raise ValueError(f"the model's metadata.json class_names: {error}") from None
    if metadata.get("num_classes", len(class_names)) != len(class_names):
        raise ValueError(f"the model's metadata.json says num_classes {metadata['num_classes']} but lists "
                         f"{len(class_names)} class_names")
    hop_samples = int(metadata.get("window_hop_samples", WINDOW_HOP_SAMPLES))
    model_threshold = metadata.get("threshold")
    chosen = threshold if threshold is not None else (
        model_threshold if model_threshold is not None else DEFAULT_THRESHOLD)
    return AnswerConfig(class_names, check_threshold(chosen), hop_samples / SAMPLE_RATE)


def answers_from_outputs(probabilities, window_probabilities, window_count, *,
                         config: AnswerConfig, threshold: float | None = None,
                         windows: bool = False, durations: Sequence[float] | None = None) -> list[dict]:
    """The serving signature's outputs ([n, C] mean, [n, W, C] windows, [n] window counts) → one
    answer per row (`prediction`, probabilities rounded to DECIMALS); `threshold` overrides the
    config's. With `windows` each also gets its per-window timeline ("windows") and event segments
    ("segments"), whose last end is capped at the row's duration in seconds when `durations` gives it."""
    threshold = config.threshold if threshold is None else threshold
    probabilities = np.round(np.asarray(probabilities, dtype=np.float64), DECIMALS)
    found = [prediction(row, config.class_names, threshold) for row in probabilities.tolist()]
    if windows:
        window_probabilities = np.asarray(window_probabilities, dtype=np.float64)
        for i, (answer, count) in enumerate(zip(found, np.asarray(window_count).tolist())):
            rows = window_probabilities[i, :int(count)]
            answer["windows"] = timeline(rows, config.class_names, threshold, config.window_hop_seconds)
            answer["segments"] = [s.to_dict() for s in segments(
                rows, config.class_names, threshold, config.window_hop_seconds,
                duration_s=None if durations is None else durations[i])]
    return found


class Segment(NamedTuple):
    start_s: float
    end_s: float
    label: str
    confidence: float

    def to_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "label": self.label, "confidence": self.confidence}


def prediction(probabilities: Sequence[float], class_names: Sequence[str],
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


def window_labels(window_probabilities, class_names: Sequence[str],
                  threshold: float = DEFAULT_THRESHOLD) -> list[tuple[str, float]]:
    """[K, C] rows → each window's (label or UNDETERMINED, top probability)."""
    rows = _rows(window_probabilities, class_names)
    if rows.shape[0] == 0:
        return []
    top = rows.argmax(axis=1)
    confidence = rows[np.arange(rows.shape[0]), top]
    return [(UNDETERMINED if c < threshold else class_names[t], float(c)) for t, c in zip(top.tolist(), confidence)]


def timeline(window_probabilities, class_names: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
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


def segments(window_probabilities, class_names: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
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
