"""The datasets a training run reads, from its TrainConfig: augmentation, class weights, batches.

`run_datasets` gives the training dataset (shuffled, augmented, one-hot or mixed labels, optional
class weights as sample weights) and the validation dataset, both batched with the global batch
size and of known length, plus the training folds' class counts they were built from.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from models import distribute
from models.config import TrainConfig
from models.errors import TrainingError
from tfdata.dataset import AugmentParams, DatasetConfig, class_counts, class_weights, make_dataset


class RunDatasets(NamedTuple):
    train: tf.data.Dataset
    val: tf.data.Dataset
    counts: np.ndarray  # training examples per class
    class_weights: dict | None  # {class: weight} when the run weights classes
    steps_per_epoch: int


def augment_params(config: TrainConfig) -> AugmentParams | bool:
    """The waveform augmentation of `config`, or False when it trains without augmentation
    (`augment` off switches every waveform augmentation off; SpecAugment is `spec_augment`)."""
    if not config.augment:
        return False
    return AugmentParams(
        roll=config.augment_roll, place=config.augment_place, min_gain_db=config.augment_min_gain_db,
        max_gain_db=config.augment_max_gain_db, speed=config.augment_speed, background=config.augment_background,
        background_prob=config.augment_background_prob,
        background_min_snr_db=config.augment_background_min_snr_db,
        background_max_snr_db=config.augment_background_max_snr_db,
        mix=config.augment_mix, mix_alpha=config.augment_mix_alpha)


def run_datasets(records_dir: str, train_folds, val_fold: int, config: TrainConfig, *, num_classes: int,
                 global_batch: int, workers: int = 1) -> RunDatasets:
    """The training and validation datasets of a run over `workers` input pipelines, with labels of
    `num_classes` classes (the records' class list). A label outside that list is a TrainingError."""
    deterministic = True if config.deterministic else None
    try:
        counts = class_counts(records_dir, train_folds, num_classes)
        val_count = int(class_counts(records_dir, [val_fold], num_classes).sum())
        weights = class_weights(counts) if config.use_class_weights else None
    except ValueError as error:  # a label outside the class list; no example to weight classes by
        raise TrainingError(str(error)) from None
    augment = augment_params(config)
    train = make_dataset(records_dir, train_folds, DatasetConfig(
        batch_size=global_batch, training=True, shuffle_buffer=config.shuffle_buffer, seed=config.seed,
        cache=config.cache, augment=augment, num_examples=int(counts.sum()), num_classes=num_classes, one_hot=True,
        class_weights=weights, deterministic=deterministic, num_workers=workers))
    if workers > 1 and augment:  # FILE sharding cannot shard the augmentation's Dataset.random
        train = distribute.with_shard_policy(train, "DATA")  # branch: every worker keeps its batches
    val = make_dataset(records_dir, [val_fold], DatasetConfig(
        batch_size=global_batch, num_examples=val_count, num_classes=num_classes, one_hot=True,
        deterministic=deterministic, num_workers=workers))
    return RunDatasets(train, val, counts, weights, steps_per_epoch=-(-int(counts.sum()) // global_batch))
