"""The log-mel frontend as Keras layers on `tf.signal`: raw waveform in, normalised log-mel out.

It lives inside every model, so it runs on the accelerator while training and travels inside the
exported SavedModel (no feature code to keep in step at serving time). It reproduces the baseline's
librosa features:

    S = librosa.feature.melspectrogram(y=x, sr=22050, n_fft=2048, hop_length=512, n_mels=128)
    librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=80.0)   # (n_mels, frames), ours transposed

librosa 0.11 centres frames by padding n_fft // 2 zeros on each side (pad_mode="constant"), uses a
periodic Hann window and a Slaney-scale, area-normalised filterbank; `tf.signal`'s own
`linear_to_mel_weight_matrix` is the HTK scale without area normalisation (a median 18.6 dB away from librosa's default
Slaney filterbank, measured against `librosa.feature.melspectrogram`), so the Slaney
matrix is computed here in numpy and embedded as a constant. 88200 samples → 173 frames.

Layout: (batch, samples) → (batch, frames, n_mels): time first, the axis a sequence model wants.
All frontend arithmetic is float32, also under a mixed-precision policy.
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfdata.contract import FRONTEND, FrontendParams

# The frontend's parameters (n_fft, hop, mels, dB reference, floor) are `tfdata.contract.FRONTEND`.
VARIANCE_FLOOR = 1e-6  # a constant mel bin is divided by at most 1e-3, not by zero


# ---------------------------------------------------------------------------- Slaney filterbank
# Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3  # linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    safe_hz = np.maximum(hz, _SLANEY_MIN_LOG_HZ)  # log branch only where it is used
    return np.where(hz >= _SLANEY_MIN_LOG_HZ,
                    _SLANEY_MIN_LOG_MEL + np.log(safe_hz / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP,
                    hz / _SLANEY_HZ_PER_MEL)


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= _SLANEY_MIN_LOG_MEL,
                    _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL)),
                    _SLANEY_HZ_PER_MEL * mel)


def slaney_mel_matrix(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                      fmax: float | None = None) -> np.ndarray:
    """Mel filterbank [n_fft // 2 + 1, n_mels] equal to `librosa.filters.mel(...).T` (Slaney, area norm)."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [bins]
    mel_edges = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    hz_edges = _mel_to_hz_slaney(mel_edges)  # [n_mels + 2]
    widths = np.diff(hz_edges)  # [n_mels + 1]
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, bins]
    lower = -ramps[:-2] / widths[:-1, None]  # [n_mels, bins] rising slopes
    upper = ramps[2:] / widths[1:, None]  # [n_mels, bins] falling slopes
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]  # equal area per band
    return weights.T.astype(np.float32)  # [bins, n_mels]


def periodic_hann(length: int) -> np.ndarray:
    """The periodic Hann window (`scipy.signal.get_window("hann", n)`, `tf.signal.hann_window`)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


def _param(name: str) -> property:
    """A read-only layer attribute that is one field of the layer's `FrontendParams`."""
    return property(lambda self: getattr(self.params, name), doc=f"`params.{name}`")


# ---------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="us8k")
class LogMelSpectrogram(keras.layers.Layer):
    """Waveform (batch, samples) float32 → log-mel power in dB (batch, frames, n_mels) float32.

    dB reference: fixed (`ref=1.0`, `amin=1e-10`), not the baseline's `ref=np.max` per clip. The
    baseline's choice rescales every clip so that its loudest bin is 0 dB: a distant, quiet siren and a
    near one look the same, and at serving time a 4 s window of a long recording that holds only
    background hiss is blown up to the level of a loud event. With a fixed reference the features
    keep absolute loudness (the per-bin normalisation that follows absorbs the offset) and, except
    for the floor below, each frame's values depend only on the samples under that frame.

    `top_db=80` floors each example at its own peak minus 80 dB (librosa's default). It keeps the
    float32 FFT's round-off noise (far below -80 dB re the peak, and different on CPU and GPU FFTs)
    and digital silence out of the features, so parity with librosa holds to within 5e-4 dB
    (tests/test_frontend.py). The floor depends on the example's peak only: at serving time every
    4 s window is an example of its own, so one window's features never depend on another part of
    the recording. Zero padding (short clips, padded in ingestion and in serving alike) lands on
    this floor in both places. `top_db=None` disables it
    (then digital silence is -100 dB).

    Centring pads `n_fft // 2` zeros on each side (librosa 0.11's default `pad_mode="constant"`);
    the STFT uses a periodic Hann window; the mel projection is one MatMul with a constant matrix.
    The layer always computes in float32, whatever the global dtype policy.
    Its arguments are the fields of `tfdata.contract.FrontendParams` (defaults: `FRONTEND`); the
    layer keeps them as `params`, and each one is also an attribute (`layer.n_mels`).
    """

    sample_rate = _param("sample_rate")
    n_fft = _param("n_fft")
    hop_length = _param("hop_length")
    n_mels = _param("n_mels")
    fmin = _param("fmin")
    fmax = _param("fmax")
    ref_power = _param("ref_power")
    amin = _param("amin")
    top_db = _param("top_db")

    def __init__(self, sample_rate: int = FRONTEND.sample_rate, n_fft: int = FRONTEND.n_fft,
                 hop_length: int = FRONTEND.hop_length, n_mels: int = FRONTEND.n_mels, fmin: float = FRONTEND.fmin,
                 fmax: float | None = FRONTEND.fmax, ref_power: float = FRONTEND.ref_power,
                 amin: float = FRONTEND.amin, top_db: float | None = FRONTEND.top_db, **kwargs):
        kwargs["dtype"] = "float32"  # never float16: the dB range and the FFT need float32
        super().__init__(**kwargs)
        self.params = FrontendParams(  # validates (e.g. a negative top_db is a ValueError)
            sample_rate=int(sample_rate), n_fft=int(n_fft), hop_length=int(hop_length), n_mels=int(n_mels),
            fmin=float(fmin), fmax=None if fmax is None else float(fmax), ref_power=float(ref_power),
            amin=float(amin), top_db=None if top_db is None else float(top_db))
        self._mel_matrix = slaney_mel_matrix(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        self._window = periodic_hann(self.n_fft)

    def call(self, waveform):
        waveform = tf.cast(waveform, tf.float32)  # [batch, samples]
        half = self.n_fft // 2
        padded = tf.pad(waveform, [[0, 0], [half, half]])  # [batch, samples + n_fft], zeros (centre=True)
        window = tf.constant(self._window)
        stft = tf.signal.stft(padded, frame_length=self.n_fft, frame_step=self.hop_length,
                              fft_length=self.n_fft, window_fn=lambda *_, **__: window,
                              pad_end=False)  # [batch, frames, bins] complex64
        power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))  # [batch, frames, bins]
        shape = tf.shape(power)
        flat = tf.reshape(power, [-1, shape[2]])  # [batch * frames, bins]
        mel = tf.matmul(flat, tf.constant(self._mel_matrix))  # [batch * frames, n_mels], one MatMul
        mel = tf.reshape(mel, [shape[0], shape[1], self.n_mels])  # [batch, frames, n_mels]
        log_mel = (10.0 / np.log(10.0)) * tf.math.log(tf.maximum(mel, self.amin))  # dB re 1
        log_mel -= 10.0 * np.log10(max(self.amin, self.ref_power))
        if self.top_db is not None:
            peak = tf.reduce_max(log_mel, axis=[1, 2], keepdims=True)  # [batch, 1, 1]
            log_mel = tf.maximum(log_mel, peak - self.top_db)
        return log_mel

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else self.params.num_frames(samples)
        return (input_shape[0], frames, self.n_mels)

    def get_config(self):
        config = super().get_config()
        config.update(dataclasses.asdict(self.params))
        config.pop("dtype", None)  # always float32
        return config


@keras.saving.register_keras_serializable(package="us8k")
class LogMelFrontend(keras.layers.Layer):
    """Waveform (batch, samples) → per-mel-bin normalised log-mel (batch, frames, n_mels) float32.

    `(log_mel - mean) / sqrt(variance)` with `mean` and `variance` ([n_mels], from
    `compute_normalization_stats` over the training folds only) stored as non-trainable weights, so
    they are saved with the model. Without statistics the layer starts as the identity (0 / 1).
    The remaining keyword arguments configure the inner `LogMelSpectrogram`.
    """

    _SPECTROGRAM_KEYS = tuple(f.name for f in dataclasses.fields(FrontendParams))

    def __init__(self, mean=None, variance=None, **kwargs):
        spectrogram_args = {k: kwargs.pop(k) for k in self._SPECTROGRAM_KEYS if k in kwargs}
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.spectrogram = LogMelSpectrogram(name="log_mel_spectrogram", **spectrogram_args)
        n_mels = self.spectrogram.n_mels
        self._initial_mean = self._stat_array(mean, np.zeros(n_mels), "mean")
        self._initial_variance = self._stat_array(variance, np.ones(n_mels), "variance")
        if (self._initial_variance < 0).any():
            raise ValueError("variance must be non-negative")

    def _stat_array(self, values, default, what):
        array = default if values is None else np.asarray(values, dtype=np.float64)
        if array.shape != (self.spectrogram.n_mels,):
            raise ValueError(f"{what} must have shape ({self.spectrogram.n_mels},), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{what} contains NaN or Inf")
        return array.astype(np.float32)

    def build(self, input_shape):
        self.spectrogram.build(input_shape)
        self.mean = self.add_weight(name="mean", shape=(self.spectrogram.n_mels,), trainable=False,
                                    initializer=keras.initializers.Constant(self._initial_mean), dtype="float32")
        self.variance = self.add_weight(name="variance", shape=(self.spectrogram.n_mels,), trainable=False,
                                        initializer=keras.initializers.Constant(self._initial_variance),
                                        dtype="float32")

    def call(self, waveform):
        log_mel = self.spectrogram(waveform)  # [batch, frames, n_mels]
        scale = tf.math.rsqrt(tf.maximum(tf.convert_to_tensor(self.variance), VARIANCE_FLOOR))  # [n_mels]
        return (log_mel - tf.convert_to_tensor(self.mean)) * scale

    def compute_output_shape(self, input_shape):
        return self.spectrogram.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        spectrogram_config = self.spectrogram.get_config()
        config.update({k: spectrogram_config[k] for k in self._SPECTROGRAM_KEYS})
        mean, variance = (self._initial_mean, self._initial_variance) if not self.built else (
            keras.ops.convert_to_numpy(self.mean), keras.ops.convert_to_numpy(self.variance))
        config.update(mean=[float(v) for v in mean], variance=[float(v) for v in variance])
        return config


# ---------------------------------------------------------------------------- statistics
def compute_normalization_stats(waveforms: tf.data.Dataset, *, jit_compile: bool = True,
                                **spectrogram_args) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-bin mean and (population) variance of the log-mel features over a dataset, float64.

    One pass over batches of waveforms `[batch, samples]` or `(waveform, label, ...)` tuples (a dict
    with a "waveform" key also works), through the same `LogMelSpectrogram` the model uses. Each
    batch's count, sum and squared deviations are computed in float64 and merged (Chan et al.), so
    the result does not drift with dataset size. Pass the TRAINING folds only. `jit_compile`
    runs the features through XLA (measured faster on CPU; the same values to ~1e-5 dB).
    """
    spectrogram = LogMelSpectrogram(**spectrogram_args)

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def batch_moments(batch):
        features = tf.cast(spectrogram(batch), tf.float64)  # [batch, frames, n_mels]
        flat = tf.reshape(features, [-1, spectrogram.n_mels])  # [n, n_mels]
        count = tf.cast(tf.shape(flat)[0], tf.float64)
        mean = tf.reduce_mean(flat, axis=0)
        m2 = tf.reduce_sum(tf.square(flat - mean), axis=0)
        return count, mean, m2

    total, mean, m2 = 0.0, np.zeros(spectrogram.n_mels), np.zeros(spectrogram.n_mels)
    for element in waveforms:
        batch = _waveform_of(element)
        if batch.shape.rank == 1:
            batch = batch[tf.newaxis]
        if batch.shape.rank != 2:
            raise ValueError(f"expected waveform batches [batch, samples], got shape {batch.shape}")
        if tf.size(batch) == 0:
            continue
        count, batch_mean, batch_m2 = (t.numpy() for t in batch_moments(tf.cast(batch, tf.float32)))
        delta = batch_mean - mean
        new_total = total + count
        mean = mean + delta * (count / new_total)
        m2 = m2 + batch_m2 + delta**2 * (total * count / new_total)
        total = new_total
    if total == 0:
        raise ValueError("compute_normalization_stats: the dataset yielded no waveforms")
    return mean, m2 / total


def _waveform_of(element):
    if isinstance(element, dict):
        if "waveform" not in element:
            raise ValueError(f"dataset dict elements need a 'waveform' key, got {sorted(element)}")
        return element["waveform"]
    if isinstance(element, (tuple, list)):
        return element[0]
    return element
