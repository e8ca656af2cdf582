"""The baseline's four architectures (baseline, cnn, lstm, crnn), a stronger `deep_cnn`, and a `tiny` one for tests.

Every model takes the raw waveform `keras.Input(shape=(CLIP_SAMPLES,), name="waveform")` and starts
with the shared `LogMelFrontend` (normalisation statistics from the training folds), giving
(frames=173, mels=128). Convolutional models see the baseline's image layout (mels, frames, 1);
sequence models see time as the sequence axis.

Layer for layer as in the baseline's README, with two fixes:
- the baseline's LSTM and CRNN used `Reshape` to turn (mels, frames) into (frames, mels), which
  reorders memory without transposing: the "time steps" were scrambled slices of the
  spectrogram. Here the LSTM reads the frontend's (frames, mels) output directly and the CRNN
  transposes its feature map with `Permute` before flattening each time step;
- the baseline's inference notebook resized inputs to (128, 160, 1); a centred STFT of 4 s at
  hop 512 has 173 frames (`contract.FRONTEND.frames_per_window`), which is what these models take.
The baseline's `baseline` model is kept as it was, a deliberate floor: GlobalAveragePooling2D over a
one-channel spectrogram leaves a single number per clip (its mean level) for the dense layers.
The final softmax (layer "probabilities") has one unit per class of the records the model trains on
(`num_classes`, from `tfdata.classes.read_dataset_info`) and is float32 so the models are safe under a
mixed-precision policy. Models are returned uncompiled (training owns optimiser, loss and metrics).
"""
from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from models.augment import SpecAugment
from models.frontend import LogMelFrontend
from tfdata.contract import CLIP_SAMPLES, FRONTEND

INPUT_NAME = "waveform"  # the serving input's name (Keras would call it "keras_tensor")
FRONTEND_NAME = "frontend"
CONV_KERNEL = (3, 3)
POOL = (2, 2)

# Hyperparameters as in the seed.
BASELINE_UNITS = (256, 256, 128, 64)
BASELINE_DROPOUT = 0.4  # after each of the first three dense layers
CNN_FILTERS = (32, 64, 128, 256)
CNN_BATCH_NORM = (False, True, False, True)  # the baseline normalised after the 2nd and 4th conv only
CNN_DENSE, CNN_DROPOUT = 256, 0.5
LSTM_UNITS = (128, 64)
CRNN_FILTERS = (32, 64, 128)
CRNN_BATCH_NORM = (False, True, True)
CRNN_LSTM_UNITS = 128
RNN_DENSE, RNN_DROPOUT = 128, 0.3
TINY_FILTERS = (16, 32)
DEEP_BLOCKS = ((32, 1), (64, 1), (128, 1), (256, 2))  # (filters, 3×3 convs) per block, each + MaxPool 2×2
DEEP_DROPOUT = 0.3


def _waveform_and_features(mean, variance, spec_augment=None):
    """The shared input and frontend: waveform [batch, 88200] → features [batch, frames, mels].

    `spec_augment` (a dict of `SpecAugment`'s arguments) adds that layer after the frontend: it
    masks in training only and is the identity at inference."""
    waveform = keras.Input(shape=(CLIP_SAMPLES,), name=INPUT_NAME)
    features = LogMelFrontend(mean=mean, variance=variance, name=FRONTEND_NAME)(waveform)  # [b, 173, 128]
    if spec_augment:
        features = SpecAugment(**spec_augment, name="spec_augment")(features)
    return waveform, features


def _as_image(features):
    """(frames, mels) → the baseline's image layout (mels, frames, 1)."""
    x = layers.Permute((2, 1), name="mels_first")(features)  # [b, 128, 173]
    return layers.Reshape((FRONTEND.n_mels, FRONTEND.frames_per_window, 1), name="image")(x)  # [b, 128, 173, 1]


def _classifier(x, num_classes: int):
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def _rnn_head(x, num_classes: int):
    """The baseline's LSTM and CRNN head: Dense 128 relu, Dropout 0.3, then the softmax."""
    x = layers.Dense(RNN_DENSE, activation="relu")(x)
    x = layers.Dropout(RNN_DROPOUT)(x)
    return _classifier(x, num_classes)


def _conv_blocks(x, filters_per_block, batch_norm_per_block):
    """The baseline's conv block, repeated: Conv 3×3 same relu, [BatchNorm], MaxPool 2×2."""
    for filters, batch_norm in zip(filters_per_block, batch_norm_per_block):
        x = layers.Conv2D(filters, CONV_KERNEL, activation="relu", padding="same")(x)
        if batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(POOL)(x)
    return x


def build_baseline(num_classes: int, mean=None, variance=None, spec_augment=None) -> keras.Model:
    """Seed baseline: GlobalAveragePooling2D + Dense 256/256/128/64 (Dropout 0.4) + softmax."""
    waveform, features = _waveform_and_features(mean, variance, spec_augment)
    x = layers.GlobalAveragePooling2D()(_as_image(features))  # [b, 1]
    for i, units in enumerate(BASELINE_UNITS):
        x = layers.Dense(units, activation="relu")(x)
        if i < len(BASELINE_UNITS) - 1:
            x = layers.Dropout(BASELINE_DROPOUT)(x)
    return keras.Model(waveform, _classifier(x, num_classes), name="baseline")


def build_cnn(num_classes: int, mean=None, variance=None, spec_augment=None) -> keras.Model:
    """Seed CNN: 4 × (Conv 3×3 same relu [BatchNorm] MaxPool 2×2), Flatten, Dense 256, Dropout 0.5."""
    waveform, features = _waveform_and_features(mean, variance, spec_augment)
    x = _conv_blocks(_as_image(features), CNN_FILTERS, CNN_BATCH_NORM)  # [b, 128, 173, 1] → [b, 8, 10, 256]
    x = layers.Flatten()(x)  # [b, 20480]
    x = layers.Dense(CNN_DENSE, activation="relu")(x)
    x = layers.Dropout(CNN_DROPOUT)(x)
    return keras.Model(waveform, _classifier(x, num_classes), name="cnn")


def build_lstm(num_classes: int, mean=None, variance=None, spec_augment=None) -> keras.Model:
    """Seed LSTM: LSTM 128 (sequences) + LSTM 64 + Dense 128 + Dropout 0.3, over time steps."""
    waveform, features = _waveform_and_features(mean, variance, spec_augment)
    x = features  # [b, 173 frames (time), 128 mels]: no scrambling Reshape
    x = layers.LSTM(LSTM_UNITS[0], return_sequences=True)(x)
    x = layers.LSTM(LSTM_UNITS[1])(x)
    return keras.Model(waveform, _rnn_head(x, num_classes), name="lstm")


def build_crnn(num_classes: int, mean=None, variance=None, spec_augment=None) -> keras.Model:
    """Seed CRNN: 3 conv blocks (32, 64+BN, 128+BN), time steps = pooled frames, LSTM 128, Dense 128."""
    waveform, features = _waveform_and_features(mean, variance, spec_augment)
    x = _conv_blocks(_as_image(features), CRNN_FILTERS, CRNN_BATCH_NORM)  # → [b, 16 mels, 21 frames, 128]
    _, mels, frames, channels = x.shape
    x = layers.Permute((2, 1, 3), name="time_major")(x)  # [b, 21 frames, 16 mels, 128]
    x = layers.Reshape((frames, mels * channels), name="sequence")(x)  # [b, 21, 2048]
    x = layers.LSTM(CRNN_LSTM_UNITS)(x)
    return keras.Model(waveform, _rnn_head(x, num_classes), name="crnn")


def build_tiny(num_classes: int, mean=None, variance=None, spec_augment=None) -> keras.Model:
    """A few thousand parameters, for fast tests of the whole path (not for results)."""
    waveform, features = _waveform_and_features(mean, variance, spec_augment)
    x = _as_image(features)
    x = layers.MaxPooling2D((4, 4))(x)  # [b, 32, 43, 1]
    for filters in TINY_FILTERS:
        x = layers.Conv2D(filters, CONV_KERNEL, activation="relu", padding="same")(x)
        x = layers.MaxPooling2D(POOL)(x)
    x = layers.GlobalAveragePooling2D()(x)  # [b, 32]
    return keras.Model(waveform, _classifier(x, num_classes), name="tiny")


def build_deep_cnn(num_classes: int, mean=None, variance=None, spec_augment=None) -> keras.Model:
    """The stronger model: 5 conv layers in 4 blocks of (Conv 3×3 → BatchNorm → ReLU) × n + MaxPool 2×2,
    then global pooling (mean over mels, max + mean over time) → Dropout 0.3 → softmax.

    Every conv is batch-normalised (stable training at a higher learning rate), depth goes where
    the maps are small (two convs in the last block), and global pooling replaces the baseline's
    Flatten + Dense 256 (5.2 M of its 5.6 M weights): the answer no longer depends on where in the
    4 s window the event sits, and the head cannot memorise positions (PANNs' CNN10 pooling)."""
    waveform, features = _waveform_and_features(mean, variance, spec_augment)
    x = _as_image(features)  # [b, 128, 173, 1]
    for filters, convs in DEEP_BLOCKS:
        for _ in range(convs):
            x = layers.Conv2D(filters, CONV_KERNEL, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(POOL)(x)  # → [b, 8 mels, 10 frames, 256]
    _, mels, frames, channels = x.shape
    x = layers.AveragePooling2D((mels, 1), name="mean_over_mels")(x)  # [b, 1, 10, 256]
    x = layers.Reshape((frames, channels))(x)  # [b, 10, 256]
    x = layers.Add(name="time_pool")([layers.GlobalMaxPooling1D()(x), layers.GlobalAveragePooling1D()(x)])
    x = layers.Dropout(DEEP_DROPOUT)(x)
    return keras.Model(waveform, _classifier(x, num_classes), name="deep_cnn")


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "baseline": build_baseline,
    "cnn": build_cnn,
    "lstm": build_lstm,
    "crnn": build_crnn,
    "tiny": build_tiny,
    "deep_cnn": build_deep_cnn,
}


def build_model(name: str, mean=None, variance=None, spec_augment: dict | None = None, *,
                num_classes: int) -> keras.Model:
    """Build the named architecture (uncompiled) with `num_classes` outputs behind a frontend holding
    `mean`/`variance` [n_mels] (and a training-only `SpecAugment` layer after it when `spec_augment`
    gives its arguments)."""
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_BUILDERS)}") from None
    if isinstance(num_classes, bool) or not float(num_classes).is_integer() or num_classes < 2:
        raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    return builder(int(num_classes), mean, variance, spec_augment)
