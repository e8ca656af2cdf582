"""Audio decoding shared by ingestion and serving: file or bytes → mono float32 at 22050 Hz.

libsndfile (soundfile) first; PyAV (FFmpeg), when it is installed, for what libsndfile cannot
read (M4A/AAC, WavPack, MP3 variants…). PyAV is optional: the SageMaker package leaves it (and its
≈ 70 MB of FFmpeg) out, and there input libsndfile cannot read raises `UnsupportedAudioError`
(the handler's 415) naming the formats it reads. Any channel count is downmixed, any rate resampled with soxr, the
full length is kept. `fit_to_length` (zero-pad / crop to one 4 s clip) is for ingestion only.
Every way a clip can be unusable raises `AudioDecodeError` with the reason. No TensorFlow here.

Bounded work: both decoders read in blocks (≤ BLOCK_SAMPLES source samples), downmix each block
and feed soxr's streaming resampler, which gives bit for bit what one `soxr.resample` call on the
whole signal gives. So memory follows the output, not the source's rate or channel count; a
source rate outside MIN_SOURCE_RATE..MAX_SOURCE_RATE is refused before any decoding;
`decode_audio(..., max_seconds=S)` refuses (`AudioTooLongError`) a container that declares more
than S seconds before decoding anything, and stops decoding once S seconds are passed when the
declared length is missing or wrong; `decode_head` (ingestion) decodes only the first seconds it
keeps plus HEAD_MARGIN_SECONDS for the resampler, and equals the full decode's first samples exactly.
"""
from __future__ import annotations

import contextlib
import io
import os
import struct

import numpy as np
import soundfile as sf
import soxr

from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE

RESAMPLE_QUALITY = "HQ"  # soxr quality, the same for ingestion and serving (no train/serve skew)


# What libsndfile 1.2 (bundled in soundfile 0.14's wheels) reads, for messages when PyAV is missing.
LIBSNDFILE_FORMATS = "WAV, FLAC, OGG (Vorbis, Opus) and MP3"


class AudioDecodeError(ValueError):
    """The input cannot be turned into a waveform; the message says why."""


class AudioTooLongError(AudioDecodeError):
    """The input holds (or declares) more than the `max_seconds` asked for."""

    def __init__(self, seconds: float | None, max_seconds: float):
        held = f"{seconds:.1f} s of audio" if seconds is not None else f"more than {max_seconds:g} s of audio"
        super().__init__(f"{held}; the limit is {max_seconds:g} s")
        self.seconds, self.max_seconds = seconds, max_seconds


class UnsupportedAudioError(AudioDecodeError):
    """libsndfile cannot read the input and PyAV (FFmpeg) is not installed to try: a format this
    environment does not decode, or not audio at all (without FFmpeg the two look alike)."""


Source = str | os.PathLike | bytes | bytearray | memoryview

MIN_SOURCE_RATE = 1_000  # Hz: a declared rate outside this range is refused before decoding
MAX_SOURCE_RATE = 384_000
BLOCK_SAMPLES = 1 << 20  # source samples (frames × channels) decoded, downmixed and resampled at a time
HEAD_MARGIN_SECONDS = 0.5  # decoded past a head so the resampler's filter sees what the full decode sees
_UNKNOWN_FRAMES = 1 << 62  # libsndfile's SF_COUNT_MAX and the like: no declared length


def decode_audio(source: Source, sample_rate: int = SAMPLE_RATE, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode a file path or encoded bytes to mono float32 at `sample_rate`, full length.

    With `max_seconds`, more audio than that raises `AudioTooLongError`: before decoding when the
    container declares its length, else as soon as decoding passes the limit."""
    return _decode(source, sample_rate, max_seconds=max_seconds, head_seconds=None)


def decode_head(source: Source, seconds: float = CLIP_SAMPLES / SAMPLE_RATE,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first `seconds` of the input (all of it when shorter), mono float32 at `sample_rate`:
    exactly `decode_audio(source)[:round(seconds * sample_rate)]`, decoding only that much of the
    source plus HEAD_MARGIN_SECONDS (the resampler's filter reaches a few ms ahead)."""
    waveform = _decode(source, sample_rate, max_seconds=None, head_seconds=seconds)
    return waveform[:int(round(seconds * sample_rate))]


def check_source_rate(rate) -> int:
    """A source sample rate as an int, or AudioDecodeError when outside MIN_SOURCE_RATE..MAX_SOURCE_RATE."""
    if not rate or rate != rate or not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise AudioDecodeError(f"sample rate {rate} Hz is outside {MIN_SOURCE_RATE}..{MAX_SOURCE_RATE} Hz")
    return int(rate)


def _decode(source: Source, sample_rate: int, *, max_seconds: float | None, head_seconds: float | None) -> np.ndarray:
    data = _read_bytes(source)
    if not data:
        raise AudioDecodeError("empty input (0 bytes)")
    _check_riff_complete(data)
    limits = dict(sample_rate=sample_rate, max_seconds=max_seconds, head_seconds=head_seconds)
    try:
        return _decode_soundfile(data, **limits)
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_error:
        av = _import_pyav()
        if av is None:
            raise UnsupportedAudioError(
                f"libsndfile cannot read this input ({_one_line(sf_error)}) and FFmpeg (PyAV) is not "
                f"installed here: send {LIBSNDFILE_FORMATS}") from None
        try:
            return _decode_pyav(data, av, **limits)
        except AudioDecodeError:
            raise
        except Exception as av_error:  # PyAV raises many FFmpeg error types
            raise AudioDecodeError(
                f"not decodable audio (libsndfile: {_one_line(sf_error)}; FFmpeg: {_one_line(av_error)})"
            ) from None


def _stream(blocks, rate: int, channels: int, declared_frames: int | None, *, sample_rate: int,
            max_seconds: float | None, head_seconds: float | None) -> np.ndarray:
    """Source blocks (frames, channels) float32 → mono at `sample_rate`: each block checked,
    downmixed and fed to soxr's streaming resampler (bit-exact with one soxr.resample call)."""
    rate = check_source_rate(rate)
    if channels < 1:
        raise AudioDecodeError(f"invalid channel count {channels}")
    max_frames = None if max_seconds is None else int(max_seconds * rate)
    if max_frames is not None and declared_frames is not None and declared_frames > max_frames:
        raise AudioTooLongError(declared_frames / rate, max_seconds)
    head_frames = None if head_seconds is None else int(head_seconds * rate) + int(HEAD_MARGIN_SECONDS * rate) + 1
    resampler = None if rate == sample_rate else soxr.ResampleStream(
        rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    expected = None if declared_frames is None else -(-declared_frames * sample_rate // rate)
    if head_frames is not None and expected is not None:
        expected = min(expected, -(-head_frames * sample_rate // rate))
    out = _Output(expected)
    consumed = 0
    for block in blocks:
        if block.shape[0] == 0:
            continue
        consumed += block.shape[0]
        if max_frames is not None and consumed > max_frames:
            raise AudioTooLongError(None, max_seconds)
        if not np.isfinite(block).all():
            raise AudioDecodeError("audio contains NaN or Inf samples")
        mono = np.ascontiguousarray(to_mono(block), dtype=np.float32)
        out.append(mono if resampler is None else resampler.resample_chunk(mono))
        if head_frames is not None and consumed >= head_frames:
            break
    if consumed == 0:
        raise AudioDecodeError("no audio samples (zero-length clip)")
    if resampler is not None:
        out.append(resampler.resample_chunk(np.zeros((0,), np.float32), last=True))
    out = out.result()
    if out.size == 0:
        raise AudioDecodeError(f"clip too short to resample from {rate} Hz ({consumed} samples)")
    return out.astype(np.float32, copy=False)


class _Output:
    """Resampled pieces gathered in one buffer of the expected size when the length is declared
    (no second copy of the waveform to concatenate them), else in a list."""

    def __init__(self, expected: int | None):
        self._buffer = None if expected is None else np.empty((expected + 16,), np.float32)
        self._size = 0
        self._pieces: list[np.ndarray] = []

    def append(self, piece: np.ndarray) -> None:
        if self._buffer is not None and self._size + piece.shape[0] <= self._buffer.shape[0]:
            self._buffer[self._size:self._size + piece.shape[0]] = piece
            self._size += piece.shape[0]
            return
        if self._buffer is not None:  # longer than declared: go on in pieces
            self._pieces.append(self._buffer[:self._size])
            self._buffer = None
        self._pieces.append(np.array(piece, dtype=np.float32, copy=True))

    def result(self) -> np.ndarray:
        if self._buffer is not None:
            return self._buffer[:self._size]
        if len(self._pieces) == 1:
            return self._pieces[0]
        return np.concatenate(self._pieces) if self._pieces else np.zeros((0,), np.float32)


def _block_frames(channels: int) -> int:
    return max(1024, BLOCK_SAMPLES // max(1, channels))


def prepare_waveform(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Validate decoded samples (frames[, channels]), downmix to mono and resample."""
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise AudioDecodeError(f"expected samples shaped (frames,) or (frames, channels), got {samples.shape}")
    if samples.shape[0] == 0 or samples.size == 0:
        raise AudioDecodeError("no audio samples (zero-length clip)")
    rate = check_source_rate(rate)
    if not np.isfinite(samples).all():
        raise AudioDecodeError("audio contains NaN or Inf samples")
    mono = to_mono(samples.astype(np.float32, copy=False))
    return resample(mono, int(rate), sample_rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) → (frames,): the channels' mean, summed column by column in float32 ufuncs
    (numpy runs them outside the GIL, so decoding threads overlap; `mean(axis=1)` over a short axis
    is ~40× slower and a BLAS matmul held the threads to 1.28× on two cores)."""
    if samples.ndim == 1:
        return samples
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    mono = np.add(samples[:, 0], samples[:, 1], dtype=np.float32)
    for k in range(2, channels):
        mono += samples[:, k]
    mono *= np.float32(1.0 / channels)
    return mono


def resample(mono: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 signal with soxr (identity when the rates match)."""
    if rate == sample_rate:
        return np.ascontiguousarray(mono, dtype=np.float32)
    out = soxr.resample(mono, rate, sample_rate, quality=RESAMPLE_QUALITY)
    if out.size == 0:
        raise AudioDecodeError(f"clip too short to resample from {rate} Hz ({mono.size} samples)")
    return out.astype(np.float32, copy=False)


def fit_to_length(waveform: np.ndarray, length: int = CLIP_SAMPLES) -> tuple[np.ndarray, int]:
    """Zero-pad or crop to `length` samples; returns (clip, valid samples before padding)."""
    valid = min(int(waveform.shape[0]), length)
    clip = np.zeros((length,), dtype=np.float32)
    clip[:valid] = waveform[:valid]
    return clip, valid


def _read_bytes(source: Source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _sound_file(data: bytes):
    """libsndfile open on the bytes. On Linux through an anonymous in-memory file (memfd): libsndfile
    then reads it with its own I/O, outside the GIL. From a Python file object (io.BytesIO) every
    read is a Python callback holding the GIL, so decoding threads ran one at a time (measured: two
    threads 0.86× one thread from BytesIO, 1.73× from an fd). The memfd costs one copy of the bytes."""
    if not hasattr(os, "memfd_create"):
        with sf.SoundFile(io.BytesIO(data)) as handle:
            yield handle
        return
    fd = os.memfd_create("us8k-audio", os.MFD_CLOEXEC)
    try:
        view, written = memoryview(data), 0
        while written < len(view):
            written += os.write(fd, view[written:])
        os.lseek(fd, 0, os.SEEK_SET)
        with sf.SoundFile(fd, closefd=False) as handle:
            yield handle
    finally:
        os.close(fd)


def _decode_soundfile(data: bytes, **limits) -> np.ndarray:
    with _sound_file(data) as handle:
        rate, channels = handle.samplerate, handle.channels
        declared = handle.frames if 0 <= handle.frames < _UNKNOWN_FRAMES else None
        check_source_rate(rate)  # before reading a sample
        block = _block_frames(channels)
        if limits.get("head_seconds") is not None:  # no block reaches far past the head
            block = min(block, int((limits["head_seconds"] + HEAD_MARGIN_SECONDS) * rate) + 1)
        blocks = handle.blocks(blocksize=block, dtype="float32", always_2d=True)
        return _stream(blocks, rate, channels, declared, **limits)


def _import_pyav():
    """The PyAV module, or None where it is not installed (the SageMaker container). Imported only
    for what libsndfile cannot read."""
    try:
        import av
    except ImportError:
        return None
    return av


def _decode_pyav(data: bytes, av, **limits) -> np.ndarray:
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise AudioDecodeError("no audio stream in the input")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        check_source_rate(rate)
        channels = stream.codec_context.channels or 1
        declared = _pyav_declared_frames(container, stream, rate)
        # Planar float32 at the source rate and layout; soxr does the resampling.
        to_float = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)

        def blocks():
            for frame in container.decode(stream):
                for out in to_float.resample(frame):
                    yield out.to_ndarray().T  # (frames, channels)
            for out in to_float.resample(None):  # flush
                yield out.to_ndarray().T

        try:
            return _stream(blocks(), rate, channels, declared, **limits)
        except AudioDecodeError as exc:
            if str(exc).startswith("no audio samples"):
                raise AudioDecodeError("no audio samples (FFmpeg decoded zero frames)") from None
            raise


def _pyav_declared_frames(container, stream, rate: int) -> int | None:
    """The stream's length in frames when the container states it (frames, or duration), else None."""
    if stream.duration and stream.time_base:
        return int(stream.duration * stream.time_base * rate)
    if container.duration:  # microseconds
        return int(container.duration * rate / 1_000_000)
    return None


def _check_riff_complete(data: bytes) -> None:
    """libsndfile silently reads a truncated WAV: compare the data chunk's size with the bytes present."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return
    endian = "<" if data[:4] == b"RIFF" else ">"
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        (size,) = struct.unpack(endian + "I", data[pos + 4:pos + 8])
        if chunk_id == b"data":
            present = len(data) - pos - 8
            if size != 0xFFFFFFFF and present < size:
                raise AudioDecodeError(
                    f"truncated WAV: data chunk declares {size} bytes, {present} present")
            return
        pos += 8 + size + (size & 1)
    raise AudioDecodeError("truncated WAV: no data chunk")


def _one_line(exc: BaseException) -> str:
    # LibsndfileError carries the library's own message without the file object's repr.
    text = str(getattr(exc, "error_string", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
