"""The tf.data datasets training and evaluation read: fold shards → batches of (waveform [B, 88200], label [B]).

    files (shuffled in training) → parallel interleave of TFRecordDatasets → [cache] →
    shuffle serialised records (seeded) → [repeat] → batch → parse the batch → [augment] → prefetch

Augmentation runs inside tf.data on whole batches with stateless random ops (Keras's random
augmentation layers were reported very slow in graph mode, a while_loop over RNG state); each
batch draws its seed from `Dataset.random`, so a seed gives the same augmented batches every
time, and a new epoch gets new draws. Per clip: speed perturbation (off by default), circular roll,
placement of short clips, gain; across the batch: background from another training clip at a
random SNR, and mixup or between-class mixing (soft labels; `one_hot=True`). Evaluation batches are
never augmented; SpecAugment acts on the features inside the model (`models.augment`).

`make_dataset(records_dir, folds, DatasetConfig(...))`: what one dataset does (batch size, training or
evaluation, shuffle, cache, augmentation, labels, sharding) is one frozen `DatasetConfig`, passed whole.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from tfdata import contract as c
from tfdata import records

SHUFFLE_BUFFER = 1024  # serialised records (≈ 176 KB each → ≈ 180 MB)
READ_PARALLELISM = 16  # shards read at once (interleave cycle length, at most the shard count)
LABEL_COUNT_BATCH = 1024


MIX_MODES = ("none", "mixup", "between_class")


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Waveform augmentation for training. Each clip draws its own values.

    `us8k train` builds these from its run configuration (`models.config.TrainConfig`'s
    `augment_*` fields, whose defaults equal these), so config.json records them. The first four
    act on each clip alone; `background` and `mix` combine a clip with another clip of the same
    training batch (a random permutation of the batch), so they need no second input pipeline."""

    roll: bool = True  # circular shift of the clip within its valid (unpadded) samples
    place: bool = True  # a clip shorter than 4 s starts at a random offset in the window
    min_gain_db: float = -6.0  # random gain, uniform in dB
    max_gain_db: float = 6.0
    speed: float = 0.0  # resample each clip by a factor uniform in [1 - speed, 1 + speed] (0: off)
    background: bool = False  # add another clip of the batch, as background, to some clips
    background_prob: float = 0.5
    background_min_snr_db: float = 5.0  # the clip's power over the background's, uniform in dB
    background_max_snr_db: float = 20.0
    mix: str = "none"  # "mixup": x = λ·x1 + (1-λ)·x2, y likewise, λ ~ Beta(α, α);
    # "between_class": Tokozume et al.'s BC+ mixing with a uniform ratio and level compensation
    mix_alpha: float = 0.2

    def __post_init__(self):
        if self.min_gain_db > self.max_gain_db:
            raise ValueError(f"min_gain_db {self.min_gain_db} > max_gain_db {self.max_gain_db}")
        if self.background_min_snr_db > self.background_max_snr_db:
            raise ValueError(f"background_min_snr_db {self.background_min_snr_db} > "
                             f"background_max_snr_db {self.background_max_snr_db}")
        if self.mix not in MIX_MODES:
            raise ValueError(f"unknown mix {self.mix!r}; choose from {', '.join(MIX_MODES)}")
        if not 0.0 <= self.speed <= 0.5:
            raise ValueError(f"speed must be within [0, 0.5], got {self.speed}")

    @property
    def soft_labels(self) -> bool:
        """True when the labels of a batch are mixed (no longer one-hot)."""
        return self.mix != "none"


DEFAULT_AUGMENT = AugmentParams()


def augment_batch(waveform: tf.Tensor, num_samples: tf.Tensor, seed: tf.Tensor,
                  params: AugmentParams = DEFAULT_AUGMENT) -> tf.Tensor:
    """Stateless per-clip augmentation of a batch (speed, roll, placement, gain): the same
    (inputs, seed) give the same output. The batch-mixing ones are `augment_training_batch`'s.

    waveform float32 [B, T] (zero padded after num_samples[i] valid samples), num_samples int32 [B],
    seed int [2]. Returns float32 [B, T] in [-1, 1]."""
    moved, _ = _per_clip(waveform, num_samples, seed, params)
    return moved


def _random_below(upper, s):  # int32 [B], uniform in [0, upper)
    u = tf.random.stateless_uniform(tf.shape(upper), seed=s)  # [B] in [0, 1)
    return tf.minimum(tf.cast(u * tf.cast(upper, tf.float32), tf.int32), upper - 1)


def speed_perturb(waveform, n, factor):
    """Resample each row by `factor` [B] (linear interpolation: > 1 faster and higher, < 1 slower and
    lower): out[t] = x[t · factor] over the row's n [B] valid samples. Returns ([B, T], new n [B])."""
    length = tf.shape(waveform)[1]
    t = tf.cast(tf.range(length), tf.float32)[tf.newaxis]  # [1, T]
    position = t * factor[:, tf.newaxis]  # [B, T] read positions
    last = tf.cast(n - 1, tf.float32)[:, tf.newaxis]  # [B, 1]
    inside = position <= last
    position = tf.minimum(position, tf.maximum(last, 0.0))
    i0 = tf.cast(tf.floor(position), tf.int32)
    i1 = tf.minimum(i0 + 1, tf.maximum(n - 1, 0)[:, tf.newaxis])
    frac = position - tf.cast(i0, tf.float32)
    x0 = tf.gather(waveform, i0, batch_dims=1)
    x1 = tf.gather(waveform, i1, batch_dims=1)
    out = tf.where(inside, x0 + frac * (x1 - x0), 0.0)  # [B, T]
    new_n = tf.clip_by_value(tf.cast(tf.math.ceil(tf.cast(n, tf.float32) / factor), tf.int32), 1, length)
    return out, new_n


def _per_clip(waveform, num_samples, seed, params):
    batch = tf.shape(waveform)[0]
    length = tf.shape(waveform)[1]
    roll_seed, place_seed, gain_seed, speed_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))  # 4 × [2]
    n = tf.clip_by_value(tf.cast(num_samples, tf.int32), 1, length)  # [B] valid samples
    if params.speed > 0:
        factor = tf.random.stateless_uniform([batch], seed=speed_seed, minval=1.0 - params.speed,
                                             maxval=1.0 + params.speed)
        waveform, n = speed_perturb(waveform, n, factor)

    shift = _random_below(n, roll_seed) if params.roll else tf.zeros_like(n)  # [B]
    offset = _random_below(length - n + 1, place_seed) if params.place else tf.zeros_like(n)  # [B]

    def move(args):  # one row: roll the valid samples, then place them in the window
        x, valid, shift_by, start = args  # [T], scalars
        rolled = tf.concat([x[shift_by:valid], x[:shift_by]], axis=0)  # [valid]
        return tf.pad(rolled, [[start, length - valid - start]])  # [T], zeros around

    # Per-row slices in a map_fn: ~4x faster on CPU than one batched gather of [B, T] indices.
    moved = tf.map_fn(move, (waveform, n, shift, offset), parallel_iterations=16,
                      fn_output_signature=tf.TensorSpec([None], waveform.dtype))  # [B, T]
    moved = tf.ensure_shape(moved, waveform.shape)

    gain_db = tf.random.stateless_uniform(
        [batch], seed=gain_seed, minval=params.min_gain_db, maxval=params.max_gain_db)  # [B]
    gain = tf.pow(10.0, gain_db / 20.0)[:, tf.newaxis]  # [B, 1]
    return tf.clip_by_value(moved * gain, -1.0, 1.0), n  # [B, T], [B]


def _permutation(batch, seed):
    """A stateless random permutation of range(batch) (int32 [B])."""
    return tf.argsort(tf.random.stateless_uniform([batch], seed=seed))


def _power(x, n):
    """Mean power of each row's valid samples (zero padding adds no energy): float32 [B]."""
    return tf.reduce_sum(tf.square(x), axis=1) / tf.cast(tf.maximum(n, 1), tf.float32) + 1e-12


def augment_training_batch(waveform, num_samples, labels, seed, params: AugmentParams = DEFAULT_AUGMENT):
    """Every training augmentation of one batch, stateless: per clip (`augment_batch`), then
    background from another clip of the batch at a random SNR, then mixup or between-class mixing.

    labels float32 [B, classes] (one-hot). Returns (waveform [B, T] in [-1, 1], labels [B, classes]):
    the labels stay one-hot unless `params.mix` mixes them; mixed labels sum to 1."""
    clip_seed, bg_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    x, n = _per_clip(waveform, num_samples, clip_seed, params)
    batch = tf.shape(x)[0]
    if params.background:
        perm_seed, snr_seed, use_seed = tf.unstack(tf.random.experimental.stateless_split(bg_seed, 3))
        other = _permutation(batch, perm_seed)
        background = tf.gather(x, other)
        snr_db = tf.random.stateless_uniform([batch], seed=snr_seed, minval=params.background_min_snr_db,
                                             maxval=params.background_max_snr_db)
        scale = tf.sqrt(_power(x, n) / (_power(background, tf.gather(n, other)) * tf.pow(10.0, snr_db / 10.0)))
        use = tf.random.stateless_uniform([batch], seed=use_seed) < params.background_prob
        scale = tf.where(use & (other != tf.range(batch)), scale, 0.0)  # never a clip over itself
        x = tf.clip_by_value(x + scale[:, tf.newaxis] * background, -1.0, 1.0)
    if params.mix != "none":
        perm_seed, ratio_seed, other_seed = tf.unstack(tf.random.experimental.stateless_split(mix_seed, 3))
        other = _permutation(batch, perm_seed)
        x2, y2 = tf.gather(x, other), tf.gather(labels, other)
        if params.mix == "mixup":
            g1 = tf.random.stateless_gamma([batch], seed=ratio_seed, alpha=params.mix_alpha)
            g2 = tf.random.stateless_gamma([batch], seed=other_seed, alpha=params.mix_alpha)
            ratio = g1 / tf.maximum(g1 + g2, 1e-12)  # Beta(α, α)
            x = ratio[:, None] * x + (1.0 - ratio[:, None]) * x2
        else:  # between-class (BC+): the ratio r is the share of the label; the waveform
            # weight p compensates the two clips' levels (G in dB) so that r is what one hears
            ratio = tf.random.stateless_uniform([batch], seed=ratio_seed)
            ratio = tf.clip_by_value(ratio, 1e-3, 1.0 - 1e-3)
            g1 = 10.0 * tf.math.log(_power(x, n)) / tf.math.log(10.0)
            g2 = 10.0 * tf.math.log(_power(x2, tf.gather(n, other))) / tf.math.log(10.0)
            p = 1.0 / (1.0 + tf.pow(10.0, (g1 - g2) / 20.0) * (1.0 - ratio) / ratio)
            x = (p[:, None] * x + (1.0 - p[:, None]) * x2) / tf.sqrt(tf.square(p) + tf.square(1.0 - p))[:, None]
        labels = ratio[:, None] * labels + (1.0 - ratio[:, None]) * y2
        x = tf.clip_by_value(x, -1.0, 1.0)
    return x, labels


def auto_shard_policy(num_files: int, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE sharding when every worker gets at least one shard, else DATA (stated, not AUTO)."""
    if num_workers > 1 and num_files >= num_workers:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """How `make_dataset` reads its folds.

    training: shuffle files and records (seeded) and augment (with `augment`, default
    DEFAULT_AUGMENT; `augment=False` for none). Evaluation keeps file order, no augmentation.
    cache: True caches the serialised records in memory, a path caches them to that file.
    deterministic: None keeps tf.data's default (ordered); False lets parallel reads reorder.
    num_examples: the records' count when known (e.g. from `class_counts`): the dataset then has a
    known length (Keras shows steps per epoch); a wrong count fails when the data runs out.
    num_workers: the input pipelines of a multi-worker job (chooses the auto-shard policy).
    num_classes: the records' classes (`tfdata.classes.read_dataset_info(...).num_classes`): the depth
    of one-hot labels and the size of the class-weight table; required with `one_hot`.
    one_hot: labels float32 [B, num_classes] instead of int32 [B] (required when `augment` mixes labels).
    class_weights ({class: weight}, with one_hot): a third element, the sample weights [B], each
    the label-weighted mean of the class weights (a mixed label gets the mix of its classes')."""

    batch_size: int
    training: bool = False
    shuffle_buffer: int = SHUFFLE_BUFFER
    cache: bool | str = False
    repeat: bool = False
    augment: AugmentParams | bool | None = None
    seed: int = 0
    deterministic: bool | None = None
    num_workers: int = 1
    num_examples: int | None = None
    num_classes: int | None = None
    one_hot: bool = False
    class_weights: dict | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {self.num_classes}")
        if self.one_hot and self.num_classes is None:
            raise ValueError("one_hot labels need num_classes (the records' classes)")

    @property
    def augmentation(self) -> AugmentParams | None:
        """The augmentation this dataset applies: None in evaluation or with `augment=False`."""
        if not self.training or self.augment is False:
            return None
        return DEFAULT_AUGMENT if self.augment is None or self.augment is True else self.augment


def make_dataset(records_dir: str | os.PathLike, folds, config: DatasetConfig) -> tf.data.Dataset:
    """Batches of (waveform float32 [B, CLIP_SAMPLES], label) from the given folds, as `config` says:
    label int32 [B], or float32 [B, classes] with `one_hot`; plus sample weights [B] with
    `class_weights`. FileNotFoundError for a fold without shards."""
    files = records.fold_files(records_dir, folds)  # raises FileNotFoundError for an empty fold
    augment, seed, deterministic, one_hot = config.augmentation, config.seed, config.deterministic, config.one_hot

    ds = tf.data.Dataset.from_tensor_slices(files)
    if config.training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), READ_PARALLELISM), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if config.num_examples is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(config.num_examples)))
    if config.cache:
        ds = ds.cache(config.cache if isinstance(config.cache, str) else "")
    if config.training:
        ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if config.repeat:
        ds = ds.repeat()
    ds = ds.batch(config.batch_size)
    ds = ds.map(records.parse_examples, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)  # batched parse: one op per batch
    if augment and augment.soft_labels and not one_hot:
        raise ValueError(f"augment mixes labels (mix={augment.mix!r}): pass one_hot=True")
    if config.class_weights is not None and not one_hot:
        raise ValueError("class_weights (sample weights) need one_hot=True")

    def label_of(f):
        return tf.one_hot(f[c.KEY_LABEL], config.num_classes) if one_hot else f[c.KEY_LABEL]

    if augment:
        params = augment
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        if one_hot:
            ds = tf.data.Dataset.zip(ds, seeds).map(
                lambda f, r: augment_training_batch(f["waveform"], f[c.KEY_NUM_SAMPLES], label_of(f),
                                                    tf.stack([r, tf.constant(seed, tf.int64)]), params),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        else:  # integer labels: per-clip augmentation only (no label mixing)
            ds = tf.data.Dataset.zip(ds, seeds).map(
                lambda f, r: (augment_batch(f["waveform"], f[c.KEY_NUM_SAMPLES],
                                            tf.stack([r, tf.constant(seed, tf.int64)]), params),
                              f[c.KEY_LABEL]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        ds = ds.map(lambda f: (f["waveform"], label_of(f)))
    if config.class_weights is not None:
        table = tf.constant([float(config.class_weights.get(k, 1.0)) for k in range(config.num_classes)],
                            tf.float32)
        ds = ds.map(lambda x, y: (x, y, tf.linalg.matvec(y, table)))
    ds = ds.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = auto_shard_policy(len(files), config.num_workers)
    if deterministic is not None:
        options.deterministic = deterministic
    return ds.with_options(options)


def class_counts(records_dir: str | os.PathLike, folds, num_classes: int) -> np.ndarray:
    """Examples per class (int64 [num_classes]) in the given folds; parses only the labels. A label
    outside 0..num_classes-1 (records of another class list) is a ValueError naming it."""
    spec = {c.KEY_LABEL: records.FEATURE_SPEC[c.KEY_LABEL]}
    ds = tf.data.TFRecordDataset(records.fold_files(records_dir, folds),
                                 num_parallel_reads=tf.data.AUTOTUNE)
    ds = ds.batch(LABEL_COUNT_BATCH).map(lambda s: tf.io.parse_example(s, spec)[c.KEY_LABEL])
    counts = np.zeros(num_classes, np.int64)
    for labels in ds.as_numpy_iterator():
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if outside.size:
            raise ValueError(f"a record of fold(s) {list(folds)} has label {int(outside[0])}, outside the "
                             f"{num_classes} classes of the records' class list")
        counts += np.bincount(labels, minlength=num_classes)
    return counts


def class_weights(counts) -> dict[int, float]:
    """Balanced weights total / (classes present × count); absent classes get 1.0."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("no examples: cannot compute class weights")
    scale = counts.sum() / present.sum()
    return {i: float(scale / n) if n > 0 else 1.0 for i, n in enumerate(counts)}
