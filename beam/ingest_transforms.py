"""`us8k ingest`'s transforms (what its workers run; beam.ingest is the driver that plans and checks the
job): `DecodeClips` (a PTransform with two tagged outputs) and the small functions the job's other
steps map with.

    ClipRow | BadRow ─ DecodeClips ─┬─ records: (fold, serialised tf.train.Example)
                                    └─ errors:  {"file", "fold", "line", "reason"[, "row"]}

The driver reads the dataset's layout once (beam.layouts) into ClipRows (a clip with its path, label,
class name, fold and group) and BadRows (a row or file that fails before decoding, with the reason;
beam.ingest_rows); the workers receive those records, not CSV text. A row fails (and goes to
`errors`, counted by a Beam metrics counter) when it is a BadRow or its audio is missing,
unreadable, undecodable, truncated, empty or not finite. Every written clip increments a counter
per (fold, class): the driver builds the manifest from them.

Clip length: a clip of up to 4 s is one record, zero padded (as always). A longer clip is stored as
its windows — 4 s every 2 s, the windows the endpoint averages for the same audio
(tfdata.windowing) — one record each, with its index and the clip's window count; at most
MAX_CLIP_SECONDS of a clip are kept (29 windows), the rest is cut and counted (`clips_cut`).
Imports no TensorFlow: tfdata.example writes the Examples.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam.files import read_audio_bytes
from beam.ingest_rows import BadRow, ClipRow
from tfdata import contract as c
from tfdata.audio import AudioDecodeError, decode_head
from tfdata.example import serialize_clip_windows

METRICS_NAMESPACE = "us8k.ingest"
WRITTEN_COUNTER = "clips_written"
FAILED_COUNTER = "clips_failed"
RECORDS_COUNTER = "records_written"  # one per window: more than clips_written when clips exceed 4 s
CUT_COUNTER = "clips_cut"  # clips longer than MAX_CLIP_SECONDS, cut there
MAX_CLIP_SAMPLES = c.MAX_CLIP_SECONDS * c.SAMPLE_RATE
RECORDS_TAG = "records"
ERRORS_TAG = "errors"


def written_counter_name(fold: int, label: int) -> str:
    """Name of the counter of clips written for one (fold, class)."""
    return f"written_fold{fold}_class{label}"


def records_counter_name(fold: int) -> str:
    """Name of the counter of records (windows) written for one fold."""
    return f"records_fold{fold}"


def clip_examples(waveform, row: ClipRow) -> list[bytes]:
    """A decoded clip (at most MAX_CLIP_SAMPLES) → its serialised Examples (one per 4 s window)."""
    return serialize_clip_windows(waveform, label=row.label, class_name=row.class_name, fold=row.fold,
                                  fsid=row.group, slice_file_name=row.slice_file_name, salience=row.salience)


class _DecodeClipFn(beam.DoFn):
    """ClipRow | BadRow → records (fold, example bytes) | errors (dict)."""

    def __init__(self, data_dir: str):
        self._data_dir = data_dir
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, WRITTEN_COUNTER)
        self._failed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, FAILED_COUNTER)
        self._records = beam.metrics.Metrics.counter(METRICS_NAMESPACE, RECORDS_COUNTER)
        self._cut = beam.metrics.Metrics.counter(METRICS_NAMESPACE, CUT_COUNTER)
        self._named = {}  # per (fold, class) and per fold counters, made as first needed

    def process(self, row: ClipRow | BadRow):
        if isinstance(row, BadRow):
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, self._bad_row(row))
            return
        try:
            data = read_audio_bytes(FileSystems.join(self._data_dir, row.relative_path))
            # decodes only what it keeps, plus one sample that tells a clip longer than the maximum
            waveform = decode_head(data, seconds=(MAX_CLIP_SAMPLES + 1) / c.SAMPLE_RATE)
            cut = waveform.shape[0] > MAX_CLIP_SAMPLES
            examples = clip_examples(waveform[:MAX_CLIP_SAMPLES], row)
        except AudioDecodeError as exc:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, self._error(row.line, row, str(exc)))
            return
        except Exception as exc:  # never lose a row to an unforeseen failure: report it
            reason = f"unexpected {type(exc).__name__}: {exc}"
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, self._error(row.line, row, reason))
            return
        self._written.inc()
        self._counter(written_counter_name(row.fold, row.label)).inc()
        self._records.inc(len(examples))
        self._counter(records_counter_name(row.fold)).inc(len(examples))
        if cut:
            self._cut.inc()
        for example in examples:
            yield row.fold, example

    def _counter(self, name: str):
        if name not in self._named:
            self._named[name] = beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)
        return self._named[name]

    def _error(self, line: int | None, row: ClipRow, reason: str) -> dict:
        self._failed.inc()
        return {"file": row.relative_path, "fold": row.fold, "line": line, "reason": reason}

    def _bad_row(self, row: BadRow) -> dict:
        self._failed.inc()
        error = {"file": row.file, "fold": None, "line": row.line, "reason": row.reason}
        if row.text is not None:
            error["row"] = row.text
        return error


class DecodeClips(beam.PTransform):
    """The layout's rows (beam.ingest_rows: ClipRow | BadRow) → tagged outputs `records`
    ((fold, tf.train.Example bytes)) and `errors` (dicts; every BadRow becomes one).

    Each clip is decoded (libsndfile, else FFmpeg), downmixed, resampled to SAMPLE_RATE with soxr,
    zero-padded or cropped to CLIP_SAMPLES and serialised with its metadata and valid length."""

    def __init__(self, data_dir: str):
        super().__init__()
        self._data_dir = data_dir

    def expand(self, rows):
        return rows | "DecodeResamplePad" >> beam.ParDo(_DecodeClipFn(self._data_dir)).with_outputs(
            ERRORS_TAG, main=RECORDS_TAG)


def fold_index(keyed_example, num_partitions: int, positions: dict[int, int]) -> int:
    """PartitionByFold's partition of a (fold, example) record: the fold's position among the plan's folds."""
    return positions[keyed_example[0]]


def example_bytes(keyed_example) -> bytes:
    """A (fold, example) record's serialised Example, as WriteFold{k} writes it."""
    return keyed_example[1]
