"""The SageMaker training job's entry point (`us8k launch-training` ships it): train, evaluate, export.

Runs in the SageMaker TensorFlow training container (TF 2.19, CPython 3.12) on the container's own
TensorFlow, Keras and numpy: the job's source_dir holds only tfdata/, models/ and a `job_entry.py`
that calls `main()` here, and no requirements.txt, so nothing is installed over them.

Inputs, as SageMaker's training toolkit (sagemaker-training, started by the image's
sagemaker-tensorflow-training) delivers them (each also a flag, for a local run):
  SM_CHANNEL_RECORDS   the "records" channel: fold1..foldK TFRecord shards + manifest.json (the
                       classes and folds the run takes, `tfdata.classes.read_dataset_info`)
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
  SM_OUTPUT_DATA_DIR   /opt/ml/output/data: the report, selection, config, classes, calibration, history
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
refusing "other records". Progress goes to stdout; failures end with `us8k job: error: <reason>` on stderr.
This module checks the channel and the config, then hands over to models.job_run (the training, the
export and the outputs), which imports TensorFlow: a refused job fails at once.

Everything this module imports, directly or through the modules it imports, is in that image: no
soundfile, soxr, PyAV or Beam (the import-linter contract "training-image" in .importlinter checks it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from models.config import ConfigError, TrainConfig
from models.errors import JobError
from models.job_contract import (
    CHANNEL,
    CHECKPOINT_DIR,
    CONFIG_HYPERPARAMETER,
    LOG_PREFIX,
    TENSORBOARD_DIR,
    VERBOSE_HYPERPARAMETER,
)


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
    """The job's entry point: 0 when it trained (and, on the chief, exported); a failure prints
    `us8k job: error: <reason>` on stderr and returns 1."""
    args, _ = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_job(args)
    except JobError as error:
        print(f"{LOG_PREFIX}: error: {error}", file=sys.stderr, flush=True)
        return 1


def run_job(args) -> int:
    """Check the channel and the config, then run the job (models.job_run: TensorFlow is imported there)."""
    if not args.records:
        raise JobError("no records: set SM_CHANNEL_RECORDS (the job's \"records\" channel) or pass --records")
    config, verbose, source = settings(args)
    from models import job_run  # TensorFlow only now (seconds): a job refused above fails at once

    return job_run.run(args, config, verbose, source)
