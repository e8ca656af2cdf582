"""`us8k label`'s driver: label a whole audio collection with the exported model, as a Beam job (RunInference).

    us8k label INPUT --model EXPORT --output OUT [--threshold T] [--windows] [--max-seconds S]
                     [--max-file-mb MB] [--max-batch W] [Beam options…]

    MatchFiles → ReadFiles → Decode → RunInference → Format → WritePredictions: OUT/predictions.jsonl
        └── failures of every step ── AllErrors → ErrorsToJson → WriteErrors:  OUT/errors.jsonl
    then the driver checks the counts and writes OUT/summary.json.

This module plans the job, builds it from beam.label_transforms' steps and beam.label_model's handler
(what the workers run), runs it through beam.driver (what both jobs' drivers share), checks that every
file is accounted for and writes the summary. The command line is cli/label.py.

INPUT is a directory (every file under it, at any depth, whose extension is one of
beam.audio_files.AUDIO_EXTENSIONS), a glob (every file it matches), or a CSV listing the files: a `path`
column, or `file`, `filename`, `file_name` (relative paths are relative to the CSV's directory: a csv
layout's metadata.csv, whose file_name is relative to the root it lies in), ESC-50's meta/esc50.csv
(its columns, beam.layout_csvs.ESC50_COLUMNS: ROOT/audio/<filename>, ROOT the CSV's parent's parent), or
UrbanSound8K's metadata CSV (`slice_file_name` + `fold`: audio/fold<k>/<name> under the dataset root).
INPUT, EXPORT and OUT may be local, gs:// or s3:// (Beam's FileSystems; S3 endpoint and keys as for `us8k ingest`).
Matching runs in the job (MatchFiles: FileSystems.match, or the CSV read as text), then the files
are spread over the workers (Reshuffle).

Each file is read (at most --max-file-mb: a larger one fails before it is read), decoded by the
shared decoder (tfdata.audio: libsndfile, else FFmpeg; any rate and channel count, downmixed and
resampled with soxr, in bounded blocks), and refused when it holds more than --max-seconds (default
600 s, the endpoint's own limit: from the declared length before decoding, else as soon as decoding
passes it) — so a worker holds at most one such waveform per thread. RunInference runs our handler
(beam.label_model: tf.saved_model.load + serving_default, batches of at most --max-batch 4 s
windows' samples, one model per worker process shared by its threads). Format writes the answer the
endpoint gives for the same file (tfdata.answers: label or "undetermined" by the threshold — --threshold,
else the model's metadata.json value, else 0.6 — confidence, probabilities; with --windows the
per-window timeline and the event segments) plus the path and duration. A file that fails at any
step (not listed, unreadable, too large, undecodable, too long, or in a batch the model failed on)
goes to errors.jsonl with the step and the reason.

Outputs (each written as one file; predictions in the order the job wrote them, errors sorted by
path): predictions.jsonl (one JSON object per labelled file), errors.jsonl (one per failed file),
summary.json (counts per class, undetermined, failed by step, the model's metadata, the settings,
the runner, model calls), written last: an OUT without it is incomplete. On s3:// an empty
predictions.jsonl or errors.jsonl is not written (Beam 2.77 cannot: beam.files.holds_empty_files):
it is absent, and the summary's count is 0. The driver checks that
predicted + failed == files matched (Beam counters and the lines of both files) and fails loudly
otherwise. Re-running into the same OUT replaces those three files; the earlier ones (and Beam's
temporary files an interrupted run left) are removed only once the runner has the job, as for
`us8k ingest` (beam.driver.run_pipeline); anything else in OUT is left alone.

Runners: as `us8k ingest` (beam.driver.pipeline_options): locally the FnApiRunner in-process, in
`in_memory` mode with one worker thread per core (nothing downloaded), or any Beam runner, e.g.

    us8k label gs://BUCKET/recordings --model gs://BUCKET/export --output gs://BUCKET/labels \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py

`--dry_run=true` (true/1/yes; false/0/no: not a dry run; anything else refused, beam.driver.beam_args)
builds the job (with DataflowRunner: the job and its staged sdist, offline; other runners ignore
Beam's --dry_run, so the pipeline is only built) without running it, reads nothing but a CSV INPUT's
header line and writes nothing. Progress: the driver's lines on stdout, and while the job runs a
line per worker process every PROGRESS_SECONDS (beam.label_transforms; on Dataflow in the worker logs).
"""
from __future__ import annotations

import csv
import dataclasses
import os
import time

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference

from beam import driver
from beam.files import absolute, count_lines, holds_empty_files, is_remote, jsonl_line, sort_jsonl, write_json
from beam.label_model import (
    MAX_BATCH_WINDOWS,
    METRICS_NAMESPACE,
    WINDOWS_PER_CALL,
    ModelNotFound,
    SavedModelHandler,
    resolve_model,
)
from beam.label_transforms import (
    AUDIO_EXTENSIONS,
    ERRORS_TAG,
    FAILED,
    LABEL_PREFIX,
    MAIN_TAG,
    MATCHED,
    PREDICTED,
    SKIPPED,
    STEPS,
    DecodeFn,
    FormatFn,
    MatchInput,
    ReadFn,
    failed_batch,
)
from beam.layout_csvs import ESC50_COLUMNS
from tfdata import contract as c
from tfdata.answers import answer_config

JOB = "us8k label"  # how the job's progress lines begin
PREDICTIONS_FILE = "predictions.jsonl"
ERRORS_FILE = c.ERRORS_FILE  # errors.jsonl, as ingestion's
SUMMARY_FILE = "summary.json"
MAX_SECONDS = c.MAX_AUDIO_SECONDS  # default --max-seconds: the endpoint's per-request limit
MAX_FILE_MB = 512.0  # default --max-file-mb: 600 s of 96 kHz 24-bit stereo WAV is 346 MB
PATH_COLUMNS = ("path", "file", "filename", "file_name")  # a CSV INPUT's column naming each file


class LabelError(RuntimeError):
    """The labelling cannot run or did not account for every file; the message says why."""


@dataclasses.dataclass(frozen=True)
class LabelPlan:
    """What the job will do, known before it runs."""

    input: str
    kind: str  # "directory" | "glob" | "csv"
    pattern: str | None  # directory / glob: what MatchFiles matches
    csv_columns: dict[str, int] | None  # csv: column → index ("path", "esc50_filename", or "slice_file_name" + "fold")
    csv_root: str | None  # csv: what relative paths are relative to
    model: str
    output_dir: str
    threshold: float | None = None
    windows: bool = False
    max_seconds: float = MAX_SECONDS
    max_file_bytes: int = int(MAX_FILE_MB * 2**20)
    max_batch_windows: int = MAX_BATCH_WINDOWS


# ------------------------------------------------------------------------------------ planning
def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def plan_label(input_path: str, model: str, output_dir: str, *, threshold: float | None = None,
               windows: bool = False, max_seconds: float = MAX_SECONDS, max_file_mb: float = MAX_FILE_MB,
               max_batch_windows: int = MAX_BATCH_WINDOWS, check: bool = True) -> LabelPlan:
    """The plan for INPUT; with `check`, refuses (LabelError) an INPUT that is missing or matches
    nothing. A CSV INPUT's header is read either way (it decides the columns)."""
    input_path, model, output_dir = absolute(input_path), absolute(model), absolute(output_dir)
    settings = dict(model=model, output_dir=output_dir, threshold=threshold, windows=windows,
                    max_seconds=float(max_seconds), max_file_bytes=int(max_file_mb * 2**20),
                    max_batch_windows=int(max_batch_windows))
    if input_path.lower().endswith(".csv") and not _is_glob(input_path):
        columns, root = _csv_columns(input_path)
        return LabelPlan(input_path, "csv", None, columns, root, **settings)
    if _is_glob(input_path) or (not is_remote(input_path) and os.path.isfile(input_path)):
        if check and not FileSystems.match([input_path], limits=[1])[0].metadata_list:
            raise LabelError(f"no files match {input_path}")
        return LabelPlan(input_path, "glob", input_path, None, None, **settings)
    if check and not is_remote(input_path) and not os.path.isdir(input_path):
        raise LabelError(f"input not found: {input_path} (give a directory, a glob or a CSV listing the files)")
    return LabelPlan(input_path, "directory", FileSystems.join(input_path.rstrip("/"), "**"), None, None, **settings)


def _csv_columns(csv_path: str) -> tuple[dict[str, int], str]:
    """The list's header → the columns that name each file, and the directory relative paths start from."""
    try:
        with FileSystems.open(csv_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            header = handle.readline().decode("utf-8-sig", errors="replace")
    except Exception:
        raise LabelError(f"file list not found: {csv_path}") from None
    names = [name.strip().lower() for name in next(csv.reader([header]), [])]
    directory = FileSystems.split(csv_path)[0]
    if "path" not in names and all(name in names for name in ESC50_COLUMNS):  # ESC-50's meta/esc50.csv
        return {"esc50_filename": names.index("filename")}, FileSystems.split(directory)[0]
    for name in PATH_COLUMNS:  # a csv layout's metadata.csv: file_name, relative to its directory
        if name in names:
            return {"path": names.index(name)}, directory
    if "slice_file_name" in names and "fold" in names:  # UrbanSound8K's metadata/UrbanSound8K.csv
        root = FileSystems.split(directory)[0]
        return {"slice_file_name": names.index("slice_file_name"), "fold": names.index("fold")}, root
    raise LabelError(f"{csv_path}: the header needs a column {' or '.join(PATH_COLUMNS)} "
                     f"(or UrbanSound8K's slice_file_name and fold); found: {', '.join(names) or 'none'}")


# ------------------------------------------------------------------------------------ the job
def build_pipeline(pipeline: beam.Pipeline, plan: LabelPlan) -> None:
    """Apply the labelling transforms to `pipeline` (nothing runs until pipeline.run())."""
    files = pipeline | "MatchFiles" >> MatchInput(plan.kind, plan.input, plan.pattern, plan.csv_columns, plan.csv_root)
    read = files | "ReadFiles" >> beam.ParDo(ReadFn(plan.max_file_bytes)).with_outputs(ERRORS_TAG, main=MAIN_TAG)
    decoded = read[MAIN_TAG] | "Decode" >> beam.ParDo(DecodeFn(plan.max_seconds)).with_outputs(
        ERRORS_TAG, main=MAIN_TAG)
    handler = SavedModelHandler(plan.model, plan.max_batch_windows)
    skip_if_empty = not holds_empty_files(plan.output_dir)  # s3://: no empty file (beam.files)
    results, dead = decoded[MAIN_TAG] | "RunInference" >> RunInference(handler).with_exception_handling()
    _ = (results
         | "Format" >> beam.ParDo(FormatFn(plan.model, plan.threshold, plan.windows)).with_output_types(str)
         | "WritePredictions" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, PREDICTIONS_FILE),
                                                     shard_name_template="", num_shards=1,
                                                     skip_if_empty=skip_if_empty))
    failed_inference = dead.failed_inferences | "InferenceErrors" >> beam.FlatMap(failed_batch)
    _ = ((read[ERRORS_TAG], decoded[ERRORS_TAG], failed_inference)
         | "AllErrors" >> beam.Flatten()
         | "ErrorsToJson" >> beam.Map(jsonl_line).with_output_types(str)
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, ERRORS_FILE),
                                                shard_name_template="", num_shards=1,
                                                skip_if_empty=skip_if_empty))


# ------------------------------------------------------------------------------------ the driver
def run_label(input_path: str, model: str, output_dir: str, pipeline_args: list[str] | None = None, *,
              threshold: float | None = None, windows: bool = False, max_seconds: float = MAX_SECONDS,
              max_file_mb: float = MAX_FILE_MB, max_batch_windows: int = MAX_BATCH_WINDOWS,
              progress: driver.Progress | None = None) -> dict:
    """Plan, run the Beam job, check that every file is accounted for, write and return the summary.
    `progress(line)` receives the job's lines (None: none); `pipeline_args` are Beam's options.

    With Beam's --dry_run: build the job, read nothing but a CSV's header, write nothing; returns
    driver.describe_job's summary instead."""
    started = time.perf_counter()
    options = driver.job_options(pipeline_args, LabelError)
    dry_run = driver.dry_run_requested(options)
    plan = plan_label(input_path, model, output_dir, threshold=threshold, windows=windows, max_seconds=max_seconds,
                      max_file_mb=max_file_mb, max_batch_windows=max_batch_windows, check=not dry_run)
    runner = driver.describe_runner(options)
    if dry_run:
        driver.print_plan(_plan_lines(plan, None, None), runner, plan.output_dir, progress)
        return driver.dry_run_job(JOB, build_pipeline, plan, options,
                                  f"nothing read from {plan.input} or {plan.model}, nothing written to "
                                  f"{plan.output_dir}", progress, LabelError)
    try:
        location = resolve_model(plan.model)
        config = answer_config(location.metadata, threshold)
    except (ModelNotFound, ValueError) as exc:
        raise LabelError(str(exc)) from None
    driver.print_plan(_plan_lines(plan, location, config.threshold), runner, plan.output_dir, progress)

    result = driver.run_pipeline(options, build_pipeline, plan, LabelError, label_output(plan.output_dir), progress)

    metrics = _metrics(result)
    errors = sort_jsonl(FileSystems.join(plan.output_dir, ERRORS_FILE),
                        key=lambda e: (e.get("path") or "", e.get("row") or ""))
    _check_counts(plan, metrics["counters"], count_lines(FileSystems.join(plan.output_dir, PREDICTIONS_FILE)),
                  len(errors))
    summary = _summary(plan, runner, location, config, metrics, errors, time.perf_counter() - started)
    write_json(FileSystems.join(plan.output_dir, SUMMARY_FILE), summary)
    _print_result(summary, plan, driver.silent(progress))
    return summary


def _check_counts(plan: LabelPlan, counters: dict[str, int], lines: int, errors: int) -> None:
    """Some file matched, every one predicted or failed, Beam's counters agreeing with the files: else LabelError."""
    matched, predicted, failed = counters.get(MATCHED, 0), counters.get(PREDICTED, 0), counters.get(FAILED, 0)
    if matched == 0:
        hint = (f" (a directory keeps {', '.join(AUDIO_EXTENSIONS[:6])}…; give a glob to take other names)"
                if plan.kind == "directory" else "")
        raise LabelError(f"no audio files in {plan.input}{hint}")
    if lines + errors != matched:
        raise LabelError(f"files lost: {lines} predicted + {errors} failed != {matched} files matched")
    if predicted != lines or failed != errors:
        raise LabelError(f"counters disagree: {predicted} predicted / {failed} failed counted, {lines} lines in "
                         f"{PREDICTIONS_FILE}, {errors} in {ERRORS_FILE}")


def _plan_lines(plan: LabelPlan, location, threshold: float | None) -> list[str]:
    """What the job will label, with which model (`location`: None in a dry run, which reads no model) and limits."""
    what = {"directory": "every audio file under", "glob": "every file matching",
            "csv": "the files listed in"}[plan.kind]
    lines = [f"{JOB}: {what} {plan.input}"]
    if location is None:
        lines.append(f"  model: {plan.model} (not read in a dry run)")
    else:
        name = location.metadata.get("model_name", "?")
        lines.append(f"  model: {location.saved_model_dir} ({name}); threshold {threshold:g}"
                     f"{' (--threshold)' if plan.threshold is not None else ''}")
    lines.append(f"  limits: {plan.max_seconds:g} s and {plan.max_file_bytes / 2**20:g} MB per file; model calls of "
                 f"≤ {plan.max_batch_windows} windows; {'with' if plan.windows else 'no'} window timeline")
    return lines


def _print_result(summary: dict, plan: LabelPlan, progress: driver.Progress) -> None:
    matched, predicted, failed = summary["files_matched"], summary["predicted"], summary["failed"]
    seconds = summary["elapsed_seconds"]
    progress(f"{JOB}: {predicted} files predicted + {failed} failed == {matched} files matched "
             f"(nothing lost) in {seconds:.1f} s ({matched / max(seconds, 1e-9):.1f} files/s)")
    classes = ", ".join(f"{name} {n}" for name, n in summary["classes"].items() if n)
    progress(f"  labels: {classes or 'none'}; undetermined {summary['undetermined']}")
    if failed:
        by_step = ", ".join(f"{step} {n}" for step, n in summary["failed_by_step"].items() if n)
        progress(f"  {failed} failure(s) ({by_step}) listed in {FileSystems.join(plan.output_dir, ERRORS_FILE)}")
    calls = summary["model_calls"]
    progress(f"  model: {calls['calls']} calls of ≤ {plan.max_batch_windows} windows ({calls['windows']} windows, "
             f"largest {calls['largest']})")
    predictions = FileSystems.join(plan.output_dir, PREDICTIONS_FILE)
    if not predicted and not holds_empty_files(predictions):
        predictions = "none (s3:// holds no empty file)"
    progress(f"  predictions: {predictions}; summary: {FileSystems.join(plan.output_dir, SUMMARY_FILE)}")


# ------------------------------------------------------------------------------------ outputs
def label_output(output_dir: str) -> driver.Output:
    """What a run leaves in OUT (driver.run_pipeline removes an earlier run's once the runner has the job)."""
    return driver.Output(output_dir, (SUMMARY_FILE, PREDICTIONS_FILE, ERRORS_FILE), marker=SUMMARY_FILE)


def _metrics(result) -> dict:
    """Our namespace's counters (committed where the runner has them, else attempted) and the
    windows-per-call distribution."""
    calls = {"calls": 0, "windows": 0, "largest": 0}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for distribution in query["distributions"]:
        if distribution.key.metric.name != WINDOWS_PER_CALL:
            continue
        value = driver.committed(distribution)
        if value is None or not value.count:
            continue
        calls["calls"] += int(value.count)
        calls["windows"] += int(value.sum)
        calls["largest"] = max(calls["largest"], int(value.max))
    return {"counters": driver.counters(result, METRICS_NAMESPACE), "model_calls": calls}


def _summary(plan: LabelPlan, runner: dict, location, config, metrics: dict, errors: list[dict],
             seconds: float) -> dict:
    counters = metrics["counters"]
    classes = {name: counters.get(LABEL_PREFIX + name, 0) for name in config.class_names}
    predicted, failed = counters.get(PREDICTED, 0), len(errors)
    return {
        "input": plan.input,
        "input_kind": plan.kind,
        "files_matched": counters.get(MATCHED, 0),
        "files_skipped": counters.get(SKIPPED, 0),  # a directory's files without an audio extension
        "predicted": predicted,
        "failed": failed,
        "failed_by_step": {step: sum(1 for e in errors if e.get("step") == step) for step in STEPS},
        "classes": classes,
        "undetermined": counters.get(LABEL_PREFIX + c.UNDETERMINED, 0),
        "output": {"dir": plan.output_dir, "predictions": PREDICTIONS_FILE, "errors": ERRORS_FILE},
        "model": {"export": plan.model, "saved_model": location.saved_model_dir,
                  "metadata_file": location.metadata_path, "metadata": location.metadata},
        "settings": {"threshold": config.threshold, "threshold_from": "--threshold" if plan.threshold is not None
                     else ("model" if location.metadata.get("threshold") is not None else "default"),
                     "windows": plan.windows, "max_seconds": plan.max_seconds,
                     "max_file_bytes": plan.max_file_bytes, "max_batch_windows": plan.max_batch_windows},
        "model_calls": metrics["model_calls"],
        "runner": runner,
        "elapsed_seconds": round(seconds, 3),
        "files_per_second": round(counters.get(MATCHED, 0) / max(seconds, 1e-9), 2),
    }
