"""The tf.data input pipeline: fold shards → batches of (waveform [B, 88200], label [B]).

    files (shuffled in training) → parallel interleave of TFRecordDatasets → [cache] →
    shuffle serialised records (seeded) → [repeat] → batch → parse the batch → [augment] → prefetch

Augmentation runs inside tf.data on whole batches with stateless random ops (FACTS.md: Keras
random layers are slow in graph mode); each batch draws its seed from `Dataset.random`, so a
seed gives the same augmented batches every time, and a new epoch gets new draws. Evaluation
batches are never augmented.
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


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Waveform augmentation for training. Each clip draws its own values."""

    roll: bool = True  # circular shift of the clip within its valid (unpadded) samples
    place: bool = True  # a clip shorter than 4 s starts at a random offset in the window
    min_gain_db: float = -6.0  # random gain, uniform in dB
    max_gain_db: float = 6.0

    def __post_init__(self):
        if self.min_gain_db > self.max_gain_db:
            raise ValueError(f"min_gain_db {self.min_gain_db} > max_gain_db {self.max_gain_db}")


DEFAULT_AUGMENT = AugmentParams()


def augment_batch(waveform: tf.Tensor, num_samples: tf.Tensor, seed: tf.Tensor,
                  params: AugmentParams = DEFAULT_AUGMENT) -> tf.Tensor:
    """Stateless augmentation of a batch: the same (inputs, seed) give the same output.

    waveform float32 [B, T] (zero padded after num_samples[i] valid samples), num_samples int32 [B],
    seed int [2]. Returns float32 [B, T] in [-1, 1]."""
    batch = tf.shape(waveform)[0]
    length = tf.shape(waveform)[1]
    roll_seed, place_seed, gain_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))  # 3 × [2]
    n = tf.clip_by_value(tf.cast(num_samples, tf.int32), 1, length)  # [B] valid samples

    def random_below(upper, s):  # int32 [B], uniform in [0, upper)
        u = tf.random.stateless_uniform([batch], seed=s)  # [B] in [0, 1)
        return tf.minimum(tf.cast(u * tf.cast(upper, tf.float32), tf.int32), upper - 1)

    shift = random_below(n, roll_seed) if params.roll else tf.zeros_like(n)  # [B]
    offset = random_below(length - n + 1, place_seed) if params.place else tf.zeros_like(n)  # [B]

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
    return tf.clip_by_value(moved * gain, -1.0, 1.0)  # [B, T]


def auto_shard_policy(num_files: int, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE sharding when every worker gets at least one shard, else DATA (stated, not AUTO)."""
    if num_workers > 1 and num_files >= num_workers:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def make_dataset(records_dir: str | os.PathLike, folds, *, batch_size: int, training: bool,
                 shuffle_buffer: int = SHUFFLE_BUFFER, cache: bool | str = False,
                 repeat: bool = False, augment: AugmentParams | None = None, seed: int = 0,
                 deterministic: bool | None = None, num_workers: int = 1,
                 num_examples: int | None = None) -> tf.data.Dataset:
    """Batches of (waveform float32 [B, CLIP_SAMPLES], label int32 [B]) from the given folds.

    training: shuffle files and records (seeded) and augment (with `augment`, default
    DEFAULT_AUGMENT; pass `augment=False` for none). Evaluation keeps file order, no augmentation.
    cache: True caches the serialised records in memory, a path caches them to that file.
    deterministic: None keeps tf.data's default (ordered); False lets parallel reads reorder.
    num_examples: the records' count when known (e.g. from `class_counts`): the dataset then has a
    known length (Keras shows steps per epoch); a wrong count fails when the data runs out.
    num_workers: the input pipelines of a multi-worker job (chooses the auto-shard policy)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    files = records.fold_files(records_dir, folds)  # raises FileNotFoundError for an empty fold
    if training and augment is None:
        augment = DEFAULT_AUGMENT

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), READ_PARALLELISM), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if num_examples is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(num_examples)))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    ds = ds.map(records.parse_examples, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)  # batched parse: one op per batch
    if training and augment:
        params = augment
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda f, r: (augment_batch(f["waveform"], f[c.KEY_NUM_SAMPLES],
                                        tf.stack([r, tf.constant(seed, tf.int64)]), params),
                          f[c.KEY_LABEL]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        ds = ds.map(lambda f: (f["waveform"], f[c.KEY_LABEL]))
    ds = ds.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = auto_shard_policy(len(files), num_workers)
    if deterministic is not None:
        options.deterministic = deterministic
    return ds.with_options(options)


def class_counts(records_dir: str | os.PathLike, folds) -> np.ndarray:
    """Examples per class (int64 [NUM_CLASSES]) in the given folds; parses only the labels."""
    spec = {c.KEY_LABEL: records.FEATURE_SPEC[c.KEY_LABEL]}
    ds = tf.data.TFRecordDataset(records.fold_files(records_dir, folds),
                                 num_parallel_reads=tf.data.AUTOTUNE)
    ds = ds.batch(LABEL_COUNT_BATCH).map(lambda s: tf.io.parse_example(s, spec)[c.KEY_LABEL])
    counts = np.zeros(c.NUM_CLASSES, np.int64)
    for labels in ds.as_numpy_iterator():
        counts += np.bincount(labels, minlength=c.NUM_CLASSES)[: c.NUM_CLASSES]
    return counts


def class_weights(counts) -> dict[int, float]:
    """Balanced weights total / (classes present × count); absent classes get 1.0."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("no examples: cannot compute class weights")
    scale = counts.sum() / present.sum()
    return {i: float(scale / n) if n > 0 else 1.0 for i, n in enumerate(counts)}
