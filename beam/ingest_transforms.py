"""`us8k ingest`'s transforms (what its workers run; beam.ingest is the driver that plans and checks the
job): the metadata rows, `DecodeClips` (a PTransform with two tagged outputs) and the small functions
the job's other steps map with.

    ClipRow | BadRow ─ DecodeClips ─┬─ records: (fold, serialised tf.train.Example)
                                    └─ errors:  {"file", "fold", "line", "reason"}

The driver parses each CSV row once, with `read_row`, into a `ClipRow` (valid fields) or a
`BadRow` (wrong field count, unknown classID or fold, class name that contradicts the classID…,
with the reason); the workers receive those records, not CSV text. A row fails (and goes to
`errors`, counted by a Beam metrics counter) when it is a BadRow or its audio is missing,
unreadable, undecodable, truncated, empty or not finite. Every written clip increments a counter
per (fold, class): the driver builds the manifest from them.
Imports no TensorFlow: tfdata.example writes the Examples.
"""
from __future__ import annotations

import csv
import dataclasses
import posixpath

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam.files import read_audio_bytes
from tfdata import contract as c
from tfdata.audio import AudioDecodeError, decode_head, fit_to_length
from tfdata.example import serialize_clip

METRICS_NAMESPACE = "us8k.ingest"
WRITTEN_COUNTER = "clips_written"
FAILED_COUNTER = "clips_failed"
RECORDS_TAG = "records"
ERRORS_TAG = "errors"
REQUIRED_COLUMNS = ("slice_file_name", "fsID", "salience", "fold", "classID", "class")


def written_counter_name(fold: int, label: int) -> str:
    """Name of the counter of clips written for one (fold, class)."""
    return f"written_fold{fold}_class{label}"


class RowError(ValueError):
    """A metadata row that cannot describe a clip; the message says why."""


@dataclasses.dataclass(frozen=True)
class ClipRow:
    """One valid metadata row."""

    line: int  # 1-based line in the CSV (the header is line 1)
    slice_file_name: str
    fsid: int
    salience: int
    fold: int
    label: int

    @property
    def relative_path(self) -> str:
        """Path of the clip inside the dataset: audio/fold{fold}/{slice_file_name}."""
        return posixpath.join(c.AUDIO_DIR, c.fold_dir_name(self.fold), self.slice_file_name)


def header_columns(header_line: str) -> dict[str, int]:
    """CSV header → {column name: index}; raises RowError naming the missing columns."""
    names = [name.strip() for name in next(csv.reader([header_line]))]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise RowError(f"metadata CSV header lacks column(s) {', '.join(missing)} (found: {', '.join(names)})")
    return {name: names.index(name) for name in REQUIRED_COLUMNS}


def parse_row(line: int, text: str, columns: dict[str, int]) -> ClipRow:
    """One CSV line → ClipRow, or RowError saying what is wrong with it."""
    fields = next(csv.reader([text]), [])
    width = max(columns.values()) + 1
    if len(fields) < width:
        raise RowError(f"bad CSV row: {len(fields)} fields, expected at least {width}")
    get = {name: fields[index].strip() for name, index in columns.items()}

    def integer(name: str) -> int:
        try:
            return int(get[name])
        except ValueError:
            raise RowError(f"bad CSV row: {name} {get[name]!r} is not an integer") from None

    name = get["slice_file_name"]
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise RowError(f"bad CSV row: slice_file_name {name!r} is not a file name")
    fold, label = integer("fold"), integer("classID")
    if not 1 <= fold <= c.NUM_FOLDS:
        raise RowError(f"bad CSV row: unknown fold {fold} (expected 1..{c.NUM_FOLDS})")
    if not 0 <= label < c.NUM_CLASSES:
        raise RowError(f"bad CSV row: unknown classID {label} (expected 0..{c.NUM_CLASSES - 1})")
    if get["class"] and get["class"] != c.CLASS_NAMES[label]:
        raise RowError(f"bad CSV row: class {get['class']!r} contradicts classID {label} ({c.CLASS_NAMES[label]})")
    return ClipRow(line=line, slice_file_name=name, fsid=integer("fsID"), salience=integer("salience"),
                   fold=fold, label=label)


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A metadata row whose fields are bad: errors.jsonl lists it with its text and the reason."""

    line: int  # 1-based line in the CSV
    text: str
    reason: str


def read_row(line: int, text: str, columns: dict[str, int]) -> ClipRow | BadRow:
    """One CSV line, parsed once by the driver: a ClipRow, or a BadRow saying what is wrong."""
    try:
        return parse_row(line, text, columns)
    except RowError as exc:
        return BadRow(line=line, text=text, reason=str(exc))


class _DecodeClipFn(beam.DoFn):
    """ClipRow | BadRow → records (fold, example bytes) | errors (dict)."""

    def __init__(self, data_dir: str):
        self._data_dir = data_dir
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, WRITTEN_COUNTER)
        self._failed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, FAILED_COUNTER)
        self._per_fold_class = {}

    def process(self, row: ClipRow | BadRow):
        if isinstance(row, BadRow):
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, self._error(row.line, None, row.reason, text=row.text))
            return
        try:
            data = read_audio_bytes(FileSystems.join(self._data_dir, row.relative_path))
            clip, valid = fit_to_length(decode_head(data))  # decodes only the 4 s it keeps
            example = serialize_clip(clip, valid, label=row.label, class_name=c.CLASS_NAMES[row.label],
                                     fold=row.fold, fsid=row.fsid, slice_file_name=row.slice_file_name,
                                     salience=row.salience)
        except AudioDecodeError as exc:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, self._error(row.line, row, str(exc)))
            return
        except Exception as exc:  # never lose a row to an unforeseen failure: report it
            reason = f"unexpected {type(exc).__name__}: {exc}"
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, self._error(row.line, row, reason))
            return
        self._written.inc()
        self._counter(row.fold, row.label).inc()
        yield row.fold, example

    def _counter(self, fold: int, label: int):
        key = (fold, label)
        if key not in self._per_fold_class:
            self._per_fold_class[key] = beam.metrics.Metrics.counter(METRICS_NAMESPACE,
                                                                     written_counter_name(fold, label))
        return self._per_fold_class[key]

    def _error(self, line: int, row: ClipRow | None, reason: str, text: str | None = None) -> dict:
        self._failed.inc()
        error = {"file": row.relative_path if row else None, "fold": row.fold if row else None,
                 "line": line, "reason": reason}
        if row is None:
            error["row"] = text
        return error


class DecodeClips(beam.PTransform):
    """Parsed metadata rows (`read_row`: ClipRow | BadRow) → tagged outputs `records`
    ((fold, tf.train.Example bytes)) and `errors` (dicts; every BadRow becomes one).

    Each clip is decoded (libsndfile, else FFmpeg), downmixed, resampled to SAMPLE_RATE with soxr,
    zero-padded or cropped to CLIP_SAMPLES and serialised with its metadata and valid length."""

    def __init__(self, data_dir: str):
        super().__init__()
        self._data_dir = data_dir

    def expand(self, rows):
        return rows | "DecodeResamplePad" >> beam.ParDo(_DecodeClipFn(self._data_dir)).with_outputs(
            ERRORS_TAG, main=RECORDS_TAG)


def fold_index(keyed_example, num_partitions: int) -> int:
    """PartitionByFold's partition of a (fold, example) record: fold k → k - 1."""
    return keyed_example[0] - 1


def example_bytes(keyed_example) -> bytes:
    """A (fold, example) record's serialised Example, as WriteFold{k} writes it."""
    return keyed_example[1]
