"""float waveforms ↔ 16-bit PCM: the one scale shared by ingestion, the SageMaker handler and the graph.

Ingestion stores each clip as little-endian int16 bytes (`tfdata.records`), the handler sends
windows to TF Serving the same way, and the SavedModel's windows signature and the records parser
divide by the same `PCM_SCALE`. numpy only: the SageMaker handler ships it in `code/lib/tfdata/`.
"""
from __future__ import annotations

import numpy as np

PCM_SCALE = 32767.0  # float [-1, 1] ↔ int16 [-32767, 32767]
PCM_DTYPE = np.dtype("<i2")  # little-endian int16, whatever the machine's byte order
PCM_BYTES_PER_SAMPLE = PCM_DTYPE.itemsize


def to_pcm16(waveform: np.ndarray) -> np.ndarray:
    """float [-1, 1] → little-endian int16 (rounded to nearest; values beyond ±1 are clipped)."""
    return np.round(np.clip(waveform, -1.0, 1.0) * PCM_SCALE).astype(PCM_DTYPE)


def waveform_to_pcm16(waveform: np.ndarray) -> bytes:
    """float [-1, 1] → little-endian int16 bytes (values beyond ±1 are clipped)."""
    return to_pcm16(waveform).tobytes()


def pcm16_to_waveform(pcm: bytes | np.ndarray) -> np.ndarray:
    """Little-endian int16 bytes (or an int16 array) → float32 / PCM_SCALE, as the graph decodes them."""
    samples = np.frombuffer(pcm, dtype=PCM_DTYPE) if isinstance(pcm, (bytes, bytearray, memoryview)) else pcm
    return (np.asarray(samples, dtype=np.float32) / np.float32(PCM_SCALE)).astype(np.float32)


def quantize(waveform: np.ndarray) -> np.ndarray:
    """The float32 waveform the model sees after a PCM round trip: pcm16_to_waveform(to_pcm16(x))."""
    return pcm16_to_waveform(to_pcm16(waveform))
