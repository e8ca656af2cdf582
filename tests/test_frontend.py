"""models.frontend: parity with librosa, normalisation statistics, serialisation round trips."""
import dataclasses
import subprocess
import sys

import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf

from models.frontend import LogMelFrontend, LogMelSpectrogram, compute_normalization_stats, slaney_mel_matrix
from tfdata.contract import CLIP_SAMPLES, FRONTEND, SAMPLE_RATE

# max |ours - librosa| in dB over every (frame, mel) cell, the bound docs/training.md states. Measured here
# (TF 2.21 CPU, librosa 0.11): 2.52e-4 dB at most, on the tone clip; the others stay below 1.1e-4.
# The bound leaves 2x for another CPU's float32 FFT rounding.
PARITY_DB = 5e-4
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
    power = librosa.feature.melspectrogram(y=clip, sr=SAMPLE_RATE, n_fft=FRONTEND.n_fft,
                                           hop_length=FRONTEND.hop_length, n_mels=FRONTEND.n_mels)
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=top_db).T  # (frames, mels)


@pytest.mark.parametrize("args", [dict(sample_rate=SAMPLE_RATE, n_fft=FRONTEND.n_fft, n_mels=FRONTEND.n_mels),
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
    assert ours.shape == (len(clips), FRONTEND.frames_per_window, FRONTEND.n_mels) and ours.dtype == np.float32
    for i, (name, clip) in enumerate(clips.items()):
        error = np.abs(ours[i] - _librosa_db(clip)).max()
        assert error < PARITY_DB, f"{name}: max error {error:.2e} dB"


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
    assert layer(np.zeros((2, 22050), np.float32)).shape == (2, 1 + 22050 // FRONTEND.hop_length, FRONTEND.n_mels)
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
    features = LogMelSpectrogram()(clips).numpy().astype(np.float64).reshape(-1, FRONTEND.n_mels)
    return features.mean(axis=0), features.var(axis=0)


def test_compute_normalization_stats_equals_numpy():
    clips = np.stack(list(_clips().values()) * 2)  # 8 clips, uneven batches of 3
    labels = np.arange(len(clips), dtype=np.int32)
    mean, variance = compute_normalization_stats(tf.data.Dataset.from_tensor_slices((clips, labels)).batch(3))
    expected_mean, expected_variance = _numpy_stats(clips)
    assert mean.shape == variance.shape == (FRONTEND.n_mels,)
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
    out = LogMelFrontend(mean=mean, variance=variance)(clips).numpy().reshape(-1, FRONTEND.n_mels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-3)


def test_frontend_rejects_bad_statistics():
    with pytest.raises(ValueError, match="shape"):
        LogMelFrontend(mean=np.zeros(3), variance=np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        LogMelFrontend(mean=np.full(FRONTEND.n_mels, np.nan))


def test_get_config_round_trips():
    rng = np.random.default_rng(1)
    mean, variance = rng.normal(-30, 5, FRONTEND.n_mels), rng.uniform(10, 100, FRONTEND.n_mels)
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


def test_frontend_params_are_the_layers_arguments_and_give_the_shapes():
    assert FRONTEND.frames_per_window == 173 and FRONTEND.num_bins == 1025 and FRONTEND.fmax_hz == SAMPLE_RATE / 2
    layer = LogMelSpectrogram()
    assert layer.params == FRONTEND and layer.n_mels == FRONTEND.n_mels
    config = layer.get_config()
    assert {k: config[k] for k in dataclasses.asdict(FRONTEND)} == dataclasses.asdict(FRONTEND)
    # another hop: the frame count follows from it, in the layer and in the params alike
    coarse = dataclasses.replace(FRONTEND, hop_length=1024)
    assert coarse.frames_per_window == 1 + CLIP_SAMPLES // 1024
    out = LogMelSpectrogram(**dataclasses.asdict(coarse))(np.zeros((1, CLIP_SAMPLES), np.float32))
    assert out.shape == (1, coarse.frames_per_window, coarse.n_mels)
    with pytest.raises(ValueError, match="top_db"):
        LogMelSpectrogram(top_db=-1.0)


def test_contract_imports_neither_tensorflow_nor_numpy():
    probe = subprocess.run([sys.executable, "-c", "import sys, tfdata.contract; "
                            "print(sorted({'tensorflow', 'numpy'} & set(sys.modules)))"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stderr
