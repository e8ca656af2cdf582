"""One clip → a serialised tf.train.Example, written without TensorFlow (numpy and the standard library).

The ingestion's workers only ever write Examples, so they need not import TensorFlow: its import
took ≈ 3 s of the job, under Python's import lock, in the first worker thread while the others
waited (a profile of `us8k ingest` showed it), and a Dataflow worker image without TensorFlow is
smaller. The Example's wire format is small and fixed (tensorflow/core/example/example.proto and
feature.proto):

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }        a map entry: { string key = 1; Feature value = 2; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   Int64List { repeated int64 value = 1 [packed = true]; }

Fields are length-delimited (wire type 2) except the packed int64 values, which are varints;
a negative int64 is its 64-bit two's complement as a 10-byte varint. tests/test_records.py checks
that TensorFlow parses these bytes into the same message as `tf.train.Example(...)` builds, and
that tf.data reads them.
"""
from __future__ import annotations

import numpy as np

from tfdata import contract as c
from tfdata.classes import MAX_CLASSES, check_class_name
from tfdata.pcm import waveform_to_pcm16
from tfdata.windowing import frame, valid_samples

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 → its unsigned 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return _varint((number << 3) | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def bytes_feature(value: bytes) -> bytes:
    """Feature{bytes_list: BytesList{value: [value]}}."""
    return _field(1, _field(1, bytes(value)))


def int64_feature(value: int) -> bytes:
    """Feature{int64_list: Int64List{value: [value]}} (packed)."""
    return _field(3, _field(1, _varint(int(value))))


def example(features: dict[str, bytes]) -> bytes:
    """{name: serialised Feature} → a serialised Example (entries in the dict's order)."""
    entries = b"".join(_field(1, _field(1, name.encode()) + _field(2, feature)) for name, feature in features.items())
    return _field(1, entries)


def serialize_clip(clip: np.ndarray, num_samples: int, *, label: int, class_name: str, fold: int, fsid: int,
                   slice_file_name: str, salience: int, window: int = 0, windows: int = 1) -> bytes:
    """One fixed-length clip (or window `window` of a clip's `windows`) and its metadata → a serialised
    tf.train.Example (the records' contract: tfdata.records.FEATURE_SPEC parses it). `class_name` is
    the collection's name of `label`."""
    if clip.shape != (c.CLIP_SAMPLES,):
        raise ValueError(f"clip must have shape ({c.CLIP_SAMPLES},), got {clip.shape}")
    if not 0 <= label < MAX_CLASSES:
        raise ValueError(f"label {label} outside 0..{MAX_CLASSES - 1}")
    if not 0 <= window < windows:
        raise ValueError(f"window {window} outside 0..{windows - 1}")
    return example({
        c.KEY_AUDIO: bytes_feature(waveform_to_pcm16(clip)),
        c.KEY_NUM_SAMPLES: int64_feature(num_samples),
        c.KEY_LABEL: int64_feature(label),
        c.KEY_CLASS: bytes_feature(check_class_name(class_name).encode()),
        c.KEY_FOLD: int64_feature(fold),
        c.KEY_FSID: int64_feature(fsid),
        c.KEY_FILE: bytes_feature(slice_file_name.encode()),
        c.KEY_SALIENCE: int64_feature(salience),
        **({c.KEY_WINDOW: int64_feature(window), c.KEY_WINDOWS: int64_feature(windows)} if windows > 1 else {}),
    })


def serialize_clip_windows(waveform: np.ndarray, **metadata) -> list[bytes]:
    """A whole clip (1-D, any length) → its serialised Examples: one zero-padded record up to 4 s, else one
    per window (tfdata.windowing: 4 s every 2 s, the last zero padded), each with its index and count.
    `metadata`: serialize_clip's keywords (label, class_name, fold, fsid, slice_file_name, salience)."""
    windows, valid = frame(waveform), valid_samples(waveform.shape[0])
    return [serialize_clip(window, int(n), window=i, windows=len(windows), **metadata)
            for i, (window, n) in enumerate(zip(windows, valid))]
