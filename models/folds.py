"""Which folds a run trains, validates and tests on, checked against the records that exist."""
from __future__ import annotations

import glob
import os

from models.errors import TrainingError
from tfdata import contract as c
from tfdata import records


def available_folds(records_dir: str) -> list[int]:
    """Folds 1..NUM_FOLDS that have at least one shard under records_dir."""
    return [k for k in range(1, c.NUM_FOLDS + 1)
            if glob.glob(os.path.join(records_dir, c.fold_shard_glob(k)))]


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
