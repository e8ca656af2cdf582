"""The SageMaker training job's entry point (`us8k launch-training` ships it): train, evaluate, export.

Runs in the SageMaker TensorFlow training container (TF 2.19, CPython 3.12) on the container's own
TensorFlow, Keras and numpy: the job's source_dir holds only tfdata/, models/ and a `job_entry.py`
that calls `main()` here, and no requirements.txt, so nothing is installed over them.

Inputs, as SageMaker's training toolkit (sagemaker-training, started by the image's
sagemaker-tensorflow-training) delivers them (each also a flag, for a local run):
  SM_CHANNEL_RECORDS   the "records" channel: fold1..fold10 TFRecord shards (+ manifest.json)
  SM_HPS               the hyperparameters, decoded, as one JSON object: "config" is the TrainConfig
                       (`us8k launch-training` sends it as one JSON text, `TrainConfig.to_dict()`),
                       "verbose" Keras's verbosity (2: one line per epoch, which the job's metric
                       definitions parse). The toolkit also passes every hyperparameter as a
                       command-line argument, but renders an object as `k=v,k=v` (values keep their
                       own commas) and runs the command through /bin/sh with its arguments joined by
                       spaces, unquoted (sagemaker_training.process), which strips a JSON text's
                       quotes: neither survives. So SM_HPS is read whenever it is set, and
                       --config/--verbose only without it (a local run)
  SM_MODEL_DIR         /opt/ml/model: the export (model/1/ + metadata.json) → model.tar.gz
  SM_OUTPUT_DATA_DIR   /opt/ml/output/data: the report, selection, config, calibration, history
                       → output.tar.gz
  --checkpoint-dir     /opt/ml/checkpoints (the estimator's checkpoint_local_path): the run
                       directory itself, synced to checkpoint_s3_uri while the job runs. A spot job
                       that is interrupted restarts with it restored, and `us8k train`'s resume
                       continues from RUN/checkpoints/<model>/last.keras.
  --tensorboard-dir    /opt/us8k/tensorboard (TensorBoardOutputConfig's LocalPath): the chief's
                       TensorBoard logs, synced to OUTPUT/NAME/tensorboard while the job runs.
                       CreateTrainingJob refuses a LocalPath under /opt/ml, /tmp or
                       /usr/local/nvidia (reported by the SDK's users; no emulator checks it)
  TF_CONFIG            the cluster under multi_worker_mirrored_strategy (models.distribute): only
                       the chief writes the run, the export and the report; every other worker
                       trains in a temporary directory, prints its final weights' digest and
                       deletes it.

A restored run's records come back as new files (the channel is downloaded again): when RUN's
normalisation statistics name the same shards (relative paths and sizes; same manifest) with other
modification times or under another directory, their fingerprint is brought up to date so the run resumes instead of
refusing "other records". Progress goes to stdout; failures end with `us8k job: error: <reason>`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys

if __package__ in (None, ""):  # run as a script (python models/job_entry.py): the repository root on the path
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, _here if os.path.isdir(os.path.join(_here, "models")) else os.path.dirname(_here))

CHANNEL = "records"  # the training job's input channel: SM_CHANNEL_RECORDS
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # the estimator's checkpoint_local_path
TENSORBOARD_DIR = "/opt/us8k/tensorboard"  # TensorBoardOutputConfig's LocalPath (not under a reserved path)
RESERVED_LOCAL_PATHS = ("/opt/ml", "/tmp", "/usr/local/nvidia")  # CreateTrainingJob refuses a TensorBoard
                                                                   # LocalPath starting with one of these
CONFIG_HYPERPARAMETER = "config"
VERBOSE_HYPERPARAMETER = "verbose"
OUTPUT_FILES = ("config.json", "selection.json", "calibration.json", "normalization.json")
OUTPUT_DIRS = ("report", "history")
PREFIX = "us8k job"


class JobError(RuntimeError):
    """The job cannot run as configured (missing channel, bad hyperparameters)."""


def hyperparameters(environ=None) -> dict:
    """SM_HPS as a dict ({} when unset); values the container left as JSON strings are decoded."""
    text = (os.environ if environ is None else environ).get("SM_HPS", "").strip()
    if not text:
        return {}
    try:
        hps = json.loads(text)
    except json.JSONDecodeError as error:
        raise JobError(f"SM_HPS is not valid JSON: {error}") from None
    return {k: _decoded(v) for k, v in hps.items()}


def _decoded(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def config_from(value):
    """The TrainConfig of the "config" hyperparameter (an object, or its JSON text)."""
    from models.config import ConfigError, TrainConfig

    value = _decoded(value)
    if value is None:
        return TrainConfig()
    try:
        return TrainConfig.from_dict(value)
    except ConfigError as error:
        raise JobError(f"hyperparameter {CONFIG_HYPERPARAMETER}: {error}") from None


def settings(args, environ=None) -> tuple:
    """(TrainConfig, Keras verbosity, where they came from): SM_HPS when the toolkit set it, else
    --config/--verbose."""
    environ = os.environ if environ is None else environ
    if "SM_HPS" in environ:
        hps = hyperparameters(environ)
        config, verbose, source = hps.get(CONFIG_HYPERPARAMETER), hps.get(VERBOSE_HYPERPARAMETER), "SM_HPS"
    else:
        config, verbose, source = args.config, args.verbose, "the command line"
    verbose = 2 if verbose is None else _decoded(verbose)
    return config_from(config), verbose, source


def refresh_fingerprint(run_dir: str, records_dir: str) -> bool:
    """When RUN/normalization.json names the same shards (relative names and sizes, same manifest) with
    other modification times or at another path (the channel was downloaded again for a restarted
    job, on this instance: every instance has its own copy), rewrite its fingerprint; True if it did."""
    from models.config import manifest_sha256
    from models.train import NORMALIZATION_FILE, _read_json, _write_json, records_fingerprint
    from tfdata.layout import CONFIG_FILE

    path = os.path.join(run_dir, NORMALIZATION_FILE)
    saved = _read_json(path)
    if not saved:
        return False
    recorded = (_read_json(os.path.join(run_dir, CONFIG_FILE)) or {}).get("records_manifest_sha256")
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
    _write_json(path, {**saved, "records": records_dir, "shards": current})
    print(f"{PREFIX}: the records were downloaded again (same shards, new files): resuming the run", flush=True)
    return True


def weights_digest(checkpoint: str) -> tuple[str, float]:
    """(sha256 of every weight's float32 bytes in order, sum of |weights|) of a .keras checkpoint."""
    import keras
    import numpy as np

    import models.architectures  # noqa: F401  (registers the custom layers)

    model = keras.models.load_model(checkpoint, compile=False)
    digest, total = hashlib.sha256(), 0.0
    for weight in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(weight), np.float32)
        digest.update(value.tobytes())
        total += float(np.abs(value).sum(dtype=np.float64))
    return digest.hexdigest(), total


def copy_outputs(run_dir: str, output_dir: str) -> list[str]:
    """The run's small files (report, selection, config, calibration, history) into `output_dir`."""
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
    """`us8k export RUN --output SM_MODEL_DIR --overwrite` (calibrated threshold and temperature)."""
    from models import export

    export.run(argparse.Namespace(run=run_dir, output=model_dir, threshold=None, temperature=None, overwrite=True))


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="job_entry.py", description=__doc__.splitlines()[0])
    parser.add_argument("--records", default=env(f"SM_CHANNEL_{CHANNEL.upper()}"),
                        help="records directory (default: $SM_CHANNEL_RECORDS)")
    parser.add_argument("--model-dir", default=env("SM_MODEL_DIR", "/opt/ml/model"),
                        help="where the export goes (default: $SM_MODEL_DIR)")
    parser.add_argument("--output-data-dir", default=env("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"),
                        help="where the report goes (default: $SM_OUTPUT_DATA_DIR)")
    parser.add_argument("--checkpoint-dir", default=env("US8K_CHECKPOINT_DIR", CHECKPOINT_DIR),
                        help=f"the run directory, synced to checkpoint_s3_uri (default {CHECKPOINT_DIR})")
    parser.add_argument("--tensorboard-dir", default=env("US8K_TENSORBOARD_DIR", TENSORBOARD_DIR),
                        help=f"the chief's TensorBoard logs, synced by SageMaker (default {TENSORBOARD_DIR})")
    parser.add_argument(f"--{CONFIG_HYPERPARAMETER}", default=None,
                        help="the TrainConfig as JSON, read when SM_HPS is not set (else SM_HPS's \"config\"; "
                             "neither: the defaults)")
    parser.add_argument(f"--{VERBOSE_HYPERPARAMETER}", default=None,
                        help="Keras verbosity, read when SM_HPS is not set (default 2)")
    return parser


def main(argv=None) -> int:
    args, _ = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except JobError as error:
        raise SystemExit(f"{PREFIX}: error: {error}") from None


def _run(args) -> int:
    from models import distribute
    from models.config import ConfigError
    from models.evaluate import EvaluationError
    from models.train import (BEST_CHECKPOINT, CHECKPOINTS_DIR, LAST_CHECKPOINT, SelectionError, TrainingError,
                              train_models)

    if not args.records:
        raise JobError("no records: set SM_CHANNEL_RECORDS (the job's \"records\" channel) or pass --records")
    config, verbose, source = settings(args)
    try:
        chief, (kind, index), workers = distribute.is_chief(), distribute.task(), distribute.num_workers()
    except distribute.ClusterError as error:
        raise JobError(str(error)) from None
    run_dir = os.path.abspath(args.checkpoint_dir)
    print(f"{PREFIX}: task {kind} {index} of {workers} worker(s){' (chief)' if chief else ''}; code "
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
        print(f"{PREFIX}: final weights {name} sha256 {sha} sum|w| {total:.9g}", flush=True)
    if not chief:
        distribute.remove_worker_dir(run_dir)
        print(f"{PREFIX}: worker {index} done; its temporary run directory is removed", flush=True)
        return 0

    selected = selection["selected"]
    report = selection.get("report") or {}
    test = (report.get("models") or {}).get(selected, {})
    if "accuracy" in test:
        print(f"{PREFIX}: test_accuracy: {test['accuracy']:.4f} ({selected}, fold {report.get('test_fold')})",
              flush=True)
    print(f"{PREFIX}: exporting {selected} ({CHECKPOINTS_DIR}/{selected}/{BEST_CHECKPOINT}) to {args.model_dir}",
          flush=True)
    export_selected(run_dir, args.model_dir)
    copied = copy_outputs(run_dir, args.output_data_dir)
    print(f"{PREFIX}: wrote {', '.join(copied)} to {args.output_data_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
