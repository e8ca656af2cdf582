"""The readers of the three layouts a metadata CSV describes (beam.layouts detects and dispatches):

    urbansound8k  ROOT/metadata/UrbanSound8K.csv (slice_file_name, fsID, salience, fold, classID, class)
                  + ROOT/audio/fold<k>/<slice_file_name>; classes: UrbanSound8K's ten, by classID
    esc50         ROOT/meta/esc50.csv (filename, fold, target, category, src_file; esc10 and take read
                  as they come) + ROOT/audio/<filename>; classes: the categories by target (0..N-1)
    csv           ROOT/metadata.csv (file_name relative to ROOT, label; optional fold and group: the
                  Hugging Face AudioFolder convention); classes: the sorted labels, or --classes

Each returns a beam.ingest_rows.Listing: a ClipRow or a BadRow (with the reason) per non-blank data
row, in the CSV's order. A missing or empty CSV, a header without rows or without a required column,
or classes that contradict one another: LayoutError, one line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import posixpath

from apache_beam.io.filesystems import FileSystems

from beam.ingest_rows import (
    BadRow,
    ClipRow,
    LayoutError,
    Listing,
    RowError,
    data_lines,
    file_name,
    fold_field,
    group_id,
    header_columns,
    integer_field,
    read_csv_lines,
    relative_path,
    row_fields,
)
from tfdata import contract as c
from tfdata.classes import ClassListError, check_class_names

URBANSOUND8K_COLUMNS = ("slice_file_name", "fsID", "salience", "fold", "classID", "class")
ESC50_OPTIONAL = ("esc10", "take")  # the contract's ESC-50 columns that a listing may lack
ESC50_COLUMNS = tuple(name for name in c.ESC50_COLUMNS if name not in ESC50_OPTIONAL)  # required
CSV_OPTIONAL = ("fold", "group")
CSV_COLUMNS = tuple(name for name in c.COLLECTION_CSV_COLUMNS if name not in CSV_OPTIONAL)  # required


def _csv(path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()):
    """(sha256, {column: index}, [(line, text)]) of a metadata CSV; LayoutError when it is missing, empty,
    lacks a required column or has no data rows."""
    raw, lines = read_csv_lines(path, LayoutError)
    try:
        columns = header_columns(lines[0], required, optional)
    except RowError as exc:
        raise LayoutError(f"{exc}: {path}") from None
    rows = data_lines(lines)
    if not rows:
        raise LayoutError(f"metadata CSV has a header and no rows: {path}")
    return hashlib.sha256(raw).hexdigest(), columns, rows


def _source(path: str, sha256: str, rows: int) -> dict:
    return {"kind": "csv", "path": path, "sha256": sha256, "rows": rows}


def read_rows(rows: list[tuple[int, str]], parse) -> list[ClipRow | BadRow]:
    """Each (line, text) through `parse`; a RowError becomes a BadRow with the row's text."""
    out = []
    for line, text in rows:
        try:
            out.append(parse(line, text))
        except RowError as exc:
            out.append(BadRow(line=line, text=text, reason=str(exc)))
    return out


# ------------------------------------------------------------------------------------ urbansound8k
def parse_urbansound8k_row(line: int, text: str, columns: dict[str, int]) -> ClipRow:
    """One UrbanSound8K CSV line → ClipRow, or RowError saying what is wrong with it."""
    get = row_fields(text, columns)
    name = file_name(get["slice_file_name"], "slice_file_name")
    fold, label = integer_field(get, "fold"), integer_field(get, "classID")
    classes = c.URBANSOUND8K_CLASSES
    if not 1 <= fold <= c.URBANSOUND8K_FOLDS:
        raise RowError(f"bad CSV row: unknown fold {fold} (expected 1..{c.URBANSOUND8K_FOLDS})")
    if not 0 <= label < len(classes):
        raise RowError(f"bad CSV row: unknown classID {label} (expected 0..{len(classes) - 1})")
    if get["class"] and get["class"] != classes[label]:
        raise RowError(f"bad CSV row: class {get['class']!r} contradicts classID {label} ({classes[label]})")
    return ClipRow(line=line, relative_path=posixpath.join(c.AUDIO_DIR, c.fold_dir_name(fold), name),
                   slice_file_name=name, label=label, class_name=classes[label], fold=fold,
                   group=integer_field(get, "fsID"), salience=integer_field(get, "salience"))


def read_urbansound8k(root: str, classes: tuple[str, ...] | None = None) -> Listing:
    """ROOT/metadata/UrbanSound8K.csv → its rows (folds and classes from the CSV)."""
    path = FileSystems.join(root, c.METADATA_CSV)
    sha256, columns, rows = _csv(path, URBANSOUND8K_COLUMNS)
    parsed = read_rows(rows, lambda line, text: parse_urbansound8k_row(line, text, columns))
    return Listing(rows=parsed, class_names=c.URBANSOUND8K_CLASSES, classes_from="UrbanSound8K's, by classID",
                   has_folds=True, groups="fsID", source=_source(path, sha256, len(rows)))


# ------------------------------------------------------------------------------------ esc50
def parse_esc50_row(line: int, text: str, columns: dict[str, int]) -> ClipRow:
    """One ESC-50 CSV line → ClipRow (label = target, class name = category), or RowError."""
    get = row_fields(text, columns)
    name = file_name(get["filename"], "filename")
    fold, target = fold_field(get), integer_field(get, "target")
    if target < 0:
        raise RowError(f"bad CSV row: target {target} is negative")
    for column in ("category", "src_file"):
        if not get[column]:
            raise RowError(f"bad CSV row: empty {column}")
    return ClipRow(line=line, relative_path=posixpath.join(c.ESC50_AUDIO_DIR, name), slice_file_name=name,
                   label=target, class_name=get["category"], fold=fold, group=group_id(get["src_file"]))


def esc50_class_names(rows: list[ClipRow | BadRow], path: str) -> tuple[str, ...]:
    """The categories in target order; LayoutError when a target has two categories, a category two
    targets, the targets are not 0..N-1, or the names are not a class list (tfdata.classes)."""
    seen: dict[int, tuple[str, int]] = {}
    for row in rows:
        if isinstance(row, ClipRow):
            first = seen.setdefault(row.label, (row.class_name, row.line))
            if first[0] != row.class_name:
                raise LayoutError(f"{path}: target {row.label} is {first[0]!r} on line {first[1]} and "
                                  f"{row.class_name!r} on line {row.line}")
    targets = sorted(seen)
    if targets != list(range(len(targets))):
        missing = sorted(set(range(max(targets, default=-1) + 1)) - set(targets))
        raise LayoutError(f"{path}: the targets must be 0..N-1 without gaps; "
                          f"{'no valid row' if not targets else 'missing ' + ', '.join(map(str, missing))}")
    try:
        return check_class_names(seen[t][0] for t in targets)
    except ClassListError as exc:
        raise LayoutError(f"{path}: the categories are not a class list: {exc}") from None


def read_esc50(root: str, classes: tuple[str, ...] | None = None) -> Listing:
    """ROOT/meta/esc50.csv → its rows (folds from the CSV, groups by src_file)."""
    path = FileSystems.join(root, c.ESC50_CSV)
    sha256, columns, rows = _csv(path, ESC50_COLUMNS, ESC50_OPTIONAL)
    parsed = read_rows(rows, lambda line, text: parse_esc50_row(line, text, columns))
    names = esc50_class_names(parsed, path)
    return Listing(rows=parsed, class_names=names, classes_from="the CSV's categories, by target", has_folds=True,
                   groups="src_file", source=_source(path, sha256, len(rows)))


# ------------------------------------------------------------------------------------ csv
def parse_metadata_row(line: int, text: str, columns: dict[str, int]) -> ClipRow:
    """One metadata.csv line → a ClipRow whose label is not yet known (-1; its class name is the
    label as written), or RowError. An empty group: the file is its own group."""
    get = row_fields(text, columns)
    path = relative_path(get["file_name"], "file_name")
    if not get["label"]:
        raise RowError("bad CSV row: empty label")
    fold = fold_field(get) if "fold" in columns else 0
    return ClipRow(line=line, relative_path=path, slice_file_name=path, label=-1, class_name=get["label"],
                   fold=fold, group=group_id(get.get("group") or path))


def read_metadata_csv(root: str, classes: tuple[str, ...] | None = None) -> Listing:
    """ROOT/metadata.csv → its rows: classes the sorted labels (or `classes`, --classes: a row with
    another label is a BadRow); folds from its fold column, if any; groups from its group column, if any."""
    path = FileSystems.join(root, c.COLLECTION_CSV)
    sha256, columns, rows = _csv(path, CSV_COLUMNS, CSV_OPTIONAL)
    texts = dict(rows)
    parsed = read_rows(rows, lambda line, text: parse_metadata_row(line, text, columns))
    if classes is None:
        try:
            names = check_class_names(sorted({r.class_name for r in parsed if isinstance(r, ClipRow)}))
        except ClassListError as exc:
            raise LayoutError(f"{path}: the labels are not a class list: {exc}") from None
        classes_from = "the CSV's labels, sorted"
    else:
        names, classes_from = tuple(classes), "--classes"
    label = {name: index for index, name in enumerate(names)}
    labelled: list[ClipRow | BadRow] = []
    for row in parsed:
        if isinstance(row, ClipRow) and row.class_name not in label:
            row = BadRow(line=row.line, text=texts[row.line], file=row.relative_path,
                         reason=f"label {row.class_name!r} is not one of --classes")
        elif isinstance(row, ClipRow):
            row = dataclasses.replace(row, label=label[row.class_name])
        labelled.append(row)
    groups = "group column" if "group" in columns else "none: each file is its own group"
    return Listing(rows=labelled, class_names=names, classes_from=classes_from, has_folds="fold" in columns,
                   groups=groups, source=_source(path, sha256, len(rows)))
