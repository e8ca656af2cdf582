"""The rows `us8k ingest`'s layout readers produce and its workers take, and the checks every reader shares.

    ClipRow  a clip to decode: its path under the dataset root, label and class name, fold, group, salience
    BadRow   a listed failure found before decoding (bad fields, a label not a class, a path outside the
             root, a file listed twice…): errors.jsonl lists it with the reason
    Listing  what a layout's reader found: the rows, the class names, whether the data has folds…

The driver reads the layout (beam.layouts) once and hands these rows to the job; the workers
(beam.ingest_transforms) decode a ClipRow or report a BadRow. Also here: a metadata CSV's text, its
header and fields, file names and relative paths refused when they leave the root, and group ids
(int64, the records' KEY_FSID) from a CSV's group value. Imports no Beam workers' steps and no TensorFlow.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import posixpath
import re

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DRIVE = re.compile(r"[A-Za-z]:")
SALIENCE_NOT_GIVEN = 0  # a layout without UrbanSound8K's salience (1 foreground, 2 background)


class LayoutError(ValueError):
    """A collection that cannot be ingested as it is (a missing or empty CSV, a missing column, an empty
    class folder, classes that contradict one another…); the message says why, in one line."""


class RowError(ValueError):
    """A metadata row (or a listed file) that cannot describe a clip; the message says why."""


@dataclasses.dataclass(frozen=True)
class ClipRow:
    """One clip to ingest."""

    line: int | None  # 1-based line in the metadata CSV (the header is line 1); None: a file found by listing
    relative_path: str  # the audio file under the dataset root, "/"-separated
    slice_file_name: str  # written as the record's slice_file_name (its file name, or its path under the root)
    label: int  # index into the collection's class names
    class_name: str
    fold: int  # 0 until beam.fold_assignment gives it one (layouts without folds)
    group: int  # the recording it comes from (KEY_FSID): clips of one group never span two folds
    salience: int = SALIENCE_NOT_GIVEN


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A row or file that fails before decoding: errors.jsonl lists it with the reason."""

    line: int | None  # 1-based line in the metadata CSV; None: a file found by listing
    text: str | None  # the CSV row as written (None: a listed file)
    reason: str
    file: str | None = None  # its path under the root, when the row names one


@dataclasses.dataclass(frozen=True)
class Listing:
    """What a layout's reader found (beam.layouts turns it into the job's collection)."""

    rows: list[ClipRow | BadRow]  # in the CSV's order, or the listing's (sorted paths)
    class_names: tuple[str, ...]  # label order
    classes_from: str  # how the class list was found, for the plan's lines
    has_folds: bool  # the data sets the folds (else beam.fold_assignment deals them)
    groups: str  # the manifest's "groups": what a group is ("fsID", "src_file", "group column", "none: …")
    source: dict  # the manifest's "source": kind, path, sha256, rows
    ignored_files: int = 0  # files under the root that are not audio (the folders layout)


# ------------------------------------------------------------------------------------ CSV text
def read_csv_lines(path: str, error: type[Exception]) -> tuple[bytes, list[str]]:
    """A metadata CSV's bytes and lines; `error` when it is missing or empty."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            raw = handle.read()
    except Exception:
        raise error(f"metadata CSV not found: {path}") from None
    lines = raw.decode("utf-8-sig", errors="replace").splitlines()
    if not lines:
        raise error(f"metadata CSV is empty: {path}")
    return raw, lines


def data_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line after the header (the header is line 1)."""
    return [(number, text) for number, text in enumerate(lines[1:], start=2) if text.strip()]


def header_columns(header_line: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, int]:
    """CSV header → {column name: index} for the required and the optional columns present; RowError
    naming the missing required ones."""
    names = [name.strip() for name in next(csv.reader([header_line]), [])]
    missing = [name for name in required if name not in names]
    if missing:
        raise RowError(f"metadata CSV header lacks column(s) {', '.join(missing)} (found: {', '.join(names)})")
    return {name: names.index(name) for name in required + optional if name in names}


def row_fields(text: str, columns: dict[str, int]) -> dict[str, str]:
    """One CSV line → {column: stripped field}; RowError when it has too few fields."""
    fields = next(csv.reader([text]), [])
    width = max(columns.values()) + 1
    if len(fields) < width:
        raise RowError(f"bad CSV row: {len(fields)} fields, expected at least {width}")
    return {name: fields[index].strip() for name, index in columns.items()}


def integer_field(fields: dict[str, str], name: str) -> int:
    """The column's value as an integer, else RowError."""
    try:
        return int(fields[name])
    except ValueError:
        raise RowError(f"bad CSV row: {name} {fields[name]!r} is not an integer") from None


def fold_field(fields: dict[str, str], name: str = "fold") -> int:
    """A fold number (≥ 1), else RowError."""
    fold = integer_field(fields, name)
    if fold < 1:
        raise RowError(f"bad CSV row: fold {fold} (folds are numbered from 1)")
    return fold


# ------------------------------------------------------------------------------------ paths
def file_name(name: str, column: str) -> str:
    """A bare file name (no directory), else RowError."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise RowError(f"bad CSV row: {column} {name!r} is not a file name")
    return name


def relative_path(text: str, column: str) -> str:
    """A path relative to the dataset root, normalised ("a/./b" → "a/b", "\\" read as "/"); RowError
    when it is empty, absolute (or a URL) or leaves the root ("../x.wav"). Symbolic links are not
    followed here: one that points outside the root is read where it points."""
    path = text.replace("\\", "/")
    if not path:
        raise RowError(f"bad CSV row: empty {column}")
    if path.startswith("/") or "://" in path or _DRIVE.match(path):
        raise RowError(f"bad CSV row: {column} {text!r} is an absolute path, outside the dataset root")
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        raise RowError(f"bad CSV row: {column} {text!r} is outside the dataset root")
    if normal == "." or path.endswith("/"):
        raise RowError(f"bad CSV row: {column} {text!r} names no file")
    return normal


# ------------------------------------------------------------------------------------ groups
def group_id(value: str) -> int:
    """A group value as the records' int64 KEY_FSID: an integer as it is (within int64), anything else
    the stable int63 of its sha256 (the first 8 bytes, big-endian, shifted right by one)."""
    value = value.strip()
    if _INTEGER.fullmatch(value) and -INT64_MAX - 1 <= int(value) <= INT64_MAX:
        return int(value)
    return int.from_bytes(hashlib.sha256(value.encode("utf-8")).digest()[:8], "big") >> 1
