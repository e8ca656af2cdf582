"""Long audio as model windows: 4 s (CLIP_SAMPLES) windows every 2 s (WINDOW_HOP_SAMPLES), zero padded.

A clip of n samples gives k = 1 + ceil(max(0, n - CLIP_SAMPLES) / WINDOW_HOP_SAMPLES) windows; the
last one (or the only one, for a clip shorter than 4 s) is zero padded, as in ingestion. The
SavedModel's `serving_default` cuts windows in the graph with the same arithmetic (`window_counts`
and `padded_length` take TensorFlow tensors too); the SageMaker handler cuts them here, so TF
Serving receives fixed-shape rows it can batch across requests, and averages each clip's windows
with `average_windows`; each window's count of real (not padding) samples travels with it, from
which `clip_lengths` gives each clip's length back. The local endpoint's batcher and the batch
labelling job cut model calls of at most N windows out of several clips with `window_index` and
`fill_windows` (the rows `frame` gives, a call's worth at a time, never a whole long clip framed).
numpy only: the handler ships it in `code/lib/tfdata/`.
"""
from __future__ import annotations

import numpy as np

from tfdata.contract import CLIP_SAMPLES, WINDOW_HOP_SAMPLES


def window_counts(lengths, maximum=np.maximum):
    """Windows per clip of `lengths` samples (int or array; `maximum=tf.maximum` for tensors)."""
    excess = maximum(lengths - CLIP_SAMPLES, 0)
    return 1 + (excess + WINDOW_HOP_SAMPLES - 1) // WINDOW_HOP_SAMPLES


def window_count(num_samples: int) -> int:
    """Windows of one clip of `num_samples` samples (0 samples: one window of silence)."""
    return int(window_counts(int(num_samples)))


def padded_length(count):
    """Samples covered by `count` windows: CLIP_SAMPLES + (count - 1) · WINDOW_HOP_SAMPLES (≥ the clip)."""
    return CLIP_SAMPLES + (count - 1) * WINDOW_HOP_SAMPLES


def frame(waveform: np.ndarray) -> np.ndarray:
    """One clip (1-D, any dtype) → its windows [k, CLIP_SAMPLES], zero padded at the end."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {waveform.shape}")
    count = window_count(waveform.shape[0])
    padded = np.zeros(padded_length(count), dtype=waveform.dtype)
    padded[:waveform.shape[0]] = waveform
    starts = np.arange(count) * WINDOW_HOP_SAMPLES
    return padded[starts[:, None] + np.arange(CLIP_SAMPLES)]


def window_index(lengths) -> tuple[np.ndarray, np.ndarray]:
    """Clips of `lengths` samples → for every window, clip after clip: its clip (int [N]) and its
    first sample in that clip (int [N])."""
    counts = [window_count(n) for n in lengths]
    clip_of = np.repeat(np.arange(len(counts)), counts)
    starts = [np.arange(c) * WINDOW_HOP_SAMPLES for c in counts]
    start_of = np.concatenate(starts) if starts else np.zeros((0,), np.int64)
    return clip_of, start_of


def fill_windows(out: np.ndarray, waveforms, clip_of, start_of) -> None:
    """Row i of `out` [len(clip_of), CLIP_SAMPLES] ← window (clip_of[i], start_of[i]) of `waveforms`,
    zero past its clip's end: `frame`'s rows for any selection of windows."""
    out[:] = 0.0
    for row, (clip, start) in enumerate(zip(np.asarray(clip_of).tolist(), np.asarray(start_of).tolist())):
        piece = waveforms[clip][start:start + CLIP_SAMPLES]
        out[row, :piece.shape[0]] = piece


def valid_samples(num_samples: int) -> np.ndarray:
    """The clip's samples in each of its windows (int32 [k]): CLIP_SAMPLES, but fewer in the last."""
    starts = np.arange(window_count(num_samples)) * WINDOW_HOP_SAMPLES
    return np.clip(int(num_samples) - starts, 0, CLIP_SAMPLES).astype(np.int32)


def frame_clips(waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clips → (every clip's windows [N, CLIP_SAMPLES] in clip order, clip index int32 [N], each
    window's valid samples int32 [N])."""
    framed = [frame(w) for w in waveforms]
    windows = np.concatenate(framed) if framed else np.zeros((0, CLIP_SAMPLES), np.float32)
    clip_index = np.repeat(np.arange(len(framed), dtype=np.int32), [f.shape[0] for f in framed])
    valid = np.concatenate([valid_samples(np.asarray(w).shape[0]) for w in waveforms]) if framed \
        else np.zeros((0,), np.int32)
    return windows, clip_index, valid


def clip_lengths(clip_index: np.ndarray, valid: np.ndarray, num_clips: int | None = None) -> np.ndarray:
    """Each clip's length in samples from its windows' clip index and valid samples (in order):
    its last window's start plus that window's valid samples."""
    clip_index = np.asarray(clip_index, dtype=np.int64)
    valid = np.asarray(valid, dtype=np.int64)
    if valid.shape != clip_index.shape:
        raise ValueError(f"expected one valid-sample count per window, got {valid.shape} for {clip_index.shape}")
    num_clips = int(clip_index.max()) + 1 if num_clips is None and clip_index.size else int(num_clips or 0)
    counts = np.bincount(clip_index, minlength=num_clips)
    if counts.shape[0] != num_clips or (counts == 0).any():
        raise ValueError(f"every clip 0..{num_clips - 1} needs at least one window, got counts {counts.tolist()}")
    last = np.argsort(clip_index, kind="stable")[np.cumsum(counts) - 1]  # each clip's last window
    return (counts - 1) * WINDOW_HOP_SAMPLES + valid[last]


def average_windows(window_probabilities: np.ndarray, clip_index: np.ndarray,
                    num_clips: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-window rows [N, C] and their clip index [N] → per clip: (mean [n, C], windows [n, K, C]
    zero past a clip's own, count [n]) — the serving signature's outputs, in float64.

    Windows keep their order within a clip; every clip 0..n-1 must have at least one window."""
    window_probabilities = np.asarray(window_probabilities, dtype=np.float64)
    clip_index = np.asarray(clip_index, dtype=np.int64)
    if window_probabilities.ndim != 2 or clip_index.shape != (window_probabilities.shape[0],):
        raise ValueError(f"expected rows [N, classes] and clip indices [N], got {window_probabilities.shape} "
                         f"and {clip_index.shape}")
    if clip_index.size and clip_index.min() < 0:
        raise ValueError("clip indices must not be negative")
    num_clips = int(clip_index.max()) + 1 if num_clips is None and clip_index.size else int(num_clips or 0)
    counts = np.bincount(clip_index, minlength=num_clips)
    if counts.shape[0] != num_clips or (counts == 0).any():
        raise ValueError(f"every clip 0..{num_clips - 1} needs at least one window, got counts {counts.tolist()}")
    classes = window_probabilities.shape[1]
    order = np.argsort(clip_index, kind="stable")  # windows grouped by clip, in their original order
    rows, positions = clip_index[order], np.arange(clip_index.size) - np.repeat(np.cumsum(counts) - counts, counts)
    windows = np.zeros((num_clips, int(counts.max(initial=0)), classes))
    windows[rows, positions] = window_probabilities[order]
    mean = windows.sum(axis=1) / np.maximum(counts, 1)[:, None]
    return mean, windows, counts.astype(np.int32)
