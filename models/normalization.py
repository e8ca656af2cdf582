"""A run's normalisation statistics: the log-mel mean and variance over its training folds only.

Computed once (RUN/normalization.json) and reused on a re-run over the same shards and split; every
model of the run carries them inside its frontend.
"""
from __future__ import annotations

import os
import time

import numpy as np

from models.errors import TrainingError
from models.folds import records_fingerprint
from models.frontend import compute_normalization_stats
from models.run_files import read_json, write_json
from tfdata.dataset import DatasetConfig, make_dataset
from tfdata.layout import CHECKPOINTS_DIR, NORMALIZATION_FILE

STATS_BATCH_SIZE = 64  # any batch size gives the same numbers


def normalization_stats(records_dir: str, train_folds, run_dir: str, force: bool = False, split=None):
    """Mean and variance [n_mels] of the log-mel features over the training folds only.

    Saved to RUN/normalization.json; reused on a re-run over the same shards and folds. A run
    that already holds checkpoints made from other records or folds is refused (use --force)."""
    path = os.path.join(run_dir, NORMALIZATION_FILE)
    fingerprint = records_fingerprint(records_dir, train_folds)
    basis = {"records": records_dir, "train_folds": list(train_folds), "split": split, "shards": fingerprint}
    saved = read_json(path)
    if saved is not None and not force:
        if {k: saved.get(k) for k in basis} == basis:
            return np.asarray(saved["mean"]), np.asarray(saved["variance"])
        checkpoints = os.path.join(run_dir, CHECKPOINTS_DIR)
        if os.path.isdir(checkpoints) and os.listdir(checkpoints):
            raise TrainingError(f"{run_dir} holds models trained on other records or folds "
                                f"({saved.get('records')}, training folds {saved.get('train_folds')}, "
                                f"{saved.get('split')}); "
                                "use --force to retrain or a new --output")
    print(f"Normalisation statistics from training folds {list(train_folds)} …", flush=True)
    start = time.perf_counter()
    ds = make_dataset(records_dir, train_folds, DatasetConfig(batch_size=STATS_BATCH_SIZE))
    mean, variance = compute_normalization_stats(ds)
    write_json(path, {**basis, "mean": [float(v) for v in mean], "variance": [float(v) for v in variance],
                      "seconds": round(time.perf_counter() - start, 2)})
    return mean, variance
