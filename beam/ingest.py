"""`us8k ingest`'s driver: the Beam job — UrbanSound8K metadata CSV + audio → per-fold TFRecord shards.

    ReadMetadata → DecodeClips ─┬─ records → PartitionByFold → WriteFold{k}:
                                │      OUTPUT/fold{k}/fold{k}-SSSSS-of-NNNNN.tfrecord
                                └─ errors  → ErrorsToJson → WriteErrors: OUTPUT/errors.jsonl
    then the driver writes OUTPUT/manifest.json (counts per fold and class, parameters, CSV sha256).

This module plans the job (the CSV read and parsed once), builds it from beam.ingest_transforms' steps
(what the workers run) and beam.sinks' writer, runs it through beam.driver (what both jobs' drivers
share), checks that every row is accounted for and writes the manifest. The command line is
cli/ingest.py.

OUTPUT and the dataset may be local paths, gs:// or s3:// (every read and write, the driver's
too, goes through Beam's FileSystems; S3 endpoint and credentials come from Beam's S3 options,
--s3_endpoint_url, --s3_access_key_id, --s3_secret_access_key, --s3_region_name…, else from
boto3's usual sources: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, ~/.aws…).

Every CSV row ends up either as a record or as a line of errors.jsonl; the run checks that
written + failed == rows and fails loudly otherwise. Re-running into the same OUTPUT replaces the
previous shards, errors and manifest, removed only once the runner has the job (beam.driver: listed
before submitting, removed right after `pipeline.run()` returns); the manifest is written last, so
an output without one is incomplete. Anything else in OUTPUT is left alone.

Shards (default): the runner's bundles choose the count, --shard-mb caps each file's size. Each
fold is written by Beam's TFRecord sink with num_shards=0 and a byte cap (beam.sinks): every
bundle streams its records into a file of its own inside the decode stage and starts another
when the file reaches the cap, so nothing is grouped or held in memory and no file exceeds
--shard-mb (locally: about one file per worker and fold). `--shard-mb 0`: no cap.
`--planned-shards`: the shard count per fold is planned from the CSV's row counts instead (an
exact count whatever the runner; Beam then groups every record by shard and writes each in a
later stage, which on the FnApiRunner holds them all in memory and is slower; docs/data.md).

`--dry_run=true` (Beam's TestOptions; true/1/yes, and false/0/no for "not a dry run", anything else
refused: beam.driver.beam_args) builds the job without running it: with DataflowRunner it builds the
job (the pipeline proto, the --setup_file sdist staged as workflow.tar.gz) offline, without
credentials, and prints its steps and worker image; other runners ignore Beam's --dry_run (they would
run the job), so the pipeline is only built and its steps printed. Nothing under OUTPUT is touched.

Locally the job runs on Beam's FnApiRunner, which downloads nothing (Beam 2.77's DirectRunner
first tries to fetch the Prism binary), in `in_memory` mode with one worker per core (beam.driver): the runner
then runs each stage's partitions in parallel threads with in-memory data channels (libsndfile
reading from an in-memory fd, soxr and numpy's ufuncs release the GIL for most of the work, and
the workers import no TensorFlow: tfdata.example writes the Examples).
On 2 cores it was faster than `multi_threading` (the same threads plus in-process gRPC) and
`multi_processing` (a process per worker to start and feed over gRPC; with planned shards every 176 KB record also
crosses to the runner process and back); `us8k bench ingest --modes ...` compares them (figures:
docs/data.md).

Any Beam option after ours passes to PipelineOptions, e.g. for Dataflow (docs/dataflow.md):

    us8k ingest --data-dir gs://BUCKET/UrbanSound8K --output gs://BUCKET/records \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam import driver
from beam.files import absolute, jsonl_line, sort_jsonl, write_json
from beam.ingest_transforms import (
    ERRORS_TAG,
    FAILED_COUNTER,
    METRICS_NAMESPACE,
    RECORDS_TAG,
    WRITTEN_COUNTER,
    BadRow,
    ClipRow,
    DecodeClips,
    RowError,
    example_bytes,
    fold_index,
    header_columns,
    read_row,
    written_counter_name,
)
from beam.sinks import WriteCappedTFRecords
from tfdata import audio
from tfdata import contract as c

JOB = "us8k ingest"  # how the job's progress lines begin
SHARD_TARGET_MB = 100  # largest shard; planned: (target/2, target] MB, two per fold for the real dataset
                       # (~870 clips, ~150 MB), so a fold's shards are written, and later read, in parallel
RECORD_BYTES = 2 * c.CLIP_SAMPLES + 400  # ≥ one framed record: int16 waveform + metadata + 16 B framing (≈ 176 KB)


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
    data_dir, output_dir = absolute(data_dir), absolute(output_dir)
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


# ------------------------------------------------------------------------------------ the job
def shard_prefix(output_dir: str, fold: int) -> str:
    """WriteToTFRecord's path prefix for a fold: OUTPUT/fold{k}/fold{k}."""
    return FileSystems.join(output_dir, c.fold_dir_name(fold), c.fold_dir_name(fold))


def build_pipeline(pipeline: beam.Pipeline, plan: IngestPlan) -> None:
    """Apply the ingestion transforms to `pipeline` (nothing runs until pipeline.run())."""
    decoded = (
        pipeline
        | "ReadMetadata" >> beam.Create(plan.rows)  # the parsed rows, redistributed over the workers
        | "DecodeClips" >> DecodeClips(plan.data_dir))
    by_fold = decoded[RECORDS_TAG] | "PartitionByFold" >> beam.Partition(fold_index, c.NUM_FOLDS)
    for fold, shards in plan.shards_per_fold.items():
        prefix = shard_prefix(plan.output_dir, fold)
        if plan.sharding == "planned":
            write = beam.io.WriteToTFRecord(prefix, file_name_suffix=c.RECORD_SUFFIX, num_shards=shards)
        else:  # written where decoded, a new file per bundle and whenever one reaches the cap
            write = WriteCappedTFRecords(prefix, c.RECORD_SUFFIX, plan.shard_target_bytes, RECORD_BYTES)
        _ = (by_fold[fold - 1]
             | f"ExamplesFold{fold}" >> beam.Map(example_bytes).with_output_types(bytes)
             | f"WriteFold{fold}" >> write)
    _ = (decoded[ERRORS_TAG]
         | "ErrorsToJson" >> beam.Map(jsonl_line).with_output_types(str)
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, c.ERRORS_FILE),
                                                shard_name_template="", num_shards=1))


def run_ingest(data_dir: str, output_dir: str, pipeline_args: list[str] | None = None,
               progress: driver.Progress | None = None, shard_target_bytes: int = SHARD_TARGET_MB * 10**6,
               planned_shards: bool = False) -> dict:
    """Plan, run the Beam job, check that every row is accounted for, write and return the manifest.
    `progress(line)` receives the job's lines (None: none); `pipeline_args` are Beam's options.

    With Beam's --dry_run: build the job, touch nothing, return driver.describe_job's summary instead."""
    started = time.perf_counter()
    options = driver.job_options(pipeline_args, IngestError)
    plan = plan_ingest(data_dir, output_dir, shard_target_bytes, planned_shards)
    runner = driver.describe_runner(options)
    driver.print_plan(_plan_lines(plan), runner, plan.output_dir, progress)

    if driver.dry_run_requested(options):
        return driver.dry_run_job(JOB, build_pipeline, plan, options, f"nothing written to {plan.output_dir}",
                                  progress, IngestError)
    result = driver.run_pipeline(options, build_pipeline, plan, IngestError, ingest_output(plan.output_dir), progress)

    counters = driver.counters(result, METRICS_NAMESPACE)
    errors = sort_jsonl(FileSystems.join(plan.output_dir, c.ERRORS_FILE), key=lambda e: e["line"])
    manifest = _manifest(plan, runner, counters, errors, _shard_files(plan), time.perf_counter() - started)
    _check_counts(manifest, counters)
    write_json(FileSystems.join(plan.output_dir, c.MANIFEST_FILE), manifest)
    _print_result(manifest, plan.output_dir, driver.silent(progress))
    return manifest


def _check_counts(manifest: dict, counters: dict[str, int]) -> None:
    """Every CSV row written or failed, and Beam's counters agreeing with the files: else IngestError."""
    written, failed, rows = manifest["examples"], manifest["errors"], manifest["csv"]["rows"]
    if written + failed != rows:
        raise IngestError(f"rows lost: {written} written + {failed} failed != {rows} rows in the CSV")
    if counters.get(FAILED_COUNTER, 0) != failed or counters.get(WRITTEN_COUNTER, 0) != written:
        raise IngestError(f"counters disagree: {counters.get(WRITTEN_COUNTER, 0)} written / "
                          f"{counters.get(FAILED_COUNTER, 0)} failed counted, {written} per fold and class, "
                          f"{failed} lines in {c.ERRORS_FILE}")


def _plan_lines(plan: IngestPlan) -> list[str]:
    lines = [f"{JOB}: {len(plan.rows)} rows in {plan.csv_path} (sha256 {plan.csv_sha256[:12]}…)"]
    for fold, rows in plan.rows_per_fold.items():
        shards = plan.shards_per_fold[fold] or "runner-chosen"
        lines.append(f"  fold {fold:>2}: {rows:>5} rows → {shards} shard(s)")
    cap = f"at most {plan.shard_target_bytes / 10**6:g} MB each" if plan.shard_target_bytes else "no size cap"
    lines.append(f"  shards: {'planned from the CSV' if plan.sharding == 'planned' else 'runner-chosen'}, {cap}")
    if plan.invalid_rows:
        lines.append(f"  {plan.invalid_rows} row(s) with bad fields (they will be listed in {c.ERRORS_FILE})")
    return lines


def _print_result(manifest: dict, output_dir: str, progress: driver.Progress) -> None:
    written, failed, rows = manifest["examples"], manifest["errors"], manifest["csv"]["rows"]
    seconds = manifest["elapsed_seconds"]
    progress(f"{JOB}: {written} clips written + {failed} failed == {rows} rows in the CSV "
             f"(nothing lost) in {seconds:.1f} s ({rows / max(seconds, 1e-9):.1f} rows/s)")
    for fold, entry in manifest["folds"].items():
        progress(f"  fold {fold:>2}: {entry['examples']:>5} written, {entry['errors']:>3} failed, "
                 f"{entry['shards']} shard(s)")
    if failed:
        progress(f"  {failed} failure(s) listed in {FileSystems.join(output_dir, c.ERRORS_FILE)}")
    progress(f"  manifest: {FileSystems.join(output_dir, c.MANIFEST_FILE)}")


# ------------------------------------------------------------------------------------ outputs
def ingest_output(output_dir: str) -> driver.Output:
    """What a run leaves in OUTPUT (driver.run_pipeline removes an earlier run's once the runner has the job)."""
    shards = tuple(c.fold_shard_glob(fold) for fold in range(1, c.NUM_FOLDS + 1))
    return driver.Output(output_dir, (c.MANIFEST_FILE, c.ERRORS_FILE) + shards, marker=c.MANIFEST_FILE)


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
        "counters": {WRITTEN_COUNTER: counters.get(WRITTEN_COUNTER, 0),
                     FAILED_COUNTER: counters.get(FAILED_COUNTER, 0)},
        "elapsed_seconds": round(seconds, 3),
    }
