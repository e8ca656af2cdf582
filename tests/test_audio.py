"""tfdata.audio: every format the generator writes plus compressed ones decode to mono 22050 Hz;
every bad input fails with AudioDecodeError and a reason. Also what a header can get wrong (a
streamed WAV's unknown sizes, a container declaring fewer frames than it holds), input with no
audio stream, clips too short to resample, and libsndfile reading from a Python file object where
there is no memfd."""
import io
import os
import struct

import av
import numpy as np
import pytest
import soundfile as sf
from wav_files import encode

from tfdata.audio import (
    MAX_SOURCE_RATE,
    MIN_SOURCE_RATE,
    AudioDecodeError,
    AudioTooLongError,
    decode_audio,
    decode_head,
    fit_to_length,
    prepare_waveform,
    to_mono,
)
from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE

pytestmark = pytest.mark.timeout(120)


def tone(rate, seconds=1.0, channels=1, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono * (1 - 0.1 * k) for k in range(channels)], axis=1).astype(np.float32)


def dominant_hz(x):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * SAMPLE_RATE / len(x)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_bit_depths_and_channels(subtype, channels):
    data = encode(tone(44100, channels=channels), 44100, "WAV", subtype)
    y = decode_audio(data)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - SAMPLE_RATE) <= 1
    assert abs(dominant_hz(y) - 440) < 5


@pytest.mark.parametrize("rate", [1000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000])
def test_sample_rates_resample_to_contract_rate(rate):
    freq = min(440.0, rate / 4)
    y = decode_audio(encode(tone(rate, freq=freq), rate, "WAV", "PCM_16"))
    assert abs(len(y) - SAMPLE_RATE) <= 1
    assert abs(dominant_hz(y) - freq) < 5


@pytest.mark.parametrize("fmt,subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_compressed_formats(fmt, subtype):
    y = decode_audio(encode(tone(44100, seconds=2.0, channels=2), 44100, fmt, subtype))
    assert abs(len(y) - 2 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # codecs add or trim a few frames
    assert abs(dominant_hz(y) - 440) < 5


def test_multichannel_downmix_is_channel_average():
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (SAMPLE_RATE, 6)).astype(np.float32)
    y = decode_audio(encode(x, SAMPLE_RATE, "WAV", "FLOAT"))
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-6)


def test_big_endian_float_rifx_via_libsndfile():
    x = tone(16000)
    rifx = encode(x, 16000, "WAV", "FLOAT", endian="BIG")
    assert rifx[:4] == b"RIFX"
    y = decode_audio(rifx)
    assert abs(dominant_hz(y) - 440) < 5


def test_ffmpeg_fallback_for_aac_in_mp4():
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "stereo"
        x = tone(44100, seconds=1.0, channels=2)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout="stereo")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    y = decode_audio(buf.getvalue())
    assert abs(len(y) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert abs(dominant_hz(y) - 440) < 5


def test_path_and_bytes_agree(tmp_path):
    data = encode(tone(48000, channels=2), 48000, "WAV", "PCM_24")
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_audio(path), decode_audio(data))
    np.testing.assert_array_equal(decode_audio(str(path)), decode_audio(data))


def test_silence_is_a_valid_clip():
    y = decode_audio(encode(np.zeros((4000, 1), np.float32), 8000, "WAV", "PCM_16"))
    assert len(y) == 11025 and not y.any()


def bad_inputs():
    good = encode(tone(44100), 44100, "WAV", "PCM_16")
    nan = tone(8000)
    nan[100] = np.nan
    inf = tone(8000)
    inf[5] = np.inf
    return {
        "empty": (b"", "empty"),
        "zero samples": (encode(np.zeros((0, 1), np.float32), 8000, "WAV", "PCM_16"), "no audio samples"),
        "truncated data": (good[: len(good) // 2], "truncated"),
        "truncated header": (good[:30], "truncated"),
        "not audio": (b"this is a text file, not audio\n" * 20, "not decodable"),
        "nan": (encode(nan, 8000, "WAV", "FLOAT"), "NaN or Inf"),
        "inf": (encode(inf, 8000, "WAV", "FLOAT"), "NaN or Inf"),
    }


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_bad_input_raises_one_clear_error(case):
    data, reason = bad_inputs()[case]
    with pytest.raises(AudioDecodeError, match=reason):
        decode_audio(data)


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(AudioDecodeError, match="cannot read file"):
        decode_audio(tmp_path / "nope.wav")


def test_prepare_waveform_rejects_bad_shapes_and_rates():
    with pytest.raises(AudioDecodeError, match="shaped"):
        prepare_waveform(np.zeros((2, 2, 2)), 22050)
    with pytest.raises(AudioDecodeError, match="sample rate"):
        prepare_waveform(np.zeros(10), 0)


def test_fit_to_length_pads_and_crops():
    short = np.ones(1000, np.float32)
    clip, valid = fit_to_length(short)
    assert clip.shape == (CLIP_SAMPLES,) and valid == 1000 and clip[:1000].all() and not clip[1000:].any()
    long = np.arange(CLIP_SAMPLES + 500, dtype=np.float32)
    clip, valid = fit_to_length(long)
    assert valid == CLIP_SAMPLES and np.array_equal(clip, long[:CLIP_SAMPLES])


# ------------------------------------------------------------------ bounded decoding


def aac_m4a(samples, rate):
    """AAC in MP4 (libsndfile cannot read it: the PyAV path), encoded with PyAV."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame_size = 1024
        for start in range(0, samples.shape[0], frame_size):
            chunk = samples[start:start + frame_size, 0]
            frame = av.AudioFrame.from_ndarray(chunk[None].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def noisy(rate, seconds, channels=1, seed=0):
    x = np.random.default_rng(seed).standard_normal((int(rate * seconds), channels)) * 0.1
    return (x + tone(rate, seconds, channels)[: x.shape[0]] * 0.5).astype(np.float32)


HEAD_CASES = [(44100, 2, "WAV", "PCM_16"), (48000, 1, "WAV", "FLOAT"), (8000, 1, "FLAC", "PCM_16"),
              (96000, 6, "FLAC", "PCM_24"), (22050, 1, "WAV", "PCM_16"), (16000, 2, "OGG", "VORBIS"),
              (1000, 1, "WAV", "PCM_16"), (384000, 1, "WAV", "PCM_16")]


@pytest.mark.parametrize("rate,channels,fmt,subtype", HEAD_CASES, ids=[f"{c[2]}-{c[0]}-{c[1]}ch" for c in HEAD_CASES])
@pytest.mark.parametrize("seconds", [2.0, 4.2, 12.0])
def test_decode_head_equals_the_full_decode_exactly(rate, channels, fmt, subtype, seconds):
    """Ingestion's head decode (4 s + a 0.5 s margin for the resampler) is bit for bit the full
    decode's first 4 s, for files shorter and longer than that."""
    data = encode(noisy(rate, seconds, channels), rate, fmt, subtype)
    full = decode_audio(data)
    head = decode_head(data)
    assert head.shape == (min(full.shape[0], CLIP_SAMPLES),)
    np.testing.assert_array_equal(head, full[:CLIP_SAMPLES])


def test_decode_head_equals_the_full_decode_through_ffmpeg():
    data = aac_m4a(noisy(44100, 12.0), 44100)
    with pytest.raises(sf.LibsndfileError):
        sf.info(io.BytesIO(data))
    np.testing.assert_array_equal(decode_head(data), decode_audio(data)[:CLIP_SAMPLES])


def test_decode_head_does_not_decode_past_what_it_keeps():
    """A file whose audio turns NaN after 6 s: the full decode refuses it, the head never sees it."""
    x = noisy(8000, 20.0)
    x[6 * 8000:] = np.nan
    data = encode(x, 8000, "WAV", "FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        decode_audio(data)
    assert decode_head(data).shape == (CLIP_SAMPLES,)


def test_streamed_resampling_equals_one_soxr_call():
    """Decoding in blocks through soxr's stream is what one soxr.resample of the whole signal gives."""
    import soxr

    for rate, channels in [(44100, 2), (8000, 1), (48000, 3)]:
        x = noisy(rate, 50.0, channels, seed=rate)  # several BLOCK_SAMPLES blocks
        data = encode(x, rate, "WAV", "FLOAT")
        mono = to_mono(sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0])
        expected = soxr.resample(mono if channels > 1 else x[:, 0], rate, SAMPLE_RATE, quality="HQ")
        np.testing.assert_array_equal(decode_audio(data), expected)


def test_max_seconds_refuses_from_the_header_and_while_decoding():
    data = encode(noisy(8000, 12.0), 8000, "WAV", "PCM_16")
    assert decode_audio(data, max_seconds=12.0).shape[0] == 12 * SAMPLE_RATE
    with pytest.raises(AudioTooLongError, match="12.0 s of audio; the limit is 11.5 s") as caught:
        decode_audio(data, max_seconds=11.5)
    assert caught.value.seconds == 12.0
    m4a = aac_m4a(noisy(8000, 12.0), 8000)  # through FFmpeg too
    with pytest.raises(AudioTooLongError, match="the limit is 5 s"):
        decode_audio(m4a, max_seconds=5)


@pytest.mark.parametrize("rate", [1, 500, 999, 384_001, 10**6])
def test_source_rates_outside_the_range_are_refused_before_decoding(rate):
    refusal = f"sample rate {rate} Hz is outside {MIN_SOURCE_RATE}..{MAX_SOURCE_RATE}"
    with pytest.raises(AudioDecodeError, match=refusal):
        prepare_waveform(np.zeros(10, np.float32), rate)
    with pytest.raises(AudioDecodeError, match="is outside"):
        decode_audio(encode(np.zeros(100, np.float32), rate))


# ------------------------------------------------------------------ what a header can get wrong


def test_a_streamed_wav_of_unknown_size_decodes_to_its_end():
    """A WAV written as a stream (RIFF and data sizes 0xFFFFFFFF: not known when the header was
    written) holds what is there: not "truncated", all of it decoded; an ordinary WAV cut short is."""
    data = encode(noisy(16000, 3.0, channels=2), 16000, "WAV", "PCM_16")
    at = data.index(b"data")
    unknown = struct.pack("<I", 0xFFFFFFFF)
    streamed = data[:4] + unknown + data[8:at + 4] + unknown + data[at + 8:]
    full = decode_audio(data)
    assert full.shape == (3 * SAMPLE_RATE,)
    np.testing.assert_array_equal(decode_audio(streamed), full)
    np.testing.assert_array_equal(decode_head(streamed), decode_head(data))
    one_second = at + 8 + 16000 * 2 * 2  # stereo 16-bit frames
    assert decode_audio(streamed[:one_second]).shape == (SAMPLE_RATE,)  # a stream stopped early: what is there
    with pytest.raises(AudioDecodeError, match="truncated WAV"):
        decode_audio(data[:one_second])


def declaring(m4a: bytes, seconds: float) -> bytes:
    """The M4A with its track's media header (mdhd, version 0) declaring `seconds`, samples unchanged."""
    at = m4a.index(b"mdhd")
    assert m4a[at + 4] == 0  # version 0: 32-bit timescale and duration
    (timescale,) = struct.unpack(">I", m4a[at + 16:at + 20])
    return m4a[:at + 20] + struct.pack(">I", int(seconds * timescale)) + m4a[at + 24:]


def test_a_header_declaring_fewer_frames_than_the_file_holds():
    """FFmpeg's path (AAC in MP4): the container says 2 s, its samples last 12 s. Decoding goes on
    past the declared length (the output grows beyond the buffer sized from it) and gives what the
    honest file gives; --max-seconds, which the header passes, stops the decoding instead."""
    data = aac_m4a(noisy(8000, 12.0), 8000)
    short = declaring(data, 2.0)
    with av.open(io.BytesIO(short)) as container:
        stream = container.streams.audio[0]
        assert stream.duration * stream.time_base == 2
    full = decode_audio(data)
    assert full.shape[0] > 11.9 * SAMPLE_RATE
    np.testing.assert_array_equal(decode_audio(short), full)
    np.testing.assert_array_equal(decode_head(short), full[:CLIP_SAMPLES])
    with pytest.raises(AudioTooLongError, match="^more than 5 s of audio; the limit is 5 s$") as caught:
        decode_audio(short, max_seconds=5)
    assert caught.value.seconds is None  # not refused from the header: it declares 2 s


def test_input_without_an_audio_stream_is_refused():
    """A video with no sound (MPEG-4 Part 2 in MP4): libsndfile cannot read it, FFmpeg finds no audio."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for k in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * k, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(sf.LibsndfileError):
        sf.info(io.BytesIO(buffer.getvalue()))
    with pytest.raises(AudioDecodeError, match="^no audio stream in the input$"):
        decode_audio(buffer.getvalue())


@pytest.mark.parametrize("rate", [48000, 96000, 384000])
def test_a_clip_too_short_to_resample_is_refused(rate):
    """One sample at a rate above 22050 Hz resamples to nothing: refused with the reason, by the
    streaming decoder (file) and by prepare_waveform (samples); at 22050 Hz it is one sample."""
    one = encode(np.full((1, 1), 0.1, np.float32), rate, "WAV", "FLOAT")
    reason = rf"^clip too short to resample from {rate} Hz \(1 samples\)$"
    with pytest.raises(AudioDecodeError, match=reason):
        decode_audio(one)
    with pytest.raises(AudioDecodeError, match=reason):
        decode_head(one)
    with pytest.raises(AudioDecodeError, match=reason):
        prepare_waveform(np.full(1, 0.1, np.float32), rate)
    assert decode_audio(encode(np.full((1, 1), 0.1, np.float32), SAMPLE_RATE, "WAV", "FLOAT")).shape == (1,)


def test_without_memfd_libsndfile_reads_the_bytes_through_a_python_file(monkeypatch):
    """Where os.memfd_create does not exist (not Linux) the bytes go to libsndfile as an io.BytesIO:
    the same samples, the same refusals."""
    inputs = [encode(noisy(44100, 6.0, channels=2), 44100, "WAV", "PCM_16"),
              encode(noisy(8000, 3.0), 8000, "FLAC", "PCM_16")]
    expected = [(decode_audio(data), decode_head(data)) for data in inputs]  # through a memfd on Linux
    monkeypatch.delattr(os, "memfd_create", raising=False)
    for data, (full, head) in zip(inputs, expected):
        np.testing.assert_array_equal(decode_audio(data), full)
        np.testing.assert_array_equal(decode_head(data), head)
    with pytest.raises(AudioTooLongError, match="the limit is 5 s"):
        decode_audio(inputs[0], max_seconds=5)
    with pytest.raises(AudioDecodeError, match="not decodable"):
        decode_audio(b"this is a text file, not audio\n" * 20)
