"""`us8k ingest`'s driver: the Beam job — a labelled audio collection in one of four layouts → per-fold
TFRecord shards.

    ReadMetadata → DecodeClips ─┬─ records → PartitionByFold → WriteFold{k}:
                                │      OUTPUT/fold{k}/fold{k}-SSSSS-of-NNNNN.tfrecord
                                └─ errors  → ErrorsToJson → WriteErrors: OUTPUT/errors.jsonl
    then the driver writes OUTPUT/manifest.json (schema 2: the layout, the class names in label order,
    counts per fold and class, the groups, how the folds were made, the source's sha256, parameters).

This module plans the job (the layout read and parsed once: beam.layouts — urbansound8k, esc50, csv,
folders, chosen by --layout or detected; --classes, --num-folds), builds it from
beam.ingest_transforms' steps (what the workers run) and beam.sinks' writer, runs it through
beam.driver (what both jobs' drivers share), checks that every row is accounted for and writes the
manifest. PartitionByFold has one output per fold of the plan. The command line is cli/ingest.py.

OUTPUT and the dataset may be local paths, gs:// or s3:// (every read and write, the driver's
too, goes through Beam's FileSystems; S3 endpoint and credentials come from Beam's S3 options,
--s3_endpoint_url, --s3_access_key_id, --s3_secret_access_key, --s3_region_name…, else from
boto3's usual sources: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, ~/.aws…). On s3:// no empty file is
written (Beam 2.77 cannot: beam.files.holds_empty_files): without failures there is no errors.jsonl
(the manifest's "errors" is 0), and a fold whose every clip failed has no shard ("shards" 0);
locally and on gs:// both exist, empty. Planned shards cannot avoid an empty shard (one that gets
no record) and fail the job on s3:// when one occurs.

Every CSV row (or audio file found, for the folders layout) ends up either as a record or as a line
of errors.jsonl; the run checks that written + failed == rows and fails loudly otherwise.
Re-running into the same OUTPUT replaces the previous shards (every fold{k}/, whatever its folds),
errors and manifest, removed only once the runner has the job (beam.driver: listed before
submitting, removed right after `pipeline.run()` returns); the manifest is written last, so an
output without one is incomplete. Anything else in OUTPUT is left alone.

Shards (default): the runner's bundles choose the count, --shard-mb caps each file's size. Each
fold is written by Beam's TFRecord sink with num_shards=0 and a byte cap (beam.sinks): every
bundle streams its records into a file of its own inside the decode stage and starts another
when the file reaches the cap, so nothing is grouped or held in memory and no file exceeds
--shard-mb (locally: about one file per worker and fold). `--shard-mb 0`: no cap.
`--planned-shards`: the shard count per fold is planned from the rows per fold instead (an
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
import math
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam import driver
from beam.files import absolute, holds_empty_files, jsonl_line, sort_jsonl, write_json
from beam.ingest_rows import BadRow, ClipRow, LayoutError
from beam.ingest_transforms import (
    CUT_COUNTER,
    ERRORS_TAG,
    FAILED_COUNTER,
    METRICS_NAMESPACE,
    RECORDS_COUNTER,
    RECORDS_TAG,
    WRITTEN_COUNTER,
    DecodeClips,
    example_bytes,
    fold_index,
    records_counter_name,
    written_counter_name,
)
from beam.layouts import Collection, read_collection
from beam.sinks import WriteCappedTFRecords
from tfdata import audio
from tfdata import contract as c
from tfdata.classes import SCHEMA_VERSION

JOB = "us8k ingest"  # how the job's progress lines begin
SHARD_TARGET_MB = 100  # largest shard; planned: (target/2, target] MB, two per fold for the real dataset
                       # (~870 clips, ~150 MB), so a fold's shards are written, and later read, in parallel
RECORD_BYTES = 2 * c.CLIP_SAMPLES + 400  # ≥ one framed record: int16 waveform + metadata + 16 B framing (≈ 176 KB)
ANY_FOLD_SHARDS = f"{c.FOLD_DIR_PREFIX}[0-9]*/*{c.RECORD_SUFFIX}"  # every fold's shards, whatever the fold count
SHOWN_CLASSES = 12  # class names printed in the plan's lines, at most


class IngestError(RuntimeError):
    """The ingestion cannot run or did not account for every row; the message says why."""


@dataclasses.dataclass(frozen=True)
class IngestPlan:
    """What the job will do, known before it runs (the layout is read and parsed once, by the driver)."""

    data_dir: str
    output_dir: str
    collection: Collection  # the layout, its classes and every row (beam.layouts)
    rows_per_fold: dict[int, int]  # valid rows only, by fold (ascending)
    shards_per_fold: dict[int, int]  # 0: the runner chooses
    shard_target_bytes: int  # no shard larger (0: no cap)
    sharding: str = "runner"  # "runner": the runner's bundles, capped in bytes; "planned": counts from the rows

    @property
    def rows(self) -> list[ClipRow | BadRow]:
        """Every row (CSV data row, or audio file found), as DecodeClips takes them."""
        return self.collection.rows

    @property
    def folds(self) -> tuple[int, ...]:
        return tuple(self.rows_per_fold)

    @property
    def unit(self) -> str:
        """What a row is, for the lines: "rows in the CSV" or "audio files found"."""
        return "audio files found" if self.collection.source["kind"] == "folders" else "rows in the CSV"


# ------------------------------------------------------------------------------------ planning
def plan_ingest(data_dir: str, output_dir: str, shard_target_bytes: int = SHARD_TARGET_MB * 10**6,
                planned_shards: bool = False, *, layout: str | None = None, classes: tuple[str, ...] | None = None,
                num_folds: int | None = None) -> IngestPlan:
    """Read the dataset in its layout (`layout`, None: detected; `classes`: --classes; `num_folds`:
    --num-folds, beam.layouts), count valid rows per fold, size the shards (planned_shards: a fixed
    count per fold from its rows; else the runner's, capped at shard_target_bytes)."""
    if planned_shards and shard_target_bytes <= 0:
        raise IngestError("planned shards need a shard size (--shard-mb > 0)")
    data_dir, output_dir = absolute(data_dir), absolute(output_dir)
    try:
        collection = read_collection(data_dir, layout, classes, num_folds)
    except LayoutError as exc:
        raise IngestError(str(exc)) from None
    rows_per_fold: dict[int, int] = {}
    for row in collection.rows:
        if isinstance(row, ClipRow):
            rows_per_fold[row.fold] = rows_per_fold.get(row.fold, 0) + 1
    rows_per_fold = dict(sorted(rows_per_fold.items()))
    shards = {fold: shards_for(count, shard_target_bytes) if planned_shards else 0
              for fold, count in rows_per_fold.items()}
    return IngestPlan(data_dir=data_dir, output_dir=output_dir, collection=collection, rows_per_fold=rows_per_fold,
                      shards_per_fold=shards, shard_target_bytes=max(0, int(shard_target_bytes)),
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
    skip_if_empty = not holds_empty_files(plan.output_dir)  # s3://: no empty file (beam.files)
    positions = {fold: index for index, fold in enumerate(plan.folds)}
    by_fold = (decoded[RECORDS_TAG] | "PartitionByFold" >> beam.Partition(fold_index, max(1, len(positions)),
                                                                            positions))
    for fold, shards in plan.shards_per_fold.items():
        prefix = shard_prefix(plan.output_dir, fold)
        if plan.sharding == "planned":
            write = beam.io.WriteToTFRecord(prefix, file_name_suffix=c.RECORD_SUFFIX, num_shards=shards)
        else:  # written where decoded, a new file per bundle and whenever one reaches the cap
            write = WriteCappedTFRecords(prefix, c.RECORD_SUFFIX, plan.shard_target_bytes, RECORD_BYTES,
                                         skip_if_empty=skip_if_empty)
        _ = (by_fold[positions[fold]]
             | f"ExamplesFold{fold}" >> beam.Map(example_bytes).with_output_types(bytes)
             | f"WriteFold{fold}" >> write)
    _ = (decoded[ERRORS_TAG]
         | "ErrorsToJson" >> beam.Map(jsonl_line).with_output_types(str)
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, c.ERRORS_FILE),
                                                shard_name_template="", num_shards=1,
                                                skip_if_empty=skip_if_empty))


def run_ingest(data_dir: str, output_dir: str, pipeline_args: list[str] | None = None,
               progress: driver.Progress | None = None, shard_target_bytes: int = SHARD_TARGET_MB * 10**6,
               planned_shards: bool = False, *, layout: str | None = None, classes: tuple[str, ...] | None = None,
               num_folds: int | None = None) -> dict:
    """Plan, run the Beam job, check that every row is accounted for, write and return the manifest.
    `progress(line)` receives the job's lines (None: none); `pipeline_args` are Beam's options;
    `layout`, `classes`, `num_folds`: --layout (None: detected), --classes, --num-folds (beam.layouts).

    With Beam's --dry_run: build the job, touch nothing, return driver.describe_job's summary instead."""
    started = time.perf_counter()
    options = driver.job_options(pipeline_args, IngestError)
    plan = plan_ingest(data_dir, output_dir, shard_target_bytes, planned_shards, layout=layout, classes=classes,
                       num_folds=num_folds)
    runner = driver.describe_runner(options)
    driver.print_plan(_plan_lines(plan), runner, plan.output_dir, progress)

    if driver.dry_run_requested(options):
        return driver.dry_run_job(JOB, build_pipeline, plan, options, f"nothing written to {plan.output_dir}",
                                  progress, IngestError)
    result = driver.run_pipeline(options, build_pipeline, plan, IngestError, ingest_output(plan.output_dir), progress)

    counters = driver.counters(result, METRICS_NAMESPACE)
    errors = sort_jsonl(FileSystems.join(plan.output_dir, c.ERRORS_FILE),
                        key=lambda e: (e.get("line") or 0, e.get("file") or ""))
    manifest = _manifest(plan, runner, counters, errors, _shard_files(plan), time.perf_counter() - started)
    _check_counts(manifest, counters, plan.unit)
    write_json(FileSystems.join(plan.output_dir, c.MANIFEST_FILE), manifest)
    _print_result(manifest, plan, driver.silent(progress))
    return manifest


def _check_counts(manifest: dict, counters: dict[str, int], unit: str) -> None:
    """Every row (file) written or failed, and Beam's counters agreeing with the files: else IngestError."""
    written, failed, rows = manifest["examples"], manifest["errors"], manifest["source"]["rows"]
    if written + failed != rows:
        raise IngestError(f"rows lost: {written} written + {failed} failed != {rows} {unit}")
    if counters.get(FAILED_COUNTER, 0) != failed or counters.get(WRITTEN_COUNTER, 0) != written:
        raise IngestError(f"counters disagree: {counters.get(WRITTEN_COUNTER, 0)} written / "
                          f"{counters.get(FAILED_COUNTER, 0)} failed counted, {written} per fold and class, "
                          f"{failed} lines in {c.ERRORS_FILE}")


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:SHOWN_CLASSES])
    return shown + (f" and {len(names) - SHOWN_CLASSES} more" if len(names) > SHOWN_CLASSES else "")


def _plan_lines(plan: IngestPlan) -> list[str]:
    collection, source = plan.collection, plan.collection.source
    how = "detected" if collection.detected else "--layout"
    if source["kind"] == "folders":
        ignored = collection.listing.ignored_files
        what = (f"{source['rows']} audio files under {source['path']} (listing sha256 {source['sha256'][:12]}…)"
                + (f"; {ignored} other file(s) ignored (not audio, or hidden)" if ignored else ""))
    else:
        what = f"{source['rows']} rows in {source['path']} (sha256 {source['sha256'][:12]}…)"
    lines = [f"{JOB}: layout {collection.layout} ({how}): {what}",
             f"  classes: {len(collection.class_names)} from {collection.listing.classes_from}: "
             f"{_names(collection.class_names)}"]
    groups = collection.listing.groups
    lines.append(f"  groups: {groups}" if not groups.startswith("none") else
                 "  groups: none in the data: each file is its own group")
    assignment = collection.fold_assignment
    lines.append("  folds: from the data" if assignment == "dataset" else
                 f"  folds: {assignment['num_folds']} assigned by group (--num-folds {assignment['num_folds']}; "
                 f"deterministic, a group never spans two folds)")
    if assignment != "dataset" and len(plan.rows_per_fold) < assignment["num_folds"]:
        lines.append(f"  note: only {len(plan.rows_per_fold)} of the {assignment['num_folds']} folds get clips "
                     f"(too few groups, or groups too large)")
    for fold, rows in plan.rows_per_fold.items():
        shards = plan.shards_per_fold[fold] or "runner-chosen"
        lines.append(f"  fold {fold:>2}: {rows:>5} rows → {shards} shard(s)")
    cap = f"at most {plan.shard_target_bytes / 10**6:g} MB each" if plan.shard_target_bytes else "no size cap"
    lines.append(f"  shards: {'planned from the rows' if plan.sharding == 'planned' else 'runner-chosen'}, {cap}")
    if plan.sharding == "planned" and not holds_empty_files(plan.output_dir):
        lines.append("  note: a planned shard that gets no clip (too many failures in its fold) cannot be written "
                     "to s3:// and fails the job")
    if collection.invalid_rows:
        lines.append(f"  {collection.invalid_rows} row(s) failing before decoding (they will be listed in "
                     f"{c.ERRORS_FILE})")
    return lines


def _print_result(manifest: dict, plan: IngestPlan, progress: driver.Progress) -> None:
    written, failed, rows = manifest["examples"], manifest["errors"], manifest["source"]["rows"]
    seconds = manifest["elapsed_seconds"]
    progress(f"{JOB}: {written} clips written + {failed} failed == {rows} {plan.unit} "
             f"(nothing lost) in {seconds:.1f} s ({rows / max(seconds, 1e-9):.1f} rows/s)")
    for fold, entry in manifest["folds"].items():
        progress(f"  fold {fold:>2}: {entry['examples']:>5} written, {entry['errors']:>3} failed, "
                 f"{entry['shards']} shard(s)")
    if manifest["records"] != written:
        progress(f"  {manifest['records']} records: clips longer than {c.CLIP_SECONDS} s are stored as their "
                 f"{c.CLIP_SECONDS} s windows, {c.WINDOW_HOP_SAMPLES / c.SAMPLE_RATE:g} s apart")
    if manifest["clips_cut"]:
        progress(f"  {manifest['clips_cut']} clip(s) longer than {c.MAX_CLIP_SECONDS} s: only their first "
                 f"{c.MAX_CLIP_SECONDS} s kept")
    if failed:
        progress(f"  {failed} failure(s) listed in {FileSystems.join(plan.output_dir, c.ERRORS_FILE)}")
    progress(f"  manifest: {FileSystems.join(plan.output_dir, c.MANIFEST_FILE)}")


# ------------------------------------------------------------------------------------ outputs
def ingest_output(output_dir: str) -> driver.Output:
    """What a run leaves in OUTPUT (driver.run_pipeline removes an earlier run's once the runner has the job):
    the manifest, the errors and every fold{k}/ directory's shards, whatever the earlier run's folds."""
    return driver.Output(output_dir, (c.MANIFEST_FILE, c.ERRORS_FILE, ANY_FOLD_SHARDS), marker=c.MANIFEST_FILE)


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
    """manifest.json, schema 2 (tfdata.classes.read_dataset_info reads it): class names in label order,
    per-fold counts by class name, the layout, the groups and how the folds were made."""
    collection = plan.collection
    names = collection.class_names
    folds = {}
    classes = dict.fromkeys(names, 0)
    for fold, rows in plan.rows_per_fold.items():
        per_class = {name: counters.get(written_counter_name(fold, label), 0) for label, name in enumerate(names)}
        for name, count in per_class.items():
            classes[name] += count
        folds[str(fold)] = {
            "rows": rows,
            "examples": sum(per_class.values()),
            "records": counters.get(records_counter_name(fold), 0),
            "errors": sum(1 for e in errors if e.get("fold") == fold),
            "shards": shard_files[fold]["shards"],
            "largest_shard_bytes": shard_files[fold]["largest_shard_bytes"],
            "shard_glob": c.fold_shard_glob(fold),
            "classes": per_class,
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "layout": collection.layout,
        "class_names": list(names),
        "groups": collection.listing.groups,
        "fold_assignment": collection.fold_assignment,
        "source": collection.source,
        "data_dir": plan.data_dir,
        "examples": sum(f["examples"] for f in folds.values()),  # clips written
        "records": counters.get(RECORDS_COUNTER, 0),  # Examples written: a clip longer than 4 s is its windows
        "clips_cut": counters.get(CUT_COUNTER, 0),  # clips longer than max_clip_seconds, cut there
        "errors": len(errors),
        "errors_file": c.ERRORS_FILE,
        "folds": folds,
        "classes": classes,
        "parameters": {
            "sample_rate": c.SAMPLE_RATE,
            "clip_samples": c.CLIP_SAMPLES,
            "waveform": "int16 PCM, little-endian, clip_samples per record: a clip up to 4 s zero padded, a "
                        "longer one as its windows (window_hop_samples apart, the last zero padded)",
            "window_hop_samples": c.WINDOW_HOP_SAMPLES,
            "max_clip_seconds": c.MAX_CLIP_SECONDS,
            "resample_quality": audio.RESAMPLE_QUALITY,
            "shard_target_bytes": plan.shard_target_bytes,
            "sharding": plan.sharding,  # "runner": the runner's bundles, each file ≤ shard_target_bytes (0: no cap)
            "shards_per_fold": {str(f): n["shards"] for f, n in shard_files.items()},
            **runner,
        },
        "counters": {name: counters.get(name, 0) for name in (WRITTEN_COUNTER, FAILED_COUNTER, RECORDS_COUNTER,
                                                               CUT_COUNTER)},
        "elapsed_seconds": round(seconds, 3),
    }
