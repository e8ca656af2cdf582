"""Rows of different lengths as one model input: zero padding plus each row's valid length.

The serving signature takes `waveform` [batch, samples] and `lengths` [batch]; this builds both.
numpy only: the SageMaker handler ships it in `code/lib/tfdata/`.
"""
from __future__ import annotations

import numpy as np


def pad_batch(waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms of any lengths → (batch float32 [n, longest] zero-padded, lengths int32 [n])."""
    lengths = np.array([w.shape[0] for w in waveforms], dtype=np.int32)
    batch = np.zeros((len(waveforms), int(lengths.max())), dtype=np.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, :waveform.shape[0]] = waveform
    return batch, lengths
