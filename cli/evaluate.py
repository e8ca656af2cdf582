"""`us8k evaluate RUN`: test-fold metrics, calibration and (opt-in) robustness of a run's models.

The work is `models.evaluate.evaluate_run`; `--robustness` hands it `models.robustness`'s check.
"""
from __future__ import annotations

import argparse

from models.config import EVAL_BATCH_SIZE
from models.errors import EvaluationError
from tfdata import contract as c
from tfdata.layout import SELECTION_FILE, SelectionError

ERRORS = (EvaluationError, SelectionError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help=f"training run directory (holds {SELECTION_FILE})")
    parser.add_argument("--threshold", type=float, default=c.DEFAULT_THRESHOLD,
                        help=f"undetermined below this top probability (default {c.DEFAULT_THRESHOLD})")
    parser.add_argument("--records", default=None, help="records directory (default: the one trained on)")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE)
    parser.add_argument("--robustness", action="store_true",
                        help="also measure the selected model on the test fold re-encoded (MP3/OGG), at other "
                             "levels, resampled and embedded in longer recordings (slower)")


def run(args: argparse.Namespace) -> int:
    from models.evaluate import evaluate_run

    check = None
    if args.robustness:
        from models.robustness import evaluate_robustness  # PyAV and soxr: only for --robustness

        check = evaluate_robustness
    evaluate_run(args.run, threshold=args.threshold, batch_size=args.batch_size, records_dir=args.records,
                 robustness=check)
    return 0
