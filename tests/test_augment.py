"""Augmentation (tfdata.dataset, models.augment): each one changes the training inputs, is
deterministic for a seed, mixes labels that sum to 1 — and none is in the exported graph."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tone_clip

from models.architectures import build_model
from models.augment import SpecAugment, graph_random_ops
from tfdata import contract as c
from tfdata import dataset
from tfdata.layout import SERVING_SIGNATURE, WINDOWS_SIGNATURE, find_saved_model, serving_inputs

OFF = dataset.AugmentParams(roll=False, place=False, min_gain_db=0.0, max_gain_db=0.0)
SEED = tf.constant([3, 4], tf.int64)
CLASSES = len(c.URBANSOUND8K_CLASSES)  # tone records without a manifest: UrbanSound8K's ten classes


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    lengths = [c.CLIP_SAMPLES, c.SAMPLE_RATE, c.CLIP_SAMPLES, 2 * c.SAMPLE_RATE] * 2
    labels = np.arange(8) % CLASSES
    clips = np.stack([tone_clip(int(k), rng, n) for k, n in zip(labels, lengths)])
    return (tf.constant(clips), tf.constant(lengths, tf.int32),
            tf.one_hot(tf.constant(labels), CLASSES))


def augmented(batch, params, seed=SEED):
    x, n, y = batch
    out_x, out_y = dataset.augment_training_batch(x, n, y, seed, params)
    return out_x.numpy(), out_y.numpy()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("change", [
    {"roll": True}, {"place": True}, {"min_gain_db": -6.0, "max_gain_db": 6.0}, {"speed": 0.1},
    {"background": True, "background_prob": 1.0}, {"mix": "mixup", "mix_alpha": 0.4}, {"mix": "between_class"},
])
def test_each_augmentation_changes_the_inputs_and_is_seeded(batch, change):
    import dataclasses

    params = dataclasses.replace(OFF, **change)
    plain_x, plain_y = augmented(batch, OFF)
    np.testing.assert_array_equal(plain_x, batch[0].numpy())  # all off: the clips as they are
    x, y = augmented(batch, params)
    assert x.shape == plain_x.shape and np.abs(x).max() <= 1.0
    assert np.abs(x - plain_x).max() > 1e-3, change  # it changed the training inputs
    again_x, again_y = augmented(batch, params)
    np.testing.assert_array_equal(x, again_x)  # same seed, same batch
    other_x, _ = augmented(batch, params, seed=tf.constant([5, 6], tf.int64))
    assert np.abs(other_x - x).max() > 1e-3  # another seed, other draws
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    if params.mix == "none":
        np.testing.assert_array_equal(y, plain_y)  # labels untouched
    else:
        assert (np.count_nonzero(y > 1e-4, axis=1) == 2).any()  # soft labels: two classes mixed


@pytest.mark.timeout(60)
def test_speed_perturbation_changes_pitch_and_length():
    t = np.arange(c.CLIP_SAMPLES) / c.SAMPLE_RATE
    x = np.sin(2 * np.pi * 500.0 * t).astype(np.float32)[None]
    out, n = dataset.speed_perturb(tf.constant(x), tf.constant([c.CLIP_SAMPLES]), tf.constant([1.25]))
    out, n = out.numpy()[0], int(n.numpy()[0])
    assert abs(n - c.CLIP_SAMPLES / 1.25) <= 1 and np.all(out[n:] == 0)
    spectrum = np.abs(np.fft.rfft(out[:n]))
    peak_hz = np.argmax(spectrum) * c.SAMPLE_RATE / n
    assert abs(peak_hz - 625.0) < 5.0


@pytest.mark.timeout(120)
def test_mixup_labels_sum_to_one_through_the_pipeline(tone_records):
    records_dir = tone_records({1: 20})
    params = dataset.AugmentParams(mix="mixup", mix_alpha=0.4, background=True)
    ds = dataset.make_dataset(records_dir, [1],
        dataset.DatasetConfig(batch_size=10, training=True, augment=params, one_hot=True, num_classes=CLASSES,
                              class_weights={k: float(k + 1) for k in range(CLASSES)}))
    mixed = 0
    for x, y, w in ds:
        y, w = y.numpy(), w.numpy()
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(w, y @ np.arange(1, CLASSES + 1), rtol=1e-5)  # mixed weights
        mixed += int((np.count_nonzero(y > 1e-4, axis=1) == 2).sum())
    assert mixed > 0
    with pytest.raises(ValueError, match="one_hot=True"):
        dataset.make_dataset(records_dir, [1], dataset.DatasetConfig(batch_size=10, training=True, augment=params))


@pytest.mark.timeout(60)
def test_spec_augment_masks_in_training_only():
    features = tf.random.stateless_normal([4, 173, 128], seed=[1, 2]) + 5.0  # no zeros of its own
    layer = SpecAugment(time_masks=2, time_mask_frames=20, freq_masks=2, freq_mask_bins=16, seed=0)
    np.testing.assert_array_equal(layer(features, training=False).numpy(), features.numpy())
    masked = layer(features, training=True).numpy()
    zero = masked == 0
    assert zero.any()
    # a masked frame is zero across every mel bin, a masked bin across every frame
    frames_zeroed, bins_zeroed = zero.all(axis=2), zero.all(axis=1)
    assert frames_zeroed.any() or bins_zeroed.any()
    assert np.all(zero == (frames_zeroed[:, :, None] | bins_zeroed[:, None, :]))
    assert not np.array_equal(masked, layer(features, training=True).numpy())  # new draws each call


@pytest.mark.timeout(180)
def test_no_augmentation_in_the_exported_graph_and_prediction_is_deterministic(tmp_path):
    from models.export import export_model

    keras.utils.set_random_seed(0)
    model = build_model("tiny", spec_augment={"time_masks": 2, "time_mask_frames": 20, "freq_masks": 2,
                                              "freq_mask_bins": 16, "seed": 0}, num_classes=CLASSES)
    assert any(isinstance(layer, SpecAugment) for layer in model.layers)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    clips = np.stack([tone_clip(k, rng) for k in range(4)])
    model.fit(clips, np.eye(CLASSES, dtype=np.float32)[:4], epochs=1, verbose=0)  # the layer has run
    export_dir = tmp_path / "export"
    export_model(model, export_dir, class_names=c.URBANSOUND8K_CLASSES)
    loaded = tf.saved_model.load(str(find_saved_model(export_dir)))
    for name in (SERVING_SIGNATURE, WINDOWS_SIGNATURE):
        graph = loaded.signatures[name].graph.as_graph_def()
        assert graph_random_ops(graph) == [], name
    serve = loaded.signatures[SERVING_SIGNATURE]
    inputs = serving_inputs(tf.constant(clips), tf.constant([c.CLIP_SAMPLES] * 4, tf.int32))
    first, second = serve(**inputs)["probabilities"].numpy(), serve(**inputs)["probabilities"].numpy()
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, model(clips, training=False).numpy(), atol=1e-5)
    # the check can fail: the training graph of the same model does hold random ops
    train_fn = tf.function(lambda x: model(x, training=True)).get_concrete_function(
        tf.TensorSpec([None, c.CLIP_SAMPLES], tf.float32))
    assert graph_random_ops(train_fn.graph.as_graph_def()) != []
    assert json.loads((export_dir / "metadata.json").read_text())["temperature"] == 1.0
