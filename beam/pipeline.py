"""`us8k ingest`: the Beam job — UrbanSound8K metadata CSV + audio → per-fold TFRecord shards.

    ReadMetadata → DecodeClips ─┬─ records → PartitionByFold → WriteFold{k}: OUTPUT/fold{k}/fold{k}-SSSSS-of-NNNNN.tfrecord
                                └─ errors  → ErrorsToJson → WriteErrors: OUTPUT/errors.jsonl
    then the driver writes OUTPUT/manifest.json (counts per fold and class, parameters, CSV sha256).

OUTPUT and the dataset may be local paths, gs:// or s3:// (every read and write, the driver's
too, goes through Beam's FileSystems; S3 endpoint and credentials come from Beam's S3 options,
--s3_endpoint_url, --s3_access_key_id, --s3_secret_access_key, --s3_region_name…, else from
boto3's usual sources: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, ~/.aws…).

Every CSV row ends up either as a record or as a line of errors.jsonl; the run checks that
written + failed == rows and fails loudly otherwise. Re-running into the same OUTPUT replaces the
previous shards, errors and manifest, removed only once the runner has the job (beam.jobio: listed
before submitting, removed right after `pipeline.run()` returns); the manifest is written last, so
an output without one is incomplete. Anything else in OUTPUT is left alone.

Shards (default): the runner's bundles choose the count, --shard-mb caps each file's size. Each
fold is written by Beam's TFRecord sink with num_shards=0 and a byte cap (beam.sinks): every
bundle streams its records into a file of its own inside the decode stage and starts another
when the file reaches the cap, so nothing is grouped or held in memory and no file exceeds
--shard-mb (locally: about one file per worker and fold). `--shard-mb 0`: no cap.
`--planned-shards`: the shard count per fold is planned from the CSV's row counts instead (an
exact count whatever the runner; Beam then groups every record by shard and writes each in a
later stage, which on the FnApiRunner holds them all in memory and is slower; README).

`--dry_run=true` (Beam's TestOptions; true/1/yes, and false/0/no for "not a dry run", anything else
refused: beam.jobio.beam_args) builds the job without running it: with DataflowRunner it builds the
job (the pipeline proto, the --setup_file sdist staged as workflow.tar.gz) offline, without
credentials, and prints its steps and worker image; other runners ignore Beam's --dry_run (they would
run the job), so the pipeline is only built and its steps printed. Nothing under OUTPUT is touched.

Locally the job runs on Beam's FnApiRunner, which downloads nothing (Beam 2.77's DirectRunner
first tries to fetch the Prism binary), in `in_memory` mode with one worker per core: the runner
then runs each stage's partitions in parallel threads with in-memory data channels (libsndfile
reading from an in-memory fd, soxr and numpy's ufuncs release the GIL for most of the work, and
the workers import no TensorFlow: tfdata.example writes the Examples).
On 2 cores it was faster than `multi_threading` (the same threads plus in-process gRPC) and
`multi_processing` (a process per worker to start and feed over gRPC; with planned shards every 176 KB record also
crosses to the runner process and back); `us8k bench ingest --modes ...` compares them (figures:
README).

Any Beam option after ours passes to PipelineOptions, e.g. for Dataflow (docs/dataflow.md):

    us8k ingest --data-dir gs://BUCKET/UrbanSound8K --output gs://BUCKET/records \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import time


def _not_apitools_notice(record: logging.LogRecord) -> bool:
    """Beam logs "apitools not found" on the root logger at import when the GCP extra is absent."""
    return not str(record.msg).startswith("apitools not found")


def _not_in_memory_workers_notice(record: logging.LogRecord) -> bool:
    """FnApiRunner warns that in_memory with several workers has no parallel effect; in Beam 2.77 it
    does run each stage's partitions in parallel threads (tests/test_pipeline.py checks it)."""
    return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


logging.getLogger().addFilter(_not_apitools_notice)
logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(_not_in_memory_workers_notice)

import apache_beam as beam  # noqa: E402
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions  # noqa: E402

from beam.transforms import (ERRORS_TAG, FAILED_COUNTER, METRICS_NAMESPACE, RECORDS_TAG,  # noqa: E402
                             WRITTEN_COUNTER, BadRow, ClipRow, DecodeClips, RowError, header_columns, read_row,
                             written_counter_name)
from beam import jobio  # noqa: E402
from beam.sinks import WriteCappedTFRecords  # noqa: E402
from tfdata import audio  # noqa: E402
from tfdata import contract as c  # noqa: E402

SHARD_TARGET_MB = 100  # largest shard; planned: (target/2, target] MB, two per fold for the real dataset
                       # (~870 clips, ~150 MB), so a fold's shards are written, and later read, in parallel
RECORD_BYTES = 2 * c.CLIP_SAMPLES + 400  # ≥ one framed record: int16 waveform + metadata + 16 B framing (≈ 176 KB)
LOCAL_RUNNER = "FnApiRunner"  # in-process, downloads nothing
LOCAL_RUNNING_MODE = "in_memory"  # with workers > 1: threads, no gRPC; measured fastest of the three modes


class IngestError(RuntimeError):
    """The ingestion cannot run or did not account for every row; the message says why."""


@dataclasses.dataclass(frozen=True)
class IngestPlan:
    """What the job will do, known before it runs (the CSV is read and parsed once, by the driver)."""

    data_dir: str
    output_dir: str
    csv_path: str
    csv_sha256: str
    columns: dict[str, int]  # CSV column → index
    rows: list[ClipRow | BadRow]  # every non-blank data row, parsed; DecodeClips takes them as they are
    rows_per_fold: dict[int, int]  # valid rows only
    invalid_rows: int  # rows whose fields are bad (they go to errors.jsonl)
    shards_per_fold: dict[int, int]  # 0: the runner chooses
    shard_target_bytes: int  # no shard larger (0: no cap)
    sharding: str = "runner"  # "runner": the runner's bundles, capped in bytes; "planned": counts from the CSV


# ------------------------------------------------------------------------------------ planning
def plan_ingest(data_dir: str, output_dir: str, shard_target_bytes: int = SHARD_TARGET_MB * 10**6,
                planned_shards: bool = False) -> IngestPlan:
    """Read and hash the metadata CSV, count valid rows per fold, size the shards (planned_shards:
    a fixed count per fold from its rows; else the runner's, capped at shard_target_bytes)."""
    if planned_shards and shard_target_bytes <= 0:
        raise IngestError("planned shards need a shard size (--shard-mb > 0)")
    data_dir, output_dir = _absolute(data_dir), _absolute(output_dir)
    csv_path = FileSystems.join(data_dir, c.METADATA_CSV)
    try:
        with FileSystems.open(csv_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            raw = handle.read()
    except Exception:
        raise IngestError(f"metadata CSV not found: {csv_path}") from None
    lines = raw.decode("utf-8-sig", errors="replace").splitlines()
    if not lines:
        raise IngestError(f"metadata CSV is empty: {csv_path}")
    try:
        columns = header_columns(lines[0])
    except RowError as exc:
        raise IngestError(f"{exc}: {csv_path}") from None
    rows = [read_row(number, text, columns) for number, text in enumerate(lines[1:], start=2) if text.strip()]
    if not rows:
        raise IngestError(f"metadata CSV has a header and no rows: {csv_path}")
    rows_per_fold: dict[int, int] = {}
    invalid = 0
    for row in rows:
        if isinstance(row, BadRow):
            invalid += 1
        else:
            rows_per_fold[row.fold] = rows_per_fold.get(row.fold, 0) + 1
    rows_per_fold = dict(sorted(rows_per_fold.items()))
    shards = {fold: shards_for(count, shard_target_bytes) if planned_shards else 0
              for fold, count in rows_per_fold.items()}
    return IngestPlan(data_dir=data_dir, output_dir=output_dir, csv_path=csv_path,
                      csv_sha256=hashlib.sha256(raw).hexdigest(), columns=columns, rows=rows,
                      rows_per_fold=rows_per_fold, invalid_rows=invalid, shards_per_fold=shards,
                      shard_target_bytes=max(0, int(shard_target_bytes)),
                      sharding="planned" if planned_shards else "runner")


def shards_for(records: int, shard_target_bytes: int) -> int:
    """Shards for a fold: each at most the target size (≈ RECORD_BYTES per record), at least one
    and at most one per record."""
    return max(1, min(records, math.ceil(records * RECORD_BYTES / max(1, shard_target_bytes))))


def pipeline_options(pipeline_args: list[str] | None = None, error: type[Exception] = ValueError) -> PipelineOptions:
    """Beam options from the extra command-line arguments (--dry_run made explicit by
    jobio.beam_args, a bad value refused with `error`), with our local default runner.

    No --runner → FnApiRunner in LOCAL_RUNNING_MODE with one worker per core (unless the
    arguments set --direct_running_mode / --direct_num_workers themselves)."""
    args = jobio.beam_args(list(pipeline_args or []), error)
    options = PipelineOptions(args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = LOCAL_RUNNER
        direct = options.view_as(DirectOptions)
        if not _has_flag(args, "--direct_running_mode"):
            direct.direct_running_mode = LOCAL_RUNNING_MODE
        if not _has_flag(args, "--direct_num_workers"):
            direct.direct_num_workers = local_cores()
    return options


def local_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe_runner(options: PipelineOptions) -> dict:
    """Runner name (+ local mode and workers) as recorded in the manifest."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    described = {"runner": runner if isinstance(runner, str) else type(runner).__name__}
    if described["runner"] in (LOCAL_RUNNER, "DirectRunner", "SwitchingDirectRunner"):
        direct = options.view_as(DirectOptions)
        workers = direct.direct_num_workers or os.cpu_count()
        described.update(running_mode=direct.direct_running_mode, workers=workers)
    return described


# ------------------------------------------------------------------------------------ the job
def shard_prefix(output_dir: str, fold: int) -> str:
    """WriteToTFRecord's path prefix for a fold: OUTPUT/fold{k}/fold{k}."""
    return FileSystems.join(output_dir, c.fold_dir_name(fold), c.fold_dir_name(fold))


def _fold_index(keyed_example, num_partitions):
    return keyed_example[0] - 1


def _example(keyed_example) -> bytes:
    return keyed_example[1]


def _error_json(error: dict) -> str:
    return json.dumps(error, sort_keys=True)


def build_pipeline(pipeline: beam.Pipeline, plan: IngestPlan) -> None:
    """Apply the ingestion transforms to `pipeline` (nothing runs until pipeline.run())."""
    decoded = (
        pipeline
        | "ReadMetadata" >> beam.Create(plan.rows)  # the parsed rows, redistributed over the workers
        | "DecodeClips" >> DecodeClips(plan.data_dir))
    by_fold = decoded[RECORDS_TAG] | "PartitionByFold" >> beam.Partition(_fold_index, c.NUM_FOLDS)
    for fold, shards in plan.shards_per_fold.items():
        prefix = shard_prefix(plan.output_dir, fold)
        if plan.sharding == "planned":
            write = beam.io.WriteToTFRecord(prefix, file_name_suffix=c.RECORD_SUFFIX, num_shards=shards)
        else:  # written where decoded, a new file per bundle and whenever one reaches the cap
            write = WriteCappedTFRecords(prefix, c.RECORD_SUFFIX, plan.shard_target_bytes, RECORD_BYTES)
        _ = (by_fold[fold - 1]
             | f"ExamplesFold{fold}" >> beam.Map(_example).with_output_types(bytes)
             | f"WriteFold{fold}" >> write)
    _ = (decoded[ERRORS_TAG]
         | "ErrorsToJson" >> beam.Map(_error_json).with_output_types(str)
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, c.ERRORS_FILE),
                                                shard_name_template="", num_shards=1))


def run_ingest(data_dir: str, output_dir: str, pipeline_args: list[str] | None = None, progress=print,
               shard_target_bytes: int = SHARD_TARGET_MB * 10**6, planned_shards: bool = False) -> dict:
    """Plan, run the Beam job, check that every row is accounted for, write and return the manifest.

    With Beam's --dry_run: build the job, touch nothing, return jobio.describe_job's summary instead."""
    started = time.perf_counter()
    options = pipeline_options(pipeline_args, IngestError)
    FileSystems.set_options(options)  # the driver's own reads and writes see the S3 options too
    plan = plan_ingest(data_dir, output_dir, shard_target_bytes, planned_shards)
    runner = describe_runner(options)
    _print_plan(plan, runner, progress)

    if jobio.dry_run_requested(options):
        return jobio.dry_run_job("us8k ingest", build_pipeline, plan, options, f"nothing written to {plan.output_dir}",
                                 progress, IngestError)
    result = jobio.run_pipeline(options, build_pipeline, plan, IngestError, ingest_output(plan.output_dir), progress)

    counters = jobio.counters(result, METRICS_NAMESPACE)
    errors = jobio.sort_jsonl(FileSystems.join(plan.output_dir, c.ERRORS_FILE), key=lambda e: e["line"])
    shard_files = _shard_files(plan)
    manifest = _manifest(plan, runner, counters, errors, shard_files, time.perf_counter() - started)
    written, failed, rows = manifest["examples"], manifest["errors"], manifest["csv"]["rows"]
    if written + failed != rows:
        raise IngestError(f"rows lost: {written} written + {failed} failed != {rows} rows in the CSV")
    if counters.get(FAILED_COUNTER, 0) != failed or counters.get(WRITTEN_COUNTER, 0) != written:
        raise IngestError(f"counters disagree: {counters.get(WRITTEN_COUNTER, 0)} written / "
                          f"{counters.get(FAILED_COUNTER, 0)} failed counted, {written} per fold and class, "
                          f"{failed} lines in {c.ERRORS_FILE}")
    jobio.write_text(FileSystems.join(plan.output_dir, c.MANIFEST_FILE), json.dumps(manifest, indent=2) + "\n")

    seconds = manifest["elapsed_seconds"]
    progress(f"us8k ingest: {written} clips written + {failed} failed == {rows} rows in the CSV "
             f"(nothing lost) in {seconds:.1f} s ({rows / max(seconds, 1e-9):.1f} rows/s)")
    for fold, entry in manifest["folds"].items():
        progress(f"  fold {fold:>2}: {entry['examples']:>5} written, {entry['errors']:>3} failed, "
                 f"{entry['shards']} shard(s)")
    if failed:
        progress(f"  {failed} failure(s) listed in {FileSystems.join(plan.output_dir, c.ERRORS_FILE)}")
    progress(f"  manifest: {FileSystems.join(plan.output_dir, c.MANIFEST_FILE)}")
    return manifest


# ------------------------------------------------------------------------------------ outputs
def ingest_output(output_dir: str) -> jobio.Output:
    """What a run leaves in OUTPUT (jobio.run_pipeline removes an earlier run's once the runner has the job)."""
    shards = tuple(c.fold_shard_glob(fold) for fold in range(1, c.NUM_FOLDS + 1))
    return jobio.Output(output_dir, (c.MANIFEST_FILE, c.ERRORS_FILE) + shards, marker=c.MANIFEST_FILE)


def _shard_files(plan: IngestPlan) -> dict[int, dict[str, int]]:
    """{fold: {"shards": files, "largest_shard_bytes": size}} from the fold glob; checks the counts
    against the plan when the plan fixed them and the sizes against the cap when there is one."""
    found = {}
    for fold, planned in plan.shards_per_fold.items():
        pattern = FileSystems.join(plan.output_dir, c.fold_shard_glob(fold))
        files = FileSystems.match([pattern])[0].metadata_list
        largest = max((int(m.size_in_bytes) for m in files), default=0)
        found[fold] = {"shards": len(files), "largest_shard_bytes": largest}
        if planned and len(files) != planned:
            raise IngestError(f"fold {fold}: {len(files)} shard files written, {planned} planned")
        if plan.sharding == "runner" and plan.shard_target_bytes and largest > plan.shard_target_bytes:
            raise IngestError(f"fold {fold}: a shard of {largest} bytes exceeds the cap of "
                              f"{plan.shard_target_bytes} bytes")
    return found


def _manifest(plan: IngestPlan, runner: dict, counters: dict[str, int], errors: list[dict],
              shard_files: dict[int, dict[str, int]], seconds: float) -> dict:
    folds = {}
    classes = {name: 0 for name in c.CLASS_NAMES}
    for fold, rows in plan.rows_per_fold.items():
        per_class = {name: counters.get(written_counter_name(fold, label), 0)
                     for label, name in enumerate(c.CLASS_NAMES)}
        for name, count in per_class.items():
            classes[name] += count
        folds[str(fold)] = {
            "rows": rows,
            "examples": sum(per_class.values()),
            "errors": sum(1 for e in errors if e.get("fold") == fold),
            "shards": shard_files[fold]["shards"],
            "largest_shard_bytes": shard_files[fold]["largest_shard_bytes"],
            "shard_glob": c.fold_shard_glob(fold),
            "classes": per_class,
        }
    return {
        "csv": {"path": plan.csv_path, "sha256": plan.csv_sha256, "rows": len(plan.rows),
                "invalid_rows": plan.invalid_rows},
        "data_dir": plan.data_dir,
        "examples": sum(f["examples"] for f in folds.values()),
        "errors": len(errors),
        "errors_file": c.ERRORS_FILE,
        "folds": folds,
        "classes": classes,
        "parameters": {
            "sample_rate": c.SAMPLE_RATE,
            "clip_samples": c.CLIP_SAMPLES,
            "waveform": "int16 PCM, little-endian, zero-padded or cropped to clip_samples",
            "resample_quality": audio.RESAMPLE_QUALITY,
            "shard_target_bytes": plan.shard_target_bytes,
            "sharding": plan.sharding,  # "runner": the runner's bundles, each file ≤ shard_target_bytes (0: no cap)
            "shards_per_fold": {str(f): n["shards"] for f, n in shard_files.items()},
            **runner,
        },
        "counters": {WRITTEN_COUNTER: counters.get(WRITTEN_COUNTER, 0), FAILED_COUNTER: counters.get(FAILED_COUNTER, 0)},
        "elapsed_seconds": round(seconds, 3),
    }


def _print_plan(plan: IngestPlan, runner: dict, progress) -> None:
    progress(f"us8k ingest: {len(plan.rows)} rows in {plan.csv_path} (sha256 {plan.csv_sha256[:12]}…)")
    for fold, rows in plan.rows_per_fold.items():
        shards = plan.shards_per_fold[fold] or "runner-chosen"
        progress(f"  fold {fold:>2}: {rows:>5} rows → {shards} shard(s)")
    cap = f"at most {plan.shard_target_bytes / 10**6:g} MB each" if plan.shard_target_bytes else "no size cap"
    progress(f"  shards: {'planned from the CSV' if plan.sharding == 'planned' else 'runner-chosen'}, {cap}")
    if plan.invalid_rows:
        progress(f"  {plan.invalid_rows} row(s) with bad fields (they will be listed in {c.ERRORS_FILE})")
    mode = f" ({runner['running_mode']}, {runner['workers']} workers)" if "running_mode" in runner else ""
    progress(f"  runner: {runner['runner']}{mode} → {plan.output_dir}")


def _absolute(path: str) -> str:
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def _has_flag(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True,
                        help="UrbanSound8K root (metadata/UrbanSound8K.csv, audio/fold1..10/); local or gs://")
    parser.add_argument("--output", required=True, help="records directory (fold{k}/*.tfrecord, manifest, errors)")
    parser.add_argument("--shard-mb", type=float, default=SHARD_TARGET_MB,
                        help=f"largest shard file in MB (default {SHARD_TARGET_MB}); the runner's bundles "
                             "choose the count (locally about one file per worker and fold); 0: no cap")
    parser.add_argument("--planned-shards", action="store_true",
                        help="plan an exact shard count per fold from the CSV (each at most --shard-mb) "
                             "instead; slower locally: every record is grouped by shard first")
    parser.epilog = ("Paths may be local, gs:// or s3://. Any other option is a Beam pipeline option, e.g. "
                     "--runner DataflowRunner --project P --region R --temp_location gs://B/tmp "
                     "--setup_file ./setup.py (--dry_run=true: build the job, do not run it; true/false, 1/0, yes/no); "
                     "--s3_endpoint_url URL --s3_region_name R (else the AWS_* variables); locally "
                     f"--direct_running_mode / --direct_num_workers (default {LOCAL_RUNNER}, "
                     f"{LOCAL_RUNNING_MODE}, one worker per core).")
    parser.allow_abbrev = False  # `--out` must not be mistaken for --output, nor a Beam flag for ours


PASSES_UNKNOWN_ARGS = True  # us8k hands every option not declared here to Beam's PipelineOptions


def run(args: argparse.Namespace) -> int:
    if not args.shard_mb >= 0:
        raise SystemExit(f"us8k ingest: error: --shard-mb must be positive (or 0: no cap), got {args.shard_mb}")
    if args.planned_shards and not args.shard_mb > 0:
        raise SystemExit("us8k ingest: error: --planned-shards needs --shard-mb > 0")
    try:
        run_ingest(args.data_dir, args.output, list(getattr(args, "extra_args", [])),
                   shard_target_bytes=int(args.shard_mb * 10**6), planned_shards=args.planned_shards)
    except IngestError as exc:
        raise SystemExit(f"us8k ingest: error: {exc}") from None
    return 0
