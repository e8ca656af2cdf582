"""`us8k label`: the command line of the labelling job (beam.label): its flags, their checks, and where
the lines go (the driver's and the workers' progress lines on stdout, flushed). Every option it does
not declare is a Beam pipeline option.

Logging, set here and not on import: Beam's notices that say nothing to a user are filtered
(beam.notices) before the command first imports Beam, and the workers' progress logger
(beam.label_transforms.PROGRESS_LOGGER) prints on stdout. Both hold in this process, which drives the
job and, with the local in_memory or multi_threading runner, also holds its worker threads. A worker
process elsewhere (Beam's multi_processing mode, Dataflow) runs none of this: there the model handler
filters the notice that RunInference logs (beam.label_model), and the progress lines go where that
worker's logging sends them (on Dataflow, the worker logs).
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys

from beam.notices import quiet_beam_notices  # logging only: no Beam imported
from cli import CommandError

PASSES_UNKNOWN_ARGS = True  # us8k hands every option not declared here to Beam's PipelineOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    quiet_beam_notices()  # here already: the defaults below import Beam, whose import logs one of them
    from beam.label import ERRORS_FILE, MAX_FILE_MB, MAX_SECONDS, PREDICTIONS_FILE, SUMMARY_FILE
    from beam.label_model import MAX_BATCH_WINDOWS

    parser.add_argument("input", metavar="INPUT",
                        help="a directory (its audio files, at any depth), a glob, or a CSV listing the files "
                             "(a path column, or UrbanSound8K's metadata CSV); local, gs:// or s3://")
    parser.add_argument("--model", required=True, metavar="EXPORT",
                        help="an `us8k export` directory (model/<n>/ + metadata.json) or a SavedModel directory")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help=f"where {PREDICTIONS_FILE}, {ERRORS_FILE} and {SUMMARY_FILE} go (replaced if there)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="'undetermined' below this top probability (default: the model's, else 0.6)")
    parser.add_argument("--windows", action="store_true",
                        help="add each file's per-window timeline (4 s every 2 s) and event segments")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help=f"longest file labelled; a longer one goes to {ERRORS_FILE} (default {MAX_SECONDS:g})")
    parser.add_argument("--max-file-mb", type=float, default=MAX_FILE_MB,
                        help=f"largest file read, in MiB (default {MAX_FILE_MB:g})")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH_WINDOWS,
                        help=f"most 4 s windows per model call (default {MAX_BATCH_WINDOWS}, as the endpoint)")
    parser.epilog = ("Any other option is a Beam pipeline option, e.g. --runner DataflowRunner --project P "
                     "--region R --temp_location gs://B/tmp --setup_file ./setup.py (--dry_run=true: build the "
                     "job, do not run it; true/false, 1/0, yes/no); --s3_endpoint_url URL --s3_region_name R "
                     "(else the AWS_* variables); "
                     "locally --direct_num_workers N (default: FnApiRunner, in_memory, one worker per core).")
    parser.allow_abbrev = False  # `--out` must not be mistaken for --output, nor a Beam flag for ours


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CommandError(f"--threshold must be in [0, 1], got {args.threshold}")
    if not 0.0 < args.max_seconds < float("inf"):
        raise CommandError(f"--max-seconds must be a positive number, got {args.max_seconds}")
    if not 0.0 < args.max_file_mb < float("inf"):
        raise CommandError(f"--max-file-mb must be a positive number, got {args.max_file_mb}")
    if args.max_batch < 1:
        raise CommandError(f"--max-batch must be at least 1, got {args.max_batch}")
    quiet_beam_notices()  # again for a caller that did not parse (it installs each filter once)
    from beam.label import LabelError, run_label
    from beam.label_transforms import PROGRESS_LOGGER

    _log_to_stdout(logging.getLogger(PROGRESS_LOGGER))
    try:
        run_label(args.input, args.model, args.output, list(getattr(args, "extra_args", [])),
                  threshold=args.threshold, windows=args.windows, max_seconds=args.max_seconds,
                  max_file_mb=args.max_file_mb, max_batch_windows=args.max_batch,
                  progress=functools.partial(print, flush=True))
    except LabelError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _log_to_stdout(log: logging.Logger) -> None:
    """The workers' progress lines on stdout beside the driver's, once (their own lines: no prefix, no level)."""
    if not any(getattr(h, "_us8k_label", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._us8k_label = True
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
