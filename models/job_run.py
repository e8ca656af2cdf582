"""The training job's work, once models.job_entry has checked its inputs: train on every worker, then on
the chief export the selected model and copy the run's small files to SM_OUTPUT_DATA_DIR.

This module imports TensorFlow (seconds); models.job_entry imports it only after the channel and the
config are known to be usable, so a refused job fails at once. Like job_entry, it imports only what
the SageMaker TensorFlow training image holds (the import-linter contract "training-image")."""
from __future__ import annotations

import hashlib
import os
import shutil

import keras
import numpy as np

from models import (
    architectures,  # noqa: F401  (registers the custom layers for load_model)
    distribute,
)
from models.config import ConfigError, TrainConfig, manifest_sha256
from models.errors import EvaluationError, ExportError, JobError, TrainingError
from models.export import export_run
from models.folds import records_fingerprint
from models.job_contract import LOG_PREFIX
from models.run_files import read_json, write_json
from models.train import train_models
from tfdata.layout import (
    CALIBRATION_FILE,
    CHECKPOINTS_DIR,
    CLASSES_FILE,
    CONFIG_FILE,
    HISTORY_DIR,
    LAST_CHECKPOINT,
    NORMALIZATION_FILE,
    REPORT_DIR,
    SELECTION_FILE,
    SelectionError,
    checkpoint_file,
)

OUTPUT_FILES = (CONFIG_FILE, CLASSES_FILE, SELECTION_FILE, CALIBRATION_FILE, NORMALIZATION_FILE)  # → SM_OUTPUT_DATA_DIR
OUTPUT_DIRS = (REPORT_DIR, HISTORY_DIR)


def refresh_fingerprint(run_dir: str, records_dir: str) -> bool:
    """When RUN/normalization.json names the same shards (relative names and sizes, same manifest) with
    other modification times or at another path (the channel was downloaded again for a restarted
    job, on this instance: every instance has its own copy), rewrite its fingerprint; True if it did."""
    path = os.path.join(run_dir, NORMALIZATION_FILE)
    saved = read_json(path)
    if not saved:
        return False
    recorded = (read_json(os.path.join(run_dir, CONFIG_FILE)) or {}).get("records_manifest_sha256")
    if recorded and recorded != manifest_sha256(records_dir):
        return False  # other records: train_models refuses them, as it should
    try:
        current = records_fingerprint(records_dir, saved["train_folds"])
    except (FileNotFoundError, KeyError):
        return False
    records_dir = os.path.abspath(records_dir)
    if [s[:2] for s in saved.get("shards", [])] != [s[:2] for s in current] or (
            saved["shards"] == current and saved.get("records") == records_dir):
        return False
    write_json(path, {**saved, "records": records_dir, "shards": current})
    print(f"{LOG_PREFIX}: the records were downloaded again (same shards, new files): resuming the run", flush=True)
    return True


def weights_digest(checkpoint: str) -> tuple[str, float]:
    """(sha256 of every weight's float32 bytes in order, sum of |weights|) of a .keras checkpoint."""
    model = keras.models.load_model(checkpoint, compile=False)
    digest, total = hashlib.sha256(), 0.0
    for weight in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(weight), np.float32)
        digest.update(value.tobytes())
        total += float(np.abs(value).sum(dtype=np.float64))
    return digest.hexdigest(), total


def copy_outputs(run_dir: str, output_dir: str) -> list[str]:
    """The run's small files (report, selection, config, classes, calibration, history) into `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    copied = []
    for name in OUTPUT_FILES:
        if os.path.isfile(os.path.join(run_dir, name)):
            shutil.copy2(os.path.join(run_dir, name), os.path.join(output_dir, name))
            copied.append(name)
    for name in OUTPUT_DIRS:
        if os.path.isdir(os.path.join(run_dir, name)):
            shutil.copytree(os.path.join(run_dir, name), os.path.join(output_dir, name), dirs_exist_ok=True)
            copied.append(f"{name}/")
    return copied


def export_selected(run_dir: str, model_dir: str) -> None:
    """`us8k export RUN --output SM_MODEL_DIR --overwrite` (calibrated threshold and temperature), with
    the export's own progress lines."""
    try:
        export_run(run_dir, model_dir, overwrite=True, log=lambda message: print(f"us8k export: {message}", flush=True))
    except (ExportError, SelectionError) as error:
        raise JobError(str(error)) from None


def run(args, config: TrainConfig, verbose: int, source: str) -> int:
    """Train (every worker), then on the chief export the selected model and copy the run's outputs.
    `args`: job_entry's parsed flags; `source`: where the config came from (for the log)."""
    try:
        chief, (kind, index), workers = distribute.is_chief(), distribute.task(), distribute.num_workers()
    except distribute.ClusterError as error:
        raise JobError(str(error)) from None
    run_dir = os.path.abspath(args.checkpoint_dir)
    print(f"{LOG_PREFIX}: task {kind} {index} of {workers} worker(s){' (chief)' if chief else ''}; code "
          f"{os.path.dirname(os.path.abspath(__file__))}; config from {source}; records "
          f"{args.records}; run {run_dir if chief else distribute.worker_dir(run_dir) + ' (temporary)'}", flush=True)
    written = distribute.prepare_dir(run_dir)  # this process's run: the run itself on the chief, else a copy
    refresh_fingerprint(written, args.records)  # (each instance downloads the channel: its own mtimes)
    try:
        selection = train_models(args.records, run_dir, config, evaluate=chief, verbose=verbose,
                                 tensorboard_dir=args.tensorboard_dir)
    except (ConfigError, TrainingError, EvaluationError, SelectionError) as error:
        raise JobError(str(error)) from None

    for name in selection["models"]:
        sha, total = weights_digest(os.path.join(written, CHECKPOINTS_DIR, name, LAST_CHECKPOINT))
        print(f"{LOG_PREFIX}: final weights {name} sha256 {sha} sum|w| {total:.9g}", flush=True)
    if not chief:
        distribute.remove_worker_dir(run_dir)
        print(f"{LOG_PREFIX}: worker {index} done; its temporary run directory is removed", flush=True)
        return 0

    selected = selection["selected"]
    report = selection.get("report") or {}
    test = (report.get("models") or {}).get(selected, {})
    if "accuracy" in test:
        print(f"{LOG_PREFIX}: test_accuracy: {test['accuracy']:.4f} ({selected}, fold {report.get('test_fold')})",
              flush=True)
    print(f"{LOG_PREFIX}: exporting {selected} ({checkpoint_file(selected)}) to {args.model_dir}",
          flush=True)
    export_selected(run_dir, args.model_dir)
    copied = copy_outputs(run_dir, args.output_data_dir)
    print(f"{LOG_PREFIX}: wrote {', '.join(copied)} to {args.output_data_dir}", flush=True)
    return 0
