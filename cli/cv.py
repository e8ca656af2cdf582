"""`us8k cv`: cross-validation over the records' own folds (10-fold on UrbanSound8K's predefined folds, its
official protocol; 5-fold on ESC-50's).

The configuration flags are `us8k train`'s but the fold split (`cli.train_config_flags`), which the
protocol chooses per fold; the work is `models.cv.run_cv`.
"""
from __future__ import annotations

import argparse

from cli.train_config_flags import add_config_arguments, config_from_flags, int_list, verbosity
from models.config import SPLIT_FIELDS, ConfigError
from models.errors import CVError, EvaluationError, TrainingError

ERRORS = (CVError, ConfigError, TrainingError, EvaluationError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("the run")
    run.add_argument("--records", required=True, help="records directory (fold1..foldK shards)")
    run.add_argument("--output", required=True, help="CV directory (cv.json, fold01..foldK/, summary.json/.md)")
    run.add_argument("--folds", type=int_list, default=None,
                     help="comma-separated test folds to run (default: every fold present)")
    run.add_argument("--force", action="store_true", help="retrain folds that already finished")
    run.add_argument("--verbose", type=verbosity, default="auto", metavar="{auto,0,1,2}",
                     help="Keras progress (as us8k train)")
    add_config_arguments(parser, exclude=SPLIT_FIELDS)


def run(args: argparse.Namespace) -> int:
    config = config_from_flags(args)
    from models import cv, distribute

    if config.cpu_replicas:
        distribute.split_cpu(config.cpu_replicas)
    cv.run_cv(args.records, args.output, config, folds=args.folds, force=args.force, verbose=args.verbose)
    return 0
