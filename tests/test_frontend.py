"""models.frontend: parity with librosa, normalisation statistics, serialisation round trips."""
import librosa
import keras
import numpy as np
import pytest
import tensorflow as tf

from models.frontend import (LogMelFrontend, LogMelSpectrogram, compute_normalization_stats,
                             slaney_mel_matrix)
from tfdata.contract import CLIP_SAMPLES, HOP_LENGTH, N_FFT, N_FRAMES, N_MELS, SAMPLE_RATE

PARITY_DB = 0.01  # max |ours - librosa| in dB over every (frame, mel) cell
pytestmark = pytest.mark.timeout(120)


def _clips(num=None):
    """Noise, a tone, a synthetic scene (silence, then a chirp over faint noise), a quiet clip."""
    rng = np.random.default_rng(7)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)
    clips = {
        "noise": 0.1 * rng.standard_normal(CLIP_SAMPLES),
        "tone": 0.5 * np.sin(2 * np.pi * 440.0 * t),
        "synthetic": np.where(t > 1.5, chirp, 0.0) + 0.01 * rng.standard_normal(CLIP_SAMPLES),
        "quiet": 1e-4 * rng.standard_normal(CLIP_SAMPLES),
    }
    return {k: v.astype(np.float32) for k, v in clips.items()}


def _librosa_db(clip, top_db=80.0):
    power = librosa.feature.melspectrogram(y=clip, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
                                           n_mels=N_MELS)
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=top_db).T  # (frames, mels)


@pytest.mark.parametrize("args", [dict(sample_rate=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS),
                                  dict(sample_rate=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=7600.0)])
def test_slaney_matrix_equals_librosa(args):
    ours = slaney_mel_matrix(**args)
    theirs = librosa.filters.mel(sr=args["sample_rate"], n_fft=args["n_fft"], n_mels=args["n_mels"],
                                 fmin=args.get("fmin", 0.0), fmax=args.get("fmax")).T
    assert ours.shape == (args["n_fft"] // 2 + 1, args["n_mels"])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-8)


def test_log_mel_matches_librosa():
    clips = _clips()
    ours = LogMelSpectrogram()(np.stack(list(clips.values()))).numpy()
    assert ours.shape == (len(clips), N_FRAMES, N_MELS) and ours.dtype == np.float32
    for i, (name, clip) in enumerate(clips.items()):
        error = np.abs(ours[i] - _librosa_db(clip)).max()
        assert error < PARITY_DB, f"{name}: max error {error:.4f} dB"


def test_log_mel_without_floor_matches_librosa():
    clip = _clips()["noise"]
    ours = LogMelSpectrogram(top_db=None)(clip[None]).numpy()[0]
    assert np.abs(ours - _librosa_db(clip, top_db=None)).max() < PARITY_DB


def test_fixed_reference_keeps_loudness_and_silence_is_the_floor():
    noise = _clips()["noise"]
    layer = LogMelSpectrogram()
    loud, quiet, silence = layer(np.stack([noise, 0.1 * noise, np.zeros_like(noise)])).numpy()
    np.testing.assert_allclose(quiet - loud, -20.0, atol=1e-3)  # 20 dB quieter, not re-scaled to 0 dB
    np.testing.assert_allclose(silence, -100.0, atol=1e-4)  # 10·log10(amin)


def test_frames_follow_length_and_batch_rows_are_independent():
    clips = _clips()
    layer = LogMelSpectrogram()
    assert layer(np.zeros((2, 22050), np.float32)).shape == (2, 1 + 22050 // HOP_LENGTH, N_MELS)
    both = layer(np.stack([clips["tone"], clips["quiet"]])).numpy()
    np.testing.assert_allclose(both[1], layer(clips["quiet"][None]).numpy()[0], atol=1e-4)


def test_frontend_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        frontend = LogMelFrontend()
        out = frontend(_clips()["noise"][None])
        assert frontend.compute_dtype == "float32" and out.dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _numpy_stats(clips):
    features = LogMelSpectrogram()(clips).numpy().astype(np.float64).reshape(-1, N_MELS)
    return features.mean(axis=0), features.var(axis=0)


def test_compute_normalization_stats_equals_numpy():
    clips = np.stack(list(_clips().values()) * 2)  # 8 clips, uneven batches of 3
    labels = np.arange(len(clips), dtype=np.int32)
    mean, variance = compute_normalization_stats(tf.data.Dataset.from_tensor_slices((clips, labels)).batch(3))
    expected_mean, expected_variance = _numpy_stats(clips)
    assert mean.shape == variance.shape == (N_MELS,)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(variance, expected_variance, rtol=1e-5, atol=1e-4)
    # A dataset of bare waveform batches gives the same numbers.
    bare = compute_normalization_stats(tf.data.Dataset.from_tensor_slices(clips).batch(5))
    np.testing.assert_allclose(bare[0], mean, atol=1e-6)
    np.testing.assert_allclose(bare[1], variance, rtol=1e-6)


def test_compute_normalization_stats_rejects_an_empty_dataset():
    with pytest.raises(ValueError, match="no waveforms"):
        compute_normalization_stats(tf.data.Dataset.from_tensor_slices(np.zeros((0, 100), np.float32)).batch(2))


def test_frontend_normalises_its_statistics_data():
    clips = np.stack(list(_clips().values()))
    mean, variance = compute_normalization_stats(tf.data.Dataset.from_tensor_slices(clips).batch(2))
    out = LogMelFrontend(mean=mean, variance=variance)(clips).numpy().reshape(-1, N_MELS)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-3)


def test_frontend_rejects_bad_statistics():
    with pytest.raises(ValueError, match="shape"):
        LogMelFrontend(mean=np.zeros(3), variance=np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        LogMelFrontend(mean=np.full(N_MELS, np.nan))


def test_get_config_round_trips():
    rng = np.random.default_rng(1)
    mean, variance = rng.normal(-30, 5, N_MELS), rng.uniform(10, 100, N_MELS)
    frontend = LogMelFrontend(mean=mean, variance=variance, top_db=60.0, name="frontend")
    clips = np.stack(list(_clips().values()))
    expected = frontend(clips).numpy()
    clone = LogMelFrontend.from_config(frontend.get_config())
    assert clone.spectrogram.top_db == 60.0 and clone.name == "frontend"
    np.testing.assert_array_equal(clone(clips).numpy(), expected)
    spectrogram = LogMelSpectrogram(n_mels=64, fmax=8000.0, top_db=None)
    spectrogram_clone = LogMelSpectrogram.from_config(spectrogram.get_config())
    np.testing.assert_array_equal(spectrogram_clone(clips).numpy(), spectrogram(clips).numpy())


def test_keras_file_round_trip(tmp_path):
    clips = np.stack(list(_clips().values()))
    mean, variance = compute_normalization_stats(tf.data.Dataset.from_tensor_slices(clips).batch(4))
    waveform = keras.Input(shape=(CLIP_SAMPLES,), name="waveform")
    features = LogMelFrontend(mean=mean, variance=variance, name="frontend")(waveform)
    model = keras.Model(waveform, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(features)))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # the us8k layers are registered: no custom_objects
    np.testing.assert_allclose(loaded.get_layer("frontend").mean.numpy(), mean.astype(np.float32))
    np.testing.assert_allclose(loaded.get_layer("frontend").variance.numpy(), variance.astype(np.float32))
    np.testing.assert_allclose(loaded.predict(clips, verbose=0), model.predict(clips, verbose=0), atol=1e-6)
