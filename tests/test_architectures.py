"""models.architectures: every model builds on a raw waveform, learns a tiny batch, and sequence
models read time as the sequence axis."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from models.architectures import FRONTEND_NAME, INPUT_NAME, MODEL_BUILDERS, build_model
from models.frontend import compute_normalization_stats
from tfdata.contract import CLIP_SAMPLES, FRONTEND, SAMPLE_RATE, URBANSOUND8K_CLASSES

SEED_MODELS = ("baseline", "cnn", "lstm", "crnn")
LEARNING_RATE = {"tiny": 1e-2, "baseline": 3e-3}  # others: 1e-3
EPOCHS = 40  # at most (the fits stop at their target): one batch of 8 clips per epoch
US8K = len(URBANSOUND8K_CLASSES)  # outputs of the seed's models (parameter counts, learning targets as before)


def _toy_clips(seed=0):
    """8 clips, 4 classes that differ in level or spectrum: quiet noise, loud noise, 300 Hz, 3 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE

    def clip(label):
        gain = rng.uniform(0.5, 1.5)
        hiss = rng.standard_normal(CLIP_SAMPLES)
        if label < 2:
            return (0.01, 0.3)[label] * gain * hiss
        tone = np.sin(2 * np.pi * (300.0, 3000.0)[label - 2] * t + rng.uniform(0, 2 * np.pi))
        return 0.2 * gain * tone + 0.003 * hiss

    labels = np.array([0, 1, 2, 3] * 2, np.int32)
    return np.stack([clip(c) for c in labels]).astype(np.float32), labels


@pytest.fixture(scope="module")
def toy():
    clips, labels = _toy_clips()
    mean, variance = compute_normalization_stats(tf.data.Dataset.from_tensor_slices(clips).batch(4))
    return clips, labels, mean, variance


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_builds_on_a_raw_waveform(name, toy):
    clips, _, mean, variance = toy
    model = build_model(name, mean, variance, num_classes=3)
    assert model.name == name
    assert model.input_shape == (None, CLIP_SAMPLES) and model.inputs[0].name == INPUT_NAME
    assert model.output_shape == (None, 3)  # one output per class of the records
    frontend = model.get_layer(FRONTEND_NAME)
    assert frontend.output.shape == (None, FRONTEND.frames_per_window, FRONTEND.n_mels)
    np.testing.assert_allclose(frontend.mean.numpy(), mean.astype(np.float32))
    probabilities = model.predict(clips[:2], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    print(f"{name}: {model.count_params():,} parameters")


def test_parameter_counts():
    counts = {name: build_model(name, num_classes=US8K).count_params() for name in MODEL_BUILDERS}
    assert 5_500_000 < counts["cnn"] < 5_700_000  # the seed CNN's size (~5.6 M): its layers, one for one
    assert counts["tiny"] < 10_000
    assert counts["baseline"] < counts["lstm"] < counts["crnn"] < counts["cnn"]
    assert 500_000 < counts["deep_cnn"] < 0.25 * counts["cnn"]  # deeper, yet a fifth of the seed CNN's weights


def test_deep_cnn_pools_globally_and_normalises_every_conv():
    model = build_model("deep_cnn", num_classes=US8K)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == 5 and len(norms) == len(convs)
    assert not any(isinstance(layer, keras.layers.Flatten) for layer in model.layers)
    # global pooling over time: a time-shifted feature map gives the same answer (up to the edges)
    head = keras.Model(model.get_layer("mean_over_mels").input, model.output)
    rng = np.random.default_rng(0)
    maps = rng.random((1,) + tuple(head.input.shape[1:]), np.float32)
    rolled = np.roll(maps, 3, axis=2)
    np.testing.assert_allclose(head(maps, training=False), head(rolled, training=False), atol=1e-5)


def test_spec_augment_layer_is_added_on_request():
    from models.augment import SpecAugment

    plain = build_model("tiny", num_classes=US8K)
    augmented = build_model("tiny", spec_augment={"time_masks": 1, "time_mask_frames": 5, "freq_masks": 1,
                                                  "freq_mask_bins": 5, "seed": 0}, num_classes=US8K)
    assert not any(isinstance(layer, SpecAugment) for layer in plain.layers)
    assert any(isinstance(layer, SpecAugment) for layer in augmented.layers)
    assert plain.count_params() == augmented.count_params()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="baseline, cnn, lstm, crnn, tiny"):
        build_model("resnet", None, None, num_classes=US8K)


def test_the_class_count_sizes_the_output_layer_only():
    """Only the softmax depends on the class count: a dense of (inputs + 1) × classes weights."""
    small, large = build_model("tiny", num_classes=2), build_model("tiny", num_classes=1000)
    inputs = small.get_layer("probabilities").input.shape[-1]
    assert large.count_params() - small.count_params() == (inputs + 1) * (1000 - 2)
    assert large.output_shape == (None, 1000)
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="num_classes must be an integer ≥ 2"):
            build_model("tiny", num_classes=bad)
    with pytest.raises(TypeError):  # no default: the count is always the records'
        build_model("tiny")


@pytest.mark.timeout(120)
def test_softmax_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("tiny", None, None, num_classes=US8K)
        assert model.get_layer(FRONTEND_NAME).output.dtype == "float32"
        assert model.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
        out = model(np.zeros((1, CLIP_SAMPLES), np.float32))
        assert out.dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.timeout(120)
def test_lstm_steps_through_time():
    """Half silence, then noise: the first LSTM's steps are frames, so its first half is all floor."""
    model = build_model("lstm", None, None, num_classes=US8K)
    lstm = next(layer for layer in model.layers if isinstance(layer, keras.layers.LSTM))
    sequence = keras.Model(model.input, lstm.input)
    clip = np.zeros((1, CLIP_SAMPLES), np.float32)
    clip[0, CLIP_SAMPLES // 2:] = 0.1 * np.random.default_rng(0).standard_normal(CLIP_SAMPLES // 2)
    steps = sequence.predict(clip, verbose=0)[0]  # [time steps, features]
    assert steps.shape == (FRONTEND.frames_per_window, FRONTEND.n_mels)
    silent_frames = (CLIP_SAMPLES // 2 - 1024) // 512  # frames whose window holds no noise
    np.testing.assert_array_equal(steps[:silent_frames], np.broadcast_to(steps[0], steps[:silent_frames].shape))
    assert np.all(steps[silent_frames + 4:].std(axis=1) > 1.0)  # noisy frames vary across mels
    # The seed's Reshape((frames, mels)) of a (mels, frames) image would mix silent and noisy cells.
    image = np.transpose(steps)  # (mels, frames) as the seed stored it
    scrambled = image.reshape(FRONTEND.frames_per_window, FRONTEND.n_mels)
    assert not np.array_equal(scrambled[:silent_frames],
                              np.broadcast_to(scrambled[0], scrambled[:silent_frames].shape))


@pytest.mark.timeout(120)
def test_crnn_sequence_is_time_major():
    """Step t of the CRNN's sequence is column t of its last feature map (all mels × channels)."""
    model = build_model("crnn", None, None, num_classes=US8K)
    sequence = model.get_layer("sequence")
    feature_map = model.get_layer("time_major").input  # [b, mels', frames', channels]
    probe = keras.Model(model.input, [feature_map, sequence.output])
    clips, _ = _toy_clips(seed=3)
    maps, steps = probe.predict(clips[:2], verbose=0)
    batch, mels, frames, channels = maps.shape
    assert steps.shape == (batch, frames, mels * channels) == (2, 21, 16 * 128)
    for t in range(frames):
        np.testing.assert_array_equal(steps[:, t, :], maps[:, :, t, :].reshape(batch, -1))


class StopAtTarget(keras.callbacks.Callback):
    """Ends the fit at the first epoch whose training loss is below `loss_fraction` × the first
    epoch's and whose `accuracy` (training, or with `clips` the eval-mode predictions) reaches
    `min_accuracy`: the fit's target, EPOCHS the cap. `reached` says whether it did."""

    def __init__(self, loss_fraction, min_accuracy, clips=None, labels=None):
        super().__init__()
        self.loss_fraction, self.min_accuracy, self.clips, self.labels = loss_fraction, min_accuracy, clips, labels
        self.first_loss, self.reached = None, False

    def on_epoch_end(self, epoch, logs=None):
        if self.first_loss is None:
            self.first_loss = logs["loss"]
        if logs["loss"] >= self.loss_fraction * self.first_loss:
            return
        if self.clips is None:
            accuracy = logs["accuracy"]
        else:
            accuracy = np.mean(self.model.predict(self.clips, verbose=0).argmax(axis=1) == self.labels)
        if accuracy >= self.min_accuracy:
            self.reached = self.model.stop_training = True


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["tiny", *SEED_MODELS, "deep_cnn"])
def test_learns_a_tiny_batch(name, toy):
    """Within EPOCHS, the loss falls to a tenth of the first epoch's with every clip right; the
    baseline, the seed's floor (one number per clip, the spectrogram's mean, feeds its dense
    layers), to 0.6 of it with at least half the clips right (chance: a quarter)."""
    clips, labels, mean, variance = toy
    keras.utils.set_random_seed(1)
    model = build_model(name, mean, variance, num_classes=US8K)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE.get(name, 1e-3)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if name == "baseline":
        target = StopAtTarget(0.6, 0.5, clips, labels)
    else:
        target = StopAtTarget(0.1, 1.0)
    history = model.fit(clips, labels, batch_size=len(clips), epochs=EPOCHS, verbose=0, callbacks=[target]).history
    loss, accuracy = history["loss"], history["accuracy"]
    print(f"{name}: target reached after {len(loss)} of {EPOCHS} epochs" if target.reached else f"{name}: {loss}")
    assert target.reached, (loss, accuracy)
    if name == "baseline":
        assert loss[-1] < 0.6 * loss[0]
        assert (model.predict(clips, verbose=0).argmax(axis=1) == labels).mean() >= 0.5
    else:
        assert loss[-1] < 0.1 * loss[0] and accuracy[-1] == 1.0
