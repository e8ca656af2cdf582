"""`us8k label`: label a whole audio collection with the exported model, as a Beam job (RunInference).

    us8k label INPUT --model EXPORT --output OUT [--threshold T] [--windows] [--max-seconds S]
                     [--max-file-mb MB] [--max-batch W] [Beam options…]

    MatchFiles → ReadFiles → Decode → RunInference → Format → WritePredictions: OUT/predictions.jsonl
        └── failures of every step ── AllErrors → ErrorsToJson → WriteErrors:  OUT/errors.jsonl
    then the driver checks the counts and writes OUT/summary.json.

INPUT is a directory (every file under it, at any depth, whose extension is one of
AUDIO_EXTENSIONS), a glob (every file it matches), or a CSV listing the files: a `path` column
(relative paths are relative to the CSV's directory), or UrbanSound8K's metadata CSV
(`slice_file_name` + `fold`: audio/fold<k>/<name> under the dataset root). INPUT, EXPORT and OUT
may be local, gs:// or s3:// (Beam's FileSystems; S3 endpoint and keys as for `us8k ingest`).
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
the runner, model calls), written last: an OUT without it is incomplete. The driver checks that
predicted + failed == files matched (Beam counters and the lines of both files) and fails loudly
otherwise. Re-running into the same OUT replaces those three files; the earlier ones (and Beam's
temporary files an interrupted run left) are removed only once the runner has the job, as for
`us8k ingest` (beam.jobio.run_pipeline); anything else in OUT is left alone.

Runners: as `us8k ingest` (beam.pipeline.pipeline_options): locally the FnApiRunner in-process, in
`in_memory` mode with one worker thread per core (nothing downloaded), or any Beam runner, e.g.

    us8k label gs://BUCKET/recordings --model gs://BUCKET/export --output gs://BUCKET/labels \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py

`--dry_run=true` (true/1/yes; false/0/no: not a dry run; anything else refused, beam.jobio.beam_args)
builds the job (with DataflowRunner: the job and its staged sdist, offline; other runners ignore
Beam's --dry_run, so the pipeline is only built) without running it, reads nothing but a CSV INPUT's
header line and writes nothing. Progress: the driver's lines on stdout, and while the job runs a
line per worker process every PROGRESS_SECONDS (logger "us8k.label"; on Dataflow in the worker logs).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from typing import NamedTuple

# beam.pipeline first: it filters Beam's import-time notices before apache_beam is imported.
from beam.pipeline import describe_runner, pipeline_options


def _not_resource_module_notice(record: logging.LogRecord) -> bool:
    """Beam 2.77's RunInference imports `resource` in one try with its ModelManager, which needs torch:
    without torch `resource` is None and every model load warns "Resource module is not available…"
    (only RunInference's memory metric is lost)."""
    return not str(record.msg).startswith("Resource module is not available")


logging.getLogger().addFilter(_not_resource_module_notice)

import apache_beam as beam  # noqa: E402
from apache_beam.io import fileio  # noqa: E402
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.ml.inference.base import PredictionResult, RunInference  # noqa: E402

from beam import jobio  # noqa: E402
from beam.transforms import read_audio_bytes  # noqa: E402
from beam.label_model import (MAX_BATCH_WINDOWS, METRICS_NAMESPACE, WINDOWS_PER_CALL, Clip,  # noqa: E402
                              ModelNotFound, SavedModelHandler, resolve_model)
from tfdata import contract as c  # noqa: E402
from tfdata.answers import answer_config, answers_from_outputs  # noqa: E402
from tfdata.audio import AudioDecodeError, decode_audio  # noqa: E402

PREDICTIONS_FILE = "predictions.jsonl"
ERRORS_FILE = c.ERRORS_FILE  # errors.jsonl, as ingestion's
SUMMARY_FILE = "summary.json"
MAX_SECONDS = c.MAX_AUDIO_SECONDS  # default --max-seconds: the endpoint's per-request limit
MAX_FILE_MB = 512.0  # default --max-file-mb: 600 s of 96 kHz 24-bit stereo WAV is 346 MB
AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac", ".aif",
                    ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".wv", ".wma", ".ac3", ".mka",
                    ".webm", ".spx", ".mpc")  # a directory INPUT keeps these (any case); a glob keeps all it matches
PATH_COLUMNS = ("path", "file", "filename", "file_name")  # a CSV INPUT's column naming each file
PROGRESS_SECONDS = 10.0  # a worker process logs its count at most this often
STEPS = ("list", "read", "decode", "inference")  # where a file can fail (errors.jsonl "step")
MAIN_TAG, ERRORS_TAG = "main", "errors"

# Counters (namespace METRICS_NAMESPACE); per class: LABEL_PREFIX + class name or "undetermined".
MATCHED, SKIPPED, PREDICTED, FAILED = "files_matched", "files_skipped", "files_predicted", "files_failed"
LABEL_PREFIX = "label_"
FAILED_PREFIX = "failed_"

log = logging.getLogger("us8k.label")


class LabelError(RuntimeError):
    """The labelling cannot run or did not account for every file; the message says why."""


class FileRef(NamedTuple):
    """A file to label: its path and size when matching told it; `problem` for a listed row that names none."""
    path: str | None
    size: int | None = None
    problem: str | None = None
    row: str | None = None


@dataclasses.dataclass(frozen=True)
class LabelPlan:
    """What the job will do, known before it runs."""

    input: str
    kind: str  # "directory" | "glob" | "csv"
    pattern: str | None  # directory / glob: what MatchFiles matches
    csv_columns: dict[str, int] | None  # csv: column → index ("path", or "slice_file_name" + "fold")
    csv_root: str | None  # csv: what relative paths are relative to
    model: str
    output_dir: str
    threshold: float | None = None
    windows: bool = False
    max_seconds: float = MAX_SECONDS
    max_file_bytes: int = int(MAX_FILE_MB * 2**20)
    max_batch_windows: int = MAX_BATCH_WINDOWS


# ------------------------------------------------------------------------------------ planning
def _absolute(path: str) -> str:
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def plan_label(input_path: str, model: str, output_dir: str, *, threshold: float | None = None,
               windows: bool = False, max_seconds: float = MAX_SECONDS, max_file_mb: float = MAX_FILE_MB,
               max_batch_windows: int = MAX_BATCH_WINDOWS, check: bool = True) -> LabelPlan:
    """The plan for INPUT; with `check`, refuses (LabelError) an INPUT that is missing or matches
    nothing. A CSV INPUT's header is read either way (it decides the columns)."""
    input_path, model, output_dir = _absolute(input_path), _absolute(model), _absolute(output_dir)
    settings = dict(model=model, output_dir=output_dir, threshold=threshold, windows=windows,
                    max_seconds=float(max_seconds), max_file_bytes=int(max_file_mb * 2**20),
                    max_batch_windows=int(max_batch_windows))
    if input_path.lower().endswith(".csv") and not _is_glob(input_path):
        columns, root = _csv_columns(input_path)
        return LabelPlan(input_path, "csv", None, columns, root, **settings)
    if _is_glob(input_path) or ("://" not in input_path and os.path.isfile(input_path)):
        if check and not FileSystems.match([input_path], limits=[1])[0].metadata_list:
            raise LabelError(f"no files match {input_path}")
        return LabelPlan(input_path, "glob", input_path, None, None, **settings)
    if check and "://" not in input_path and not os.path.isdir(input_path):
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
    for name in PATH_COLUMNS:
        if name in names:
            return {"path": names.index(name)}, directory
    if "slice_file_name" in names and "fold" in names:  # UrbanSound8K's metadata/UrbanSound8K.csv
        root = FileSystems.split(directory)[0]
        return {"slice_file_name": names.index("slice_file_name"), "fold": names.index("fold")}, root
    raise LabelError(f"{csv_path}: the header needs a column {' or '.join(PATH_COLUMNS)} "
                     f"(or UrbanSound8K's slice_file_name and fold); found: {', '.join(names) or 'none'}")


# ------------------------------------------------------------------------------------ the steps
def _counter(name: str):
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


def error_entry(path: str | None, step: str, reason: str, row: str | None = None) -> dict:
    """One line of errors.jsonl; counted (files_failed, failed_<step>)."""
    _counter(FAILED).inc()
    _counter(FAILED_PREFIX + step).inc()
    entry = {"path": path, "step": step, "reason": reason}
    if row is not None:
        entry["row"] = row
    return entry


class _MatchedFn(beam.DoFn):
    """FileMetadata → FileRef, counted; a directory INPUT keeps audio extensions only."""

    def __init__(self, audio_only: bool):
        self._audio_only = audio_only
        self._matched, self._skipped = _counter(MATCHED), _counter(SKIPPED)

    def process(self, metadata):
        if self._audio_only and not metadata.path.lower().endswith(AUDIO_EXTENSIONS):
            self._skipped.inc()
            return
        self._matched.inc()
        yield FileRef(metadata.path, int(metadata.size_in_bytes))


class _ListedFn(beam.DoFn):
    """A CSV line → FileRef (a row naming no file: a FileRef with its problem), counted; blank lines skipped."""

    def __init__(self, columns: dict[str, int], root: str):
        self._columns, self._root = columns, root
        self._matched = _counter(MATCHED)

    def process(self, line: str):
        if not line.strip():
            return
        self._matched.inc()
        fields = next(csv.reader([line]), [])
        if len(fields) <= max(self._columns.values()):
            yield FileRef(None, problem=f"bad CSV row: {len(fields)} fields, expected at least "
                                        f"{max(self._columns.values()) + 1}", row=line)
            return
        if "path" in self._columns:
            path = fields[self._columns["path"]].strip()
            if not path:
                yield FileRef(None, problem="bad CSV row: empty path", row=line)
                return
        else:
            name, fold = fields[self._columns["slice_file_name"]].strip(), fields[self._columns["fold"]].strip()
            if not name or not fold.isdigit():
                yield FileRef(None, problem=f"bad CSV row: slice_file_name {name!r}, fold {fold!r}", row=line)
                return
            path = "/".join((c.AUDIO_DIR, c.fold_dir_name(int(fold)), name))
        if "://" in path:
            yield FileRef(path)
        elif "://" in self._root:  # relative to a gs:// or s3:// list
            yield FileRef(FileSystems.join(self._root, path))
        else:  # local: one spelling per file ("a/../b" → "b"), as matching a directory gives it
            yield FileRef(os.path.normpath(os.path.join(self._root, path)))


class MatchInput(beam.PTransform):
    """The plan's INPUT → FileRef per file, spread over the workers."""

    def __init__(self, plan: LabelPlan):
        super().__init__()
        self._plan = plan

    def expand(self, pipeline):
        plan = self._plan
        if plan.kind == "csv":
            refs = (pipeline
                    | "ReadList" >> beam.io.ReadFromText(plan.input, skip_header_lines=1)
                    | "ParseList" >> beam.ParDo(_ListedFn(plan.csv_columns, plan.csv_root)))
        else:
            refs = (pipeline
                    | "Pattern" >> beam.Create([plan.pattern])
                    | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                    | "Matched" >> beam.ParDo(_MatchedFn(plan.kind == "directory")))
        return refs | "Distribute" >> beam.Reshuffle()


class _ReadFn(beam.DoFn):
    """FileRef → (path, bytes) | errors."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes

    def process(self, ref: FileRef):
        if ref.problem is not None:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_entry(None, "list", ref.problem, ref.row))
            return
        if ref.size is not None and ref.size > self._max_bytes:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_entry(
                ref.path, "read", f"file is {ref.size / 2**20:.1f} MB; the limit is "
                                  f"{self._max_bytes / 2**20:g} MB (--max-file-mb)"))
            return
        try:
            data = read_audio_bytes(ref.path, self._max_bytes, ref.size)
        except AudioDecodeError as exc:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_entry(ref.path, "read", str(exc)))
            return
        except Exception as exc:  # never lose a file to an unforeseen failure: report it
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_entry(ref.path, "read", f"unexpected "
                                                                                     f"{type(exc).__name__}: {exc}"))
            return
        yield ref.path, data


class _DecodeFn(beam.DoFn):
    """(path, bytes) → Clip (mono float32 at 22050 Hz, at most max_seconds) | errors."""

    def __init__(self, max_seconds: float):
        self._max_seconds = max_seconds

    def process(self, item):
        path, data = item
        try:
            waveform = decode_audio(data, max_seconds=self._max_seconds)
        except AudioDecodeError as exc:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_entry(path, "decode", str(exc)))
            return
        except Exception as exc:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, error_entry(path, "decode", f"unexpected "
                                                                                   f"{type(exc).__name__}: {exc}"))
            return
        yield Clip(path, waveform)


def _failed_batch(failure):
    """RunInference's dead letter (a batch of Clips, (type, repr, formatted traceback)) → one error per
    file. The reason is the exception's message, on one line, from the traceback's last entry
    ("module.Type: message"): repr() of TensorFlow's errors holds none ("InvalidArgumentError()")."""
    batch, (kind, text, formatted) = failure
    message = _exception_message(formatted) or text
    reason = f"the model failed on this file's batch: {getattr(kind, '__name__', kind)}: {message}"[:500]
    for clip in batch:
        yield error_entry(clip.path, "inference", reason)


def _exception_message(formatted) -> str:
    """The message of traceback.format_exception's last entry (a list of strings, as Beam gives it),
    whitespace collapsed; "" when there is none."""
    if not isinstance(formatted, (list, tuple)) or not formatted:
        return ""
    _, separator, message = str(formatted[-1]).partition(": ")
    return " ".join(message.split()) if separator else ""


class _Progress:
    """Files formatted by this process, logged every PROGRESS_SECONDS (all of the process's threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count, self._started, self._logged = 0, None, None

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._count += 1
            if self._started is None:
                self._started = self._logged = now
            if now - self._logged < PROGRESS_SECONDS:
                return
            self._logged, count, rate = now, self._count, self._count / max(now - self._started, 1e-9)
        log.info(f"us8k label: {count} files labelled by this worker process ({rate:.1f} files/s)")


_PROGRESS = _Progress()


class _FormatFn(beam.DoFn):
    """PredictionResult → one predictions.jsonl line (tfdata.answers: the endpoint's answer + path, duration)."""

    def __init__(self, model: str, threshold: float | None, windows: bool):
        self._model, self._threshold, self._windows = model, threshold, windows
        self._config = None
        self._predicted = _counter(PREDICTED)
        self._labels = {}

    def setup(self):
        self._config = answer_config(resolve_model(self._model).metadata, self._threshold)

    def process(self, result: PredictionResult):
        clip, outputs = result.example, result.inference
        duration = clip.waveform.shape[0] / c.SAMPLE_RATE
        (answer,) = answers_from_outputs(outputs.probabilities[None], outputs.window_probabilities[None],
                                         [outputs.window_probabilities.shape[0]], config=self._config,
                                         windows=self._windows, durations=[duration])
        self._predicted.inc()
        label = answer["label"]
        if label not in self._labels:
            self._labels[label] = _counter(LABEL_PREFIX + label)
        self._labels[label].inc()
        _PROGRESS.tick()
        yield json.dumps({"path": clip.path, "duration_s": round(duration, 3), **answer})


def _error_json(error: dict) -> str:
    return json.dumps(error, sort_keys=True)


def build_pipeline(pipeline: beam.Pipeline, plan: LabelPlan) -> None:
    """Apply the labelling transforms to `pipeline` (nothing runs until pipeline.run())."""
    files = pipeline | "MatchFiles" >> MatchInput(plan)
    read = files | "ReadFiles" >> beam.ParDo(_ReadFn(plan.max_file_bytes)).with_outputs(ERRORS_TAG, main=MAIN_TAG)
    decoded = read[MAIN_TAG] | "Decode" >> beam.ParDo(_DecodeFn(plan.max_seconds)).with_outputs(
        ERRORS_TAG, main=MAIN_TAG)
    handler = SavedModelHandler(plan.model, plan.max_batch_windows)
    results, dead = decoded[MAIN_TAG] | "RunInference" >> RunInference(handler).with_exception_handling()
    _ = (results
         | "Format" >> beam.ParDo(_FormatFn(plan.model, plan.threshold, plan.windows)).with_output_types(str)
         | "WritePredictions" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, PREDICTIONS_FILE),
                                                     shard_name_template="", num_shards=1))
    failed_inference = dead.failed_inferences | "InferenceErrors" >> beam.FlatMap(_failed_batch)
    _ = ((read[ERRORS_TAG], decoded[ERRORS_TAG], failed_inference)
         | "AllErrors" >> beam.Flatten()
         | "ErrorsToJson" >> beam.Map(_error_json).with_output_types(str)
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(plan.output_dir, ERRORS_FILE),
                                                shard_name_template="", num_shards=1))


# ------------------------------------------------------------------------------------ the driver
def run_label(input_path: str, model: str, output_dir: str, pipeline_args: list[str] | None = None, *,
              threshold: float | None = None, windows: bool = False, max_seconds: float = MAX_SECONDS,
              max_file_mb: float = MAX_FILE_MB, max_batch_windows: int = MAX_BATCH_WINDOWS, progress=print) -> dict:
    """Plan, run the Beam job, check that every file is accounted for, write and return the summary.

    With Beam's --dry_run: build the job, read nothing but a CSV's header, write nothing; returns
    jobio.describe_job's summary instead."""
    started = time.perf_counter()
    options = pipeline_options(pipeline_args, LabelError)
    FileSystems.set_options(options)  # the driver's own reads and writes see the S3 options too
    dry_run = jobio.dry_run_requested(options)
    plan = plan_label(input_path, model, output_dir, threshold=threshold, windows=windows, max_seconds=max_seconds,
                      max_file_mb=max_file_mb, max_batch_windows=max_batch_windows, check=not dry_run)
    runner = describe_runner(options)
    location = None
    if not dry_run:
        try:
            location = resolve_model(plan.model)
            config = answer_config(location.metadata, threshold)
        except (ModelNotFound, ValueError) as exc:
            raise LabelError(str(exc)) from None
    _print_plan(plan, runner, location, None if location is None else config.threshold, progress)
    if dry_run:
        return jobio.dry_run_job("us8k label", build_pipeline, plan, options,
                                 f"nothing read from {plan.input} or {plan.model}, nothing written to {plan.output_dir}",
                                 progress, LabelError)

    result = jobio.run_pipeline(options, build_pipeline, plan, LabelError, label_output(plan.output_dir), progress)

    metrics = _metrics(result)
    counters = metrics["counters"]
    errors = jobio.sort_jsonl(FileSystems.join(plan.output_dir, ERRORS_FILE),
                              key=lambda e: (e.get("path") or "", e.get("row") or ""))
    lines = _count_lines(FileSystems.join(plan.output_dir, PREDICTIONS_FILE))
    matched, predicted, failed = counters.get(MATCHED, 0), counters.get(PREDICTED, 0), counters.get(FAILED, 0)
    if matched == 0:
        raise LabelError(f"no audio files in {plan.input}" + (f" (a directory keeps {', '.join(AUDIO_EXTENSIONS[:6])}…; "
                                                              "give a glob to take other names)"
                                                              if plan.kind == "directory" else ""))
    if lines + len(errors) != matched:
        raise LabelError(f"files lost: {lines} predicted + {len(errors)} failed != {matched} files matched")
    if predicted != lines or failed != len(errors):
        raise LabelError(f"counters disagree: {predicted} predicted / {failed} failed counted, {lines} lines in "
                         f"{PREDICTIONS_FILE}, {len(errors)} in {ERRORS_FILE}")
    summary = _summary(plan, runner, location, config, metrics, errors, time.perf_counter() - started)
    jobio.write_text(FileSystems.join(plan.output_dir, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")

    seconds = summary["elapsed_seconds"]
    progress(f"us8k label: {lines} files predicted + {len(errors)} failed == {matched} files matched "
             f"(nothing lost) in {seconds:.1f} s ({matched / max(seconds, 1e-9):.1f} files/s)")
    classes = ", ".join(f"{name} {n}" for name, n in summary["classes"].items() if n)
    progress(f"  labels: {classes or 'none'}; undetermined {summary['undetermined']}")
    if errors:
        by_step = ", ".join(f"{step} {n}" for step, n in summary["failed_by_step"].items() if n)
        progress(f"  {len(errors)} failure(s) ({by_step}) listed in {FileSystems.join(plan.output_dir, ERRORS_FILE)}")
    calls = summary["model_calls"]
    progress(f"  model: {calls['calls']} calls of ≤ {plan.max_batch_windows} windows ({calls['windows']} windows, "
             f"largest {calls['largest']})")
    progress(f"  predictions: {FileSystems.join(plan.output_dir, PREDICTIONS_FILE)}; "
             f"summary: {FileSystems.join(plan.output_dir, SUMMARY_FILE)}")
    return summary


def _print_plan(plan: LabelPlan, runner: dict, location, threshold, progress) -> None:
    what = {"directory": "every audio file under", "glob": "every file matching",
            "csv": "the files listed in"}[plan.kind]
    progress(f"us8k label: {what} {plan.input}")
    if location is None:
        progress(f"  model: {plan.model} (not read in a dry run)")
    else:
        name = location.metadata.get("model_name", "?")
        progress(f"  model: {location.saved_model_dir} ({name}); threshold {threshold:g}"
                 f"{' (--threshold)' if plan.threshold is not None else ''}")
    progress(f"  limits: {plan.max_seconds:g} s and {plan.max_file_bytes / 2**20:g} MB per file; model calls of "
             f"≤ {plan.max_batch_windows} windows; {'with' if plan.windows else 'no'} window timeline")
    mode = f" ({runner['running_mode']}, {runner['workers']} workers)" if "running_mode" in runner else ""
    progress(f"  runner: {runner['runner']}{mode} → {plan.output_dir}")


# ------------------------------------------------------------------------------------ outputs
def label_output(output_dir: str) -> jobio.Output:
    """What a run leaves in OUT (jobio.run_pipeline removes an earlier run's once the runner has the job)."""
    return jobio.Output(output_dir, (SUMMARY_FILE, PREDICTIONS_FILE, ERRORS_FILE), marker=SUMMARY_FILE)


def _metrics(result) -> dict:
    """Our namespace's counters (committed where the runner has them, else attempted) and the
    windows-per-call distribution."""
    calls = {"calls": 0, "windows": 0, "largest": 0}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for distribution in query["distributions"]:
        if distribution.key.metric.name != WINDOWS_PER_CALL:
            continue
        value = jobio.committed(distribution)
        if value is None or not value.count:
            continue
        calls["calls"] += int(value.count)
        calls["windows"] += int(value.sum)
        calls["largest"] = max(calls["largest"], int(value.max))
    return {"counters": jobio.counters(result, METRICS_NAMESPACE), "model_calls": calls}


def _count_lines(path: str) -> int:
    """Non-empty lines of a (possibly large) file, read in blocks."""
    if not FileSystems.exists(path):
        return 0
    count, last = 0, b"\n"
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while block := handle.read(1 << 22):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


PASSES_UNKNOWN_ARGS = True  # us8k hands every option not declared here to Beam's PipelineOptions


def _log_to_stdout() -> None:
    """The workers' progress lines (logger us8k.label) on stdout beside the driver's, once."""
    if not any(getattr(h, "_us8k_label", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._us8k_label = True
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit(f"us8k label: error: --threshold must be in [0, 1], got {args.threshold}")
    if not 0.0 < args.max_seconds < float("inf"):
        raise SystemExit(f"us8k label: error: --max-seconds must be a positive number, got {args.max_seconds}")
    if not 0.0 < args.max_file_mb < float("inf"):
        raise SystemExit(f"us8k label: error: --max-file-mb must be a positive number, got {args.max_file_mb}")
    if args.max_batch < 1:
        raise SystemExit(f"us8k label: error: --max-batch must be at least 1, got {args.max_batch}")
    _log_to_stdout()
    try:
        run_label(args.input, args.model, args.output, list(getattr(args, "extra_args", [])),
                  threshold=args.threshold, windows=args.windows, max_seconds=args.max_seconds,
                  max_file_mb=args.max_file_mb, max_batch_windows=args.max_batch,
                  progress=lambda line: print(line, flush=True))
    except LabelError as exc:
        raise SystemExit(f"us8k label: error: {exc}") from None
    return 0
