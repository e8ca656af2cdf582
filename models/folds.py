"""Which folds a run trains, validates and tests on, checked against the records that exist.

The folds are the records' own (any numbers ≥ 1: ten for UrbanSound8K, five for ESC-50, K for a collection
ingestion split into K): `available_folds` lists those with shards on disk; validation and test default to
the dataset's last two (`tfdata.classes.DatasetInfo.default_split`), training to every other fold present.
"""
from __future__ import annotations

import os

from models.errors import TrainingError
from tfdata import contract as c
from tfdata import records
from tfdata.classes import ClassListError, DatasetInfo, folds_on_disk


def available_folds(records_dir: str) -> list[int]:
    """Folds k ≥ 1 that have at least one shard (fold{k}/*.tfrecord) under records_dir."""
    return folds_on_disk(records_dir)


def default_split(info: DatasetInfo, present: list[int]) -> tuple[int, int]:
    """(validation, test) when the configuration names none: the dataset's last two folds (those its
    manifest lists, else those on disk); a TrainingError when it has fewer than three."""
    if not info.folds:  # records written without a manifest listing folds: the folds on disk
        info = DatasetInfo(info.class_names, tuple(present), info.schema_version, info.source)
    try:
        return info.default_split()
    except ClassListError as error:
        raise TrainingError(str(error)) from None


def resolve_split(records_dir: str, info: DatasetInfo, val_fold: int | None, test_fold: int | None,
                  train_folds=None) -> tuple[int, int, list[int]]:
    """(validation fold, test fold, training folds) of a run: the folds given, the dataset's last two for
    those not given (`default_split`), checked against the folds present (`resolve_folds`)."""
    if not os.path.isdir(records_dir):
        raise TrainingError(f"records directory not found: {records_dir}")
    if val_fold is None or test_fold is None:
        default_val, default_test = default_split(info, available_folds(records_dir))
        val_fold = default_val if val_fold is None else val_fold
        test_fold = default_test if test_fold is None else test_fold
    return val_fold, test_fold, resolve_folds(records_dir, val_fold, test_fold, train_folds)


def resolve_folds(records_dir: str, val_fold: int, test_fold: int, train_folds=None) -> list[int]:
    """Check the records directory and the split; return the training folds."""
    if not os.path.isdir(records_dir):
        raise TrainingError(f"records directory not found: {records_dir}")
    present = available_folds(records_dir)
    if not present:
        raise TrainingError(f"no TFRecord shards ({c.fold_shard_glob('K')}) under {records_dir}")
    if val_fold == test_fold:
        raise TrainingError(f"validation and test fold are both {val_fold}")
    for role, fold in (("validation", val_fold), ("test", test_fold)):
        if fold not in present:
            raise TrainingError(f"{role} fold {fold} has no shards under {records_dir} (folds present: "
                                f"{', '.join(map(str, present))})")
    if train_folds is None:
        train_folds = [k for k in present if k not in (val_fold, test_fold)]
    else:
        train_folds = sorted(set(int(k) for k in train_folds))
        missing = [k for k in train_folds if k not in present]
        if missing:
            raise TrainingError(f"training fold(s) {missing} have no shards under {records_dir}")
        if {val_fold, test_fold} & set(train_folds):
            raise TrainingError("a training fold is also the validation or test fold")
    if not train_folds:
        raise TrainingError(f"no training folds left under {records_dir} besides validation {val_fold} "
                            f"and test {test_fold}")
    return train_folds


def records_fingerprint(records_dir: str, folds) -> list:
    """(relative path, bytes, mtime) of every shard of the folds: stats are reused only if equal."""
    return [[os.path.relpath(p, records_dir), os.path.getsize(p), os.stat(p).st_mtime_ns]
            for p in records.fold_files(records_dir, folds)]
