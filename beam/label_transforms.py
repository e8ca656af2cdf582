"""`us8k label`'s transforms (what its workers run; beam.label is the driver that plans and checks the
job): matching the INPUT, reading and decoding each file, formatting RunInference's answers (the model
handler is beam.label_model), and every failure as an errors.jsonl entry with its step.

    MatchInput → ReadFn → DecodeFn → RunInference (beam.label_model) → FormatFn
        └── failures of every step (tagged ERRORS_TAG; RunInference's dead letter: `failed_batch`)

Counters (namespace METRICS_NAMESPACE) count files matched, skipped, predicted and failed, and each
label; the driver checks them against the files written. While the job runs, each worker process
logs a progress line every PROGRESS_SECONDS on the logger PROGRESS_LOGGER (`us8k label` prints it on
stdout; on Dataflow it is in the worker logs).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import threading
import time
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import PredictionResult

from beam.audio_files import AUDIO_EXTENSIONS  # a directory INPUT keeps these; a glob keeps all it matches
from beam.files import is_remote, read_audio_bytes
from beam.label_model import METRICS_NAMESPACE, Clip, resolve_model
from tfdata import contract as c
from tfdata.answers import answer_config, answers_from_outputs
from tfdata.audio import AudioDecodeError, decode_audio

PROGRESS_SECONDS = 10.0  # a worker process logs its count at most this often
PROGRESS_LOGGER = "us8k.label"
STEPS = ("list", "read", "decode", "inference")  # where a file can fail (errors.jsonl "step")
MAIN_TAG, ERRORS_TAG = "main", "errors"

# Counters (namespace METRICS_NAMESPACE); per class: LABEL_PREFIX + class name or "undetermined".
MATCHED, SKIPPED, PREDICTED, FAILED = "files_matched", "files_skipped", "files_predicted", "files_failed"
LABEL_PREFIX = "label_"
FAILED_PREFIX = "failed_"

log = logging.getLogger(PROGRESS_LOGGER)


class FileRef(NamedTuple):
    """A file to label: its path and size when matching told it; `problem` for a listed row that names none."""
    path: str | None
    size: int | None = None
    problem: str | None = None
    row: str | None = None


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
        elif "esc50_filename" in self._columns:  # ESC-50's meta/esc50.csv: audio/<filename> under the root
            name = fields[self._columns["esc50_filename"]].strip()
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                yield FileRef(None, problem=f"bad CSV row: filename {name!r} is not a file name", row=line)
                return
            path = "/".join((c.ESC50_AUDIO_DIR, name))
        else:
            name, fold = fields[self._columns["slice_file_name"]].strip(), fields[self._columns["fold"]].strip()
            if not name or not fold.isdigit():
                yield FileRef(None, problem=f"bad CSV row: slice_file_name {name!r}, fold {fold!r}", row=line)
                return
            path = "/".join((c.AUDIO_DIR, c.fold_dir_name(int(fold)), name))
        if is_remote(path):
            yield FileRef(path)
        elif is_remote(self._root):  # relative to a gs:// or s3:// list
            yield FileRef(FileSystems.join(self._root, path))
        else:  # local: one spelling per file ("a/../b" → "b"), as matching a directory gives it
            yield FileRef(os.path.normpath(os.path.join(self._root, path)))


class MatchInput(beam.PTransform):
    """INPUT → FileRef per file, spread over the workers. `kind` "csv": the list `input_path` (columns
    `csv_columns`, relative paths under `csv_root`); "directory" or "glob": the files matching `pattern`."""

    def __init__(self, kind: str, input_path: str, pattern: str | None = None,
                 csv_columns: dict[str, int] | None = None, csv_root: str | None = None):
        super().__init__()
        self._kind, self._input, self._pattern = kind, input_path, pattern
        self._csv_columns, self._csv_root = csv_columns, csv_root

    def expand(self, pipeline):
        if self._kind == "csv":
            refs = (pipeline
                    | "ReadList" >> beam.io.ReadFromText(self._input, skip_header_lines=1)
                    | "ParseList" >> beam.ParDo(_ListedFn(self._csv_columns, self._csv_root)))
        else:
            refs = (pipeline
                    | "Pattern" >> beam.Create([self._pattern])
                    | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                    | "Matched" >> beam.ParDo(_MatchedFn(self._kind == "directory")))
        return refs | "Distribute" >> beam.Reshuffle()


class ReadFn(beam.DoFn):
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


class DecodeFn(beam.DoFn):
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


def failed_batch(failure):
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


class FormatFn(beam.DoFn):
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
