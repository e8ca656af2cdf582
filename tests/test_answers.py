"""tfdata.answers: predictions, the per-window timeline and event segments (pure functions)."""
import subprocess
import sys

import numpy as np
import pytest

from tfdata.answers import Segment, prediction, segments, timeline, window_labels
from tfdata.contract import UNDETERMINED, URBANSOUND8K_CLASSES

NAMES = URBANSOUND8K_CLASSES  # any class list: UrbanSound8K's, as the rows below

pytestmark = pytest.mark.timeout(60)


def rows(*labels_and_confidences):
    """One window row per (class index or None, top probability); the rest spread evenly."""
    out = []
    for label, top in labels_and_confidences:
        row = np.full(len(NAMES), (1.0 - top) / (len(NAMES) - 1))
        row[0 if label is None else label] = top
        out.append(row)
    return np.array(out)


def test_prediction_and_threshold():
    row = rows((3, 0.7))[0]
    answer = prediction(row, NAMES, 0.6)
    assert answer["label"] == "dog_bark" and answer["confidence"] == pytest.approx(0.7) and not answer["undetermined"]
    assert prediction(row, NAMES, 0.71)["label"] == UNDETERMINED
    with pytest.raises(ValueError, match="expected 10 probabilities"):
        prediction(row[:3], NAMES, 0.6)


def test_segments_merge_runs_of_one_confident_label():
    windows = rows((8, 0.9), (8, 0.7), (8, 0.8), (None, 0.3), (3, 0.65), (3, 0.75), (1, 0.95))
    found = segments(windows, NAMES, threshold=0.6, hop_seconds=2.0, window_seconds=4.0)
    assert found == [Segment(0.0, 8.0, "siren", 0.8), Segment(8.0, 14.0, "dog_bark", 0.7),
                     Segment(12.0, 16.0, "car_horn", 0.95)]
    assert [label for label, _ in window_labels(windows, NAMES, 0.6)][3] == UNDETERMINED


def test_segments_end_at_the_duration_and_skip_undetermined():
    windows = rows((5, 0.9), (5, 0.9), (5, 0.9))  # a 9 s clip: windows at 0, 2, 4 s
    assert segments(windows, NAMES, duration_s=9.0) == [Segment(0.0, 8.0, "engine_idling", 0.9)]
    assert segments(windows, NAMES, duration_s=7.5) == [Segment(0.0, 7.5, "engine_idling", 0.9)]
    assert segments(rows((5, 0.9)), NAMES, duration_s=1.25) == [Segment(0.0, 1.25, "engine_idling", 0.9)]
    assert segments(rows((2, 0.5), (2, 0.5)), NAMES, threshold=0.6) == []
    assert segments(np.zeros((0, len(NAMES))), NAMES) == []
    with pytest.raises(ValueError, match="window rows"):
        segments(np.zeros((3, 4)), NAMES)


def test_answers_name_the_classes_of_any_list():
    """Three classes of another collection: the labels are theirs, and a class list is never assumed."""
    names = ("bell", "hum", "chirp")
    windows = np.array([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])
    assert prediction(windows[0], names, 0.6)["label"] == "hum"
    assert segments(windows, names, threshold=0.6) == [Segment(0.0, 6.0, "hum", 0.75), Segment(4.0, 8.0, "chirp", 0.7)]
    with pytest.raises(TypeError):  # no default list
        prediction(windows[0])


def test_timeline():
    windows = rows((8, 0.9), (None, 0.3))
    line = timeline(windows, NAMES, 0.6, 2.0)
    assert [(w["start_s"], w["label"]) for w in line] == [(0.0, "siren"), (2.0, UNDETERMINED)]
    assert set(line[0]) == {"start_s", "label", "confidence", "probabilities", "undetermined"}
    assert "probabilities" not in timeline(windows, NAMES, with_probabilities=False)[0]


def test_numpy_and_stdlib_only():
    code = ("import sys, tfdata.answers; bad = [m for m in ('tensorflow', 'apache_beam', 'serving') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
