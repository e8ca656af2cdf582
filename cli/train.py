"""`us8k train`: train the models of a configuration on the records, select by validation accuracy.

The configuration is a `models.config.TrainConfig`: its flags are generated from its fields
(`cli.train_config_flags`), over a previous run's config.json when `--config` names one. The work is
`models.train.train_models`.
"""
from __future__ import annotations

import argparse
import os
import sys

from cli.train_config_flags import add_config_arguments, config_from_flags, verbosity
from models.config import ConfigError, TrainConfig
from models.errors import EvaluationError, TrainingError
from tfdata.layout import SelectionError

ERRORS = (ConfigError, TrainingError, EvaluationError, SelectionError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the run, then one flag per TrainConfig field (dest = the field's name, default None:
    a flag not given takes --config's value, else TrainConfig's default)."""
    run = parser.add_argument_group("the run (not part of the configuration)")
    run.add_argument("--records", help="records directory (fold1..foldK shards, manifest.json); with --config, "
                                       "default: the records it names")
    run.add_argument("--output", required=True,
                     help="run directory (config.json, checkpoints, logs, selection.json)")
    run.add_argument("--config", metavar="RUN/config.json",
                     help="train a run's configuration again; flags given beside it override its values")
    run.add_argument("--force", action="store_true", help="retrain models that already finished")
    run.add_argument("--skip-evaluate", action="store_true", help="do not evaluate on the test fold")
    run.add_argument("--verbose", type=verbosity, default="auto", metavar="{auto,0,1,2}",
                     help="Keras progress: auto (default) is 1 on a terminal, else 2; 0 silent, 1 progress bar, "
                          "2 one line per epoch")
    add_config_arguments(parser)


def build_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """(TrainConfig, records directory) from the flags: --config's file if given (its missing keys
    take the dataclass defaults), then every configuration flag given, over it."""
    from models.config import manifest_sha256, read_run_config
    from tfdata.contract import MANIFEST_FILE

    config, content = TrainConfig(), {}
    if args.config:
        config, content = read_run_config(args.config)
    config = config_from_flags(args, config)
    records_dir = args.records or content.get("records")
    if not records_dir:
        raise ConfigError("--records is required (or --config RUN/config.json, which names them)")
    recorded = content.get("records_manifest_sha256")
    if recorded and manifest_sha256(records_dir) != recorded:
        print(f"us8k train: note: {os.path.join(records_dir, MANIFEST_FILE)} is not the manifest "
              f"{args.config} recorded (sha256 {recorded[:12]}…): other records", file=sys.stderr, flush=True)
    return config, records_dir


def run(args: argparse.Namespace) -> int:
    config, records_dir = build_config(args)
    from models import distribute, train

    if config.cpu_replicas:
        distribute.split_cpu(config.cpu_replicas)  # before anything initialises TensorFlow
    train.train_models(records_dir, args.output, config, force=args.force, evaluate=not args.skip_evaluate,
                       verbose=args.verbose)
    return 0
