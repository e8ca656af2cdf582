"""tfdata.dataset: shapes, one pass over every record per epoch, seeded shuffle, stateless augmentation."""
import numpy as np
import pytest
import tensorflow as tf
from trained_run import records_once

from tfdata import contract as c
from tfdata import dataset, records

pytestmark = pytest.mark.timeout(180)

PER_FOLD = {1: 13, 2: 11}  # 24 clips, two folds, three shards each
CLASSES = len(c.URBANSOUND8K_CLASSES)  # tone records without a manifest: UrbanSound8K's ten classes


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """Written once per test run; the tests only read it."""
    return records_once(tmp_path_factory, PER_FOLD, shards=3)


def epoch(ds):
    xs, ys = zip(*ds.as_numpy_iterator())
    return np.concatenate(xs), np.concatenate(ys)


def row_keys(waveforms):
    return sorted(hash(row.tobytes()) for row in waveforms)


def test_shapes_and_dtypes(records_dir):
    ds = dataset.make_dataset(records_dir, [1, 2], dataset.DatasetConfig(batch_size=5, training=True))
    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int32
    sizes = []
    for x, y in ds:
        assert x.shape[1:] == (c.CLIP_SAMPLES,) and x.shape[0] == y.shape[0]
        sizes.append(int(x.shape[0]))
    assert sizes == [5, 5, 5, 5, 4]


def test_eval_batches_are_the_records_unchanged(records_dir):
    x, y = epoch(dataset.make_dataset(records_dir, [1, 2], dataset.DatasetConfig(batch_size=4, training=False)))
    raw = list(records.read_folds(records_dir, [1, 2]).as_numpy_iterator())
    assert row_keys(x) == row_keys(np.stack([w for w, _ in raw]))
    assert sorted(y.tolist()) == sorted(int(label) for _, label in raw)


def test_every_record_once_per_epoch_in_training(records_dir):
    eval_x, eval_y = epoch(dataset.make_dataset(records_dir, [1, 2],
        dataset.DatasetConfig(batch_size=4, training=False)))
    ds = dataset.make_dataset(records_dir, [1, 2],
        dataset.DatasetConfig(batch_size=4, training=True, augment=False, shuffle_buffer=8))
    for _ in range(2):  # each epoch (a new iterator) is a permutation of the records
        x, y = epoch(ds)
        assert len(x) == sum(PER_FOLD.values())
        assert row_keys(x) == row_keys(eval_x)
        assert sorted(y.tolist()) == sorted(eval_y.tolist())
    augmented_x, augmented_y = epoch(dataset.make_dataset(records_dir, [1, 2],
        dataset.DatasetConfig(batch_size=4, training=True)))
    assert sorted(augmented_y.tolist()) == sorted(eval_y.tolist())


def test_repeat_goes_past_one_epoch(records_dir):
    ds = dataset.make_dataset(records_dir, [1], dataset.DatasetConfig(batch_size=4, training=True, repeat=True))
    assert sum(int(y.shape[0]) for _, y in ds.take(10)) == 40  # fold 1 holds 13


def test_shuffle_is_seeded(records_dir):
    def labels_and_first_rows(seed):
        ds = dataset.make_dataset(records_dir, [1, 2],
            dataset.DatasetConfig(batch_size=24, training=True, augment=False, seed=seed))
        epochs = [next(iter(ds)) for _ in range(2)]
        return [(y.numpy(), x.numpy()[:, :64]) for x, y in epochs]

    first, again, other = labels_and_first_rows(1), labels_and_first_rows(1), labels_and_first_rows(2)
    for (y1, x1), (y2, x2) in zip(first, again):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(first[0][1], other[0][1])  # another seed, another order
    assert not np.array_equal(first[0][1], first[1][1])  # a new epoch reshuffles


def test_augmentation_changes_training_batches_deterministically(records_dir):
    def batches(seed, augment=None, training=True):
        ds = dataset.make_dataset(records_dir, [1, 2],
            dataset.DatasetConfig(batch_size=24, training=training, augment=augment, seed=seed))
        return [next(iter(ds))[0].numpy() for _ in range(2)]  # two epochs

    plain = batches(3, augment=False)
    augmented = batches(3)
    np.testing.assert_array_equal(augmented[0], batches(3)[0])  # same seed → same batches
    assert not np.allclose(augmented[0], plain[0], atol=1e-3)  # augmentation changed the clips
    assert not np.allclose(augmented[1], plain[1], atol=1e-3)
    assert not np.array_equal(augmented[0], batches(4)[0])
    eval_a, eval_b = batches(3, training=False), batches(9, training=False)
    np.testing.assert_array_equal(eval_a[0], eval_b[0])  # evaluation: no augmentation, no shuffle


def test_augment_batch_moves_only_valid_samples_and_scales_within_range():
    rng = np.random.default_rng(0)
    length = 1000
    num_samples = np.array([1000, 400, 1], np.int32)
    x = np.zeros((3, length), np.float32)
    for i, n in enumerate(num_samples):
        x[i, :n] = rng.uniform(-0.5, 0.5, n)
    seed = tf.constant([5, 7], tf.int64)
    params = dataset.AugmentParams(min_gain_db=-6.0, max_gain_db=6.0)
    out = dataset.augment_batch(tf.constant(x), tf.constant(num_samples), seed, params).numpy()
    np.testing.assert_array_equal(out, dataset.augment_batch(tf.constant(x), tf.constant(num_samples), seed,
                                                              params).numpy())
    for i, n in enumerate(num_samples):
        moved = out[i][out[i] != 0]
        assert len(moved) == n  # the valid samples survive, the padding stays silence
        ratio = np.abs(moved).sum() / np.abs(x[i, :n]).sum()
        assert 10 ** (-6 / 20) - 1e-4 <= ratio <= 10 ** (6 / 20) + 1e-4
        # a circular shift (and a gain): the sorted magnitudes are the originals', scaled
        np.testing.assert_allclose(np.sort(np.abs(moved)) / ratio, np.sort(np.abs(x[i, :n])), rtol=1e-4)
    roll_only = dataset.AugmentParams(place=False, min_gain_db=0.0, max_gain_db=0.0)
    rolled = dataset.augment_batch(tf.constant(x), tf.constant(num_samples), seed, roll_only).numpy()
    shift = [s for s in range(1000) if np.array_equal(np.roll(x[0], -s), rolled[0])]
    assert len(shift) == 1 and shift[0] != 0
    assert np.all(rolled[1, 400:] == 0) and np.all(rolled[2, 1:] == 0)
    with pytest.raises(ValueError, match="min_gain_db"):
        dataset.AugmentParams(min_gain_db=3.0, max_gain_db=-3.0)


def test_auto_shard_policy_is_explicit(records_dir):
    policy = tf.data.experimental.AutoShardPolicy
    ds = dataset.make_dataset(records_dir, [1, 2], dataset.DatasetConfig(batch_size=4, training=True))
    assert ds.options().experimental_distribute.auto_shard_policy == policy.DATA
    ds = dataset.make_dataset(records_dir, [1, 2], dataset.DatasetConfig(batch_size=4, training=True, num_workers=2))
    assert ds.options().experimental_distribute.auto_shard_policy == policy.FILE  # 6 shards ≥ 2 workers
    assert dataset.auto_shard_policy(num_files=1, num_workers=2) == policy.DATA


def test_cache_gives_the_same_records(records_dir, tmp_path):
    eval_x, _ = epoch(dataset.make_dataset(records_dir, [1, 2], dataset.DatasetConfig(batch_size=4, training=False)))
    ds = dataset.make_dataset(records_dir, [1, 2],
        dataset.DatasetConfig(batch_size=4, training=True, augment=False, cache=str(tmp_path / "cache")))
    for _ in range(2):
        assert row_keys(epoch(ds)[0]) == row_keys(eval_x)


def test_class_counts_and_weights(records_dir):
    counts = dataset.class_counts(records_dir, [1, 2], CLASSES)
    expected = np.bincount([i % CLASSES for n in PER_FOLD.values() for i in range(n)], minlength=CLASSES)
    np.testing.assert_array_equal(counts, expected)
    with pytest.raises(ValueError, match="has label [3-9], outside the 3 classes"):  # records of another list
        dataset.class_counts(records_dir, [1, 2], 3)
    weights = dataset.class_weights([10, 30, 0] + [20] * 7)
    assert weights[1] == pytest.approx(weights[0] / 3) and weights[2] == 1.0
    # balanced: the weighted count of every present class is the same, and they add up to the total
    assert {round(weights[i] * n, 6) for i, n in enumerate([10, 30, 0] + [20] * 7) if n} == {20.0}


def test_missing_fold_is_a_clear_error(records_dir):
    with pytest.raises(FileNotFoundError, match="fold 7"):
        dataset.make_dataset(records_dir, [1, 7], dataset.DatasetConfig(batch_size=4, training=False))
    with pytest.raises(ValueError, match="batch_size"):
        dataset.make_dataset(records_dir, [1], dataset.DatasetConfig(batch_size=0, training=False))


def test_one_hot_labels_and_class_weights_as_sample_weights(records_dir):
    plain = list(dataset.make_dataset(records_dir, [1], dataset.DatasetConfig(batch_size=4, training=False)))
    weights = {k: 1.0 + k for k in range(CLASSES)}
    hot = list(dataset.make_dataset(records_dir, [1],
        dataset.DatasetConfig(batch_size=4, training=False, one_hot=True, num_classes=CLASSES, class_weights=weights)))
    for (x, y), (x1, y1, w1) in zip(plain, hot):
        np.testing.assert_array_equal(x.numpy(), x1.numpy())
        np.testing.assert_array_equal(y1.numpy().argmax(axis=1), y.numpy())
        np.testing.assert_allclose(y1.numpy().sum(axis=1), 1.0)
        assert y1.shape[1] == CLASSES  # the depth is the records' class count
        np.testing.assert_allclose(w1.numpy(), [weights[int(k)] for k in y.numpy()])
    with pytest.raises(ValueError, match="one_hot=True"):
        dataset.make_dataset(records_dir, [1],
            dataset.DatasetConfig(batch_size=4, training=False, class_weights=weights))
    with pytest.raises(ValueError, match="one_hot labels need num_classes"):
        dataset.DatasetConfig(batch_size=4, one_hot=True)
