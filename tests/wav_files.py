"""Audio files as bytes for the tests: the one encoder (soundfile, in memory) the test files share."""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def encode(samples, rate: int, fmt: str = "WAV", subtype: str = "PCM_16", **options) -> bytes:
    """`samples` (float [frames] or [frames, channels]) at `rate` Hz as a file in `fmt`/`subtype`
    (`options`: soundfile.write's others, e.g. endian)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples), rate, format=fmt, subtype=subtype, **options)
    return buffer.getvalue()


def duration(data: bytes) -> float:
    """Seconds of audio the file `data` holds (its header's frames / rate)."""
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate
