"""`us8k export RUN --output EXPORT`: the selected model as a raw-waveform SavedModel with its calibration.

The work is `models.export.export_run`; its progress lines are printed as `us8k export: …`.
"""
from __future__ import annotations

import argparse

from cli.output import progress
from models.errors import ExportError
from tfdata.contract import DEFAULT_THRESHOLD
from tfdata.layout import CALIBRATION_FILE, SELECTION_FILE, SelectionError

ERRORS = (ExportError, SelectionError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=f"training run directory (holds {SELECTION_FILE})")
    parser.add_argument("--output", required=True, metavar="EXPORT",
                        help="export directory: EXPORT/model/1/ (SavedModel) and EXPORT/metadata.json")
    parser.add_argument("--threshold", type=float, default=None,
                        help="top probability below which a prediction is undetermined (default: the one "
                             f"calibrated by `us8k evaluate` in RUN/{CALIBRATION_FILE}, else {DEFAULT_THRESHOLD})")
    parser.add_argument("--temperature", type=float, default=None,
                        help=f"temperature applied in the graph (default: RUN/{CALIBRATION_FILE}'s, else 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing EXPORT/model/1/")


def run(args: argparse.Namespace) -> int:
    from models.export import export_run

    export_run(args.run, args.output, threshold=args.threshold, temperature=args.temperature,
               overwrite=args.overwrite, log=progress("export"))
    return 0
