"""`us8k ingest`: the command line of the ingestion job (beam.ingest): its flags, their checks, and
where the job's lines go (stdout, flushed). Every option it does not declare is a Beam pipeline option.

Logging: Beam's notices that say nothing to a user are filtered here (beam.notices), before the
command first imports Beam — in this process only, which drives the job and, with the local runner,
also holds its worker threads. A worker process elsewhere (Beam's multi_processing mode, Dataflow)
runs none of this, and needs none of it: the ingestion's steps log none of those notices (the apitools
one, logged while a worker imports Beam, comes before any code of ours could filter it).
"""
from __future__ import annotations

import argparse
import functools

from beam.notices import quiet_beam_notices  # logging only: no Beam imported
from cli import CommandError

PASSES_UNKNOWN_ARGS = True  # us8k hands every option not declared here to Beam's PipelineOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    quiet_beam_notices()  # here already: the defaults below import Beam, whose import logs one of them
    from beam.driver import LOCAL_RUNNER, LOCAL_RUNNING_MODE
    from beam.fold_assignment import DEFAULT_NUM_FOLDS, MIN_FOLDS
    from beam.ingest import SHARD_TARGET_MB
    from beam.layouts import LAYOUTS

    parser.add_argument("--data-dir", required=True,
                        help="the collection's root, local, gs:// or s3:// (docs/data.md: its layouts)")
    parser.add_argument("--output", required=True, help="records directory (fold{k}/*.tfrecord, manifest, errors)")
    parser.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="urbansound8k: metadata/UrbanSound8K.csv + audio/fold<k>/; esc50: meta/esc50.csv + "
                             "audio/; csv: metadata.csv (file_name, label[, fold][, group]); folders: <class>/…/"
                             "<audio file>. Default: detected, looking for those in that order")
    parser.add_argument("--classes", default=None,
                        help="the class list, comma-separated, in label order (folders and csv layouts; default: "
                             "the sorted folder names or labels); any other folder or label is a listed failure")
    parser.add_argument("--num-folds", type=int, default=None,
                        help=f"folds to assign by group where the data has none (folders; csv without a fold "
                             f"column): default {DEFAULT_NUM_FOLDS}, at least {MIN_FOLDS}")
    parser.add_argument("--shard-mb", type=float, default=SHARD_TARGET_MB,
                        help=f"largest shard file in MB (default {SHARD_TARGET_MB}); the runner's bundles "
                             "choose the count (locally about one file per worker and fold); 0: no cap")
    parser.add_argument("--planned-shards", action="store_true",
                        help="plan an exact shard count per fold from the CSV (each at most --shard-mb) "
                             "instead; slower locally: every record is grouped by shard first")
    parser.epilog = ("Paths may be local, gs:// or s3://. Any other option is a Beam pipeline option, e.g. "
                     "--runner DataflowRunner --project P --region R --temp_location gs://B/tmp "
                     "--setup_file ./setup.py (--dry_run=true: build the job, do not run it; true/false, 1/0, "
                     "yes/no); --s3_endpoint_url URL --s3_region_name R (else the AWS_* variables); locally "
                     f"--direct_running_mode / --direct_num_workers (default {LOCAL_RUNNER}, "
                     f"{LOCAL_RUNNING_MODE}, one worker per core).")
    parser.allow_abbrev = False  # `--out` must not be mistaken for --output, nor a Beam flag for ours


def run(args: argparse.Namespace) -> int:
    if not args.shard_mb >= 0:
        raise CommandError(f"--shard-mb must be positive (or 0: no cap), got {args.shard_mb}")
    if args.planned_shards and not args.shard_mb > 0:
        raise CommandError("--planned-shards needs --shard-mb > 0")
    classes = _class_list(args.classes)
    quiet_beam_notices()  # again for a caller that did not parse (it installs each filter once)
    from beam.fold_assignment import MIN_FOLDS
    from beam.ingest import IngestError, run_ingest

    if args.num_folds is not None and args.num_folds < MIN_FOLDS:
        raise CommandError(f"--num-folds must be at least {MIN_FOLDS}, got {args.num_folds}")
    try:
        run_ingest(args.data_dir, args.output, list(getattr(args, "extra_args", [])),
                   progress=functools.partial(print, flush=True), shard_target_bytes=int(args.shard_mb * 10**6),
                   planned_shards=args.planned_shards, layout=args.layout, classes=classes,
                   num_folds=args.num_folds)
    except IngestError as exc:
        raise CommandError(str(exc)) from None
    return 0



def _class_list(text: str | None) -> tuple[str, ...] | None:
    """--classes as a checked class list (tfdata.classes), None when not given; CommandError otherwise."""
    if text is None:
        return None
    from tfdata.classes import ClassListError, parse_class_list

    try:
        return parse_class_list(text)
    except ClassListError as exc:
        message = str(exc)
        raise CommandError(message if message.startswith("--classes") else f"--classes: {message}") from None
