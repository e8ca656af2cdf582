"""`us8k ingest`: the Beam job — UrbanSound8K metadata CSV + audio → per-fold TFRecord shards.

    ReadMetadata → DecodeClips ─┬─ records → PartitionByFold → WriteFold{k}: OUTPUT/fold{k}/fold{k}-SSSSS-of-NNNNN.tfrecord
                                └─ errors  → ErrorsToJson → WriteErrors: OUTPUT/errors.jsonl
    then the driver writes OUTPUT/manifest.json (counts per fold and class, parameters, CSV sha256).

Every CSV row ends up either as a record or as a line of errors.jsonl; the run checks that
written + failed == rows and fails loudly otherwise. Re-running into the same OUTPUT first
removes the previous shards, errors and manifest (the manifest is written last, so an output
without one is incomplete).

Shards per fold are planned from the CSV's row counts (at most --shard-mb each). `--shard-mb 0`
lets the runner choose instead: one file per worker bundle and fold; on the FnApiRunner the
records are then written inside the decode stage instead of being grouped in memory and written
by a later stage per shard (faster locally: `us8k bench ingest` measures both; README).

Locally the job runs on Beam's FnApiRunner, which downloads nothing (Beam 2.77's DirectRunner
first tries to fetch the Prism binary), in `in_memory` mode with one worker per core: the runner
then runs each stage's partitions in parallel threads with in-memory data channels (decoding,
resampling and numpy release the GIL for much of their work; OpenBLAS is held to one thread).
On 2 cores it was faster than `multi_threading` (the same threads plus in-process gRPC) and
`multi_processing` (each worker imports TensorFlow; with planned shards every 176 KB record also
crosses to the runner process and back); `us8k bench ingest --modes ...` compares them (figures:
README).

Any Beam option after ours passes to PipelineOptions, e.g. for Dataflow:

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
from threadpoolctl import threadpool_limits  # noqa: E402

from beam.transforms import (ERRORS_TAG, FAILED_COUNTER, METRICS_NAMESPACE, RECORDS_TAG,  # noqa: E402
                             WRITTEN_COUNTER, BadRow, ClipRow, DecodeClips, RowError, header_columns, read_row,
                             written_counter_name)
from tfdata import audio  # noqa: E402
from tfdata import contract as c  # noqa: E402

SHARD_TARGET_MB = 100  # shards of (target/2, target] MB: two per fold for the real dataset (~870 clips,
                       # ~150 MB), so a fold's shards are written, and later read, in parallel
RECORD_BYTES = 2 * c.CLIP_SAMPLES + 400  # ≈ one serialised Example: int16 waveform + metadata (≈ 176 KB)
LOCAL_RUNNER = "FnApiRunner"  # in-process, downloads nothing
LOCAL_RUNNING_MODE = "in_memory"  # with workers > 1: threads, no gRPC; measured fastest of the three modes
STALE_PATTERNS = ("*" + c.RECORD_SUFFIX, "beam-temp-*")  # what a previous run left in a fold directory


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
    shard_target_bytes: int


# ------------------------------------------------------------------------------------ planning
def plan_ingest(data_dir: str, output_dir: str, shard_target_bytes: int = SHARD_TARGET_MB * 10**6) -> IngestPlan:
    """Read and hash the metadata CSV, count valid rows per fold, size the shards."""
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
    shards = {fold: shards_for(count, shard_target_bytes) if shard_target_bytes > 0 else 0
              for fold, count in rows_per_fold.items()}
    return IngestPlan(data_dir=data_dir, output_dir=output_dir, csv_path=csv_path,
                      csv_sha256=hashlib.sha256(raw).hexdigest(), columns=columns, rows=rows,
                      rows_per_fold=rows_per_fold, invalid_rows=invalid, shards_per_fold=shards,
                      shard_target_bytes=int(shard_target_bytes))


def shards_for(records: int, shard_target_bytes: int) -> int:
    """Shards for a fold: each at most the target size (≈ RECORD_BYTES per record), at least one
    and at most one per record."""
    return max(1, min(records, math.ceil(records * RECORD_BYTES / max(1, shard_target_bytes))))


def pipeline_options(pipeline_args: list[str] | None = None) -> PipelineOptions:
    """Beam options from the extra command-line arguments, with our local default runner.

    No --runner → FnApiRunner in LOCAL_RUNNING_MODE with one worker per core (unless the
    arguments set --direct_running_mode / --direct_num_workers themselves)."""
    args = list(pipeline_args or [])
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
        _ = (by_fold[fold - 1]
             | f"ExamplesFold{fold}" >> beam.Map(_example).with_output_types(bytes)
             | f"WriteFold{fold}" >> beam.io.WriteToTFRecord(
                 shard_prefix(plan.output_dir, fold), file_name_suffix=c.RECORD_SUFFIX, num_shards=shards))
    _ = (decoded[ERRORS_TAG]
         | "ErrorsToJson" >> beam.Map(_error_json).with_output_types(str)
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, c.ERRORS_FILE),
                                                shard_name_template="", num_shards=1))


def run_ingest(data_dir: str, output_dir: str, pipeline_args: list[str] | None = None, progress=print,
               shard_target_bytes: int = SHARD_TARGET_MB * 10**6) -> dict:
    """Plan, run the Beam job, check that every row is accounted for, write and return the manifest."""
    started = time.perf_counter()
    plan = plan_ingest(data_dir, output_dir, shard_target_bytes)
    options = pipeline_options(pipeline_args)
    runner = describe_runner(options)
    _print_plan(plan, runner, progress)

    _clear_previous_output(plan.output_dir)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan)
    with threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread per worker thread; restored after
        result = pipeline.run()
        state = result.wait_until_finish()
    if str(state) not in ("DONE", "PipelineState.DONE"):
        raise IngestError(f"Beam job ended in state {state}")

    counters = _counters(result)
    errors = _sort_errors(plan.output_dir)
    shard_files = _shard_files(plan)
    manifest = _manifest(plan, runner, counters, errors, shard_files, time.perf_counter() - started)
    written, failed, rows = manifest["examples"], manifest["errors"], manifest["csv"]["rows"]
    if written + failed != rows:
        raise IngestError(f"rows lost: {written} written + {failed} failed != {rows} rows in the CSV")
    if counters.get(FAILED_COUNTER, 0) != failed or counters.get(WRITTEN_COUNTER, 0) != written:
        raise IngestError(f"counters disagree: {counters.get(WRITTEN_COUNTER, 0)} written / "
                          f"{counters.get(FAILED_COUNTER, 0)} failed counted, {written} per fold and class, "
                          f"{failed} lines in {c.ERRORS_FILE}")
    _write_text(FileSystems.join(plan.output_dir, c.MANIFEST_FILE), json.dumps(manifest, indent=2) + "\n")

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
def _clear_previous_output(output_dir: str) -> None:
    """Remove what an earlier run wrote (manifest first); leaves anything else in OUTPUT alone."""
    for name in (c.MANIFEST_FILE, c.ERRORS_FILE):
        path = FileSystems.join(output_dir, name)
        if FileSystems.exists(path):
            FileSystems.delete([path])
    for fold in range(1, c.NUM_FOLDS + 1):
        fold_dir = FileSystems.join(output_dir, c.fold_dir_name(fold))
        patterns = [FileSystems.join(fold_dir, pattern) for pattern in STALE_PATTERNS]
        stale = [m.path for found in FileSystems.match(patterns) for m in found.metadata_list]
        if stale:
            FileSystems.delete(stale)
        if "://" not in fold_dir and os.path.isdir(fold_dir) and not os.listdir(fold_dir):
            os.rmdir(fold_dir)
    if "://" not in output_dir:
        os.makedirs(output_dir, exist_ok=True)


def _shard_files(plan: IngestPlan) -> dict[int, int]:
    """Shard files written per fold; checks them against the plan when the plan fixed them."""
    found = {}
    for fold, planned in plan.shards_per_fold.items():
        pattern = FileSystems.join(plan.output_dir, c.fold_shard_glob(fold))
        found[fold] = len(FileSystems.match([pattern])[0].metadata_list)
        if planned and found[fold] != planned:
            raise IngestError(f"fold {fold}: {found[fold]} shard files written, {planned} planned")
    return found


def _counters(result) -> dict[str, int]:
    """Our namespace's counters: committed values where the runner has them, else attempted."""
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def _sort_errors(output_dir: str) -> list[dict]:
    """Read errors.jsonl, rewrite it sorted by CSV line (deterministic output), return its entries."""
    path = FileSystems.join(output_dir, c.ERRORS_FILE)
    text = ""
    if FileSystems.exists(path):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            text = handle.read().decode()
    errors = sorted((json.loads(line) for line in text.splitlines() if line.strip()), key=lambda e: e["line"])
    _write_text(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in errors))
    return errors


def _manifest(plan: IngestPlan, runner: dict, counters: dict[str, int], errors: list[dict],
              shard_files: dict[int, int], seconds: float) -> dict:
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
            "shards": shard_files[fold],
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
            "sharding": "planned" if plan.shard_target_bytes > 0 else "runner",
            "shards_per_fold": {str(f): n for f, n in shard_files.items()},
            **runner,
        },
        "counters": {WRITTEN_COUNTER: counters.get(WRITTEN_COUNTER, 0), FAILED_COUNTER: counters.get(FAILED_COUNTER, 0)},
        "elapsed_seconds": round(seconds, 3),
    }


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(text.encode())


def _print_plan(plan: IngestPlan, runner: dict, progress) -> None:
    progress(f"us8k ingest: {len(plan.rows)} rows in {plan.csv_path} (sha256 {plan.csv_sha256[:12]}…)")
    for fold, rows in plan.rows_per_fold.items():
        shards = plan.shards_per_fold[fold] or "runner-chosen"
        progress(f"  fold {fold:>2}: {rows:>5} rows → {shards} shard(s)")
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
                        help=f"largest shard size in MB; shards per fold are planned from the CSV (default "
                             f"{SHARD_TARGET_MB}); 0: the runner chooses (fastest locally: one file per worker)")
    parser.epilog = ("Any other option is a Beam pipeline option, e.g. --runner DataflowRunner --project P "
                     "--region R --temp_location gs://B/tmp --setup_file ./setup.py; locally "
                     f"--direct_running_mode / --direct_num_workers (default {LOCAL_RUNNER}, "
                     f"{LOCAL_RUNNING_MODE}, one worker per core).")
    parser.allow_abbrev = False  # `--out` must not be mistaken for --output, nor a Beam flag for ours


PASSES_UNKNOWN_ARGS = True  # us8k hands every option not declared here to Beam's PipelineOptions


def run(args: argparse.Namespace) -> int:
    if not args.shard_mb >= 0:
        raise SystemExit(f"us8k ingest: error: --shard-mb must be positive (or 0: runner-chosen), got {args.shard_mb}")
    try:
        run_ingest(args.data_dir, args.output, list(getattr(args, "extra_args", [])),
                   shard_target_bytes=int(args.shard_mb * 10**6))
    except IngestError as exc:
        raise SystemExit(f"us8k ingest: error: {exc}") from None
    return 0
