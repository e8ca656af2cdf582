"""The dataset layouts `us8k ingest` reads: which one a root holds, and the collection its reader finds.

    urbansound8k  ROOT/metadata/UrbanSound8K.csv + ROOT/audio/fold<k>/…   (beam.layout_csvs)
    esc50         ROOT/meta/esc50.csv + ROOT/audio/…                     (beam.layout_csvs)
    csv           ROOT/metadata.csv (file_name, label[, fold][, group])  (beam.layout_csvs)
    folders       ROOT/<class>/…/<audio file>                            (beam.layout_folders)

Without --layout, the first of those marker files that exists decides, in that order; else a root
whose folders hold audio files is `folders`; else a one-line error saying what was looked for.
`read_collection` then reads the layout, lists every file named twice after its first listing as a
failure ("listed twice (line N)"), and, where the data sets no folds, deals `--num-folds` folds by
group (beam.fold_assignment). `--classes` applies to the layouts whose classes are not fixed by their
CSV (folders, csv); `--num-folds` to those without folds. Every refusal is a LayoutError, one line.
"""
from __future__ import annotations

import dataclasses

from apache_beam.io.filesystems import FileSystems

from beam.fold_assignment import DEFAULT_NUM_FOLDS, RULE, FoldAssignmentError, assign_folds, check_num_folds
from beam.ingest_rows import BadRow, ClipRow, LayoutError, Listing
from beam.layout_csvs import read_esc50, read_metadata_csv, read_urbansound8k
from beam.layout_folders import holds_class_folders, list_files, read_folders
from tfdata import contract as c
from tfdata.classes import ClassListError, check_class_names

URBANSOUND8K, ESC50, FOLDERS, CSV, LAYOUTS = (c.LAYOUT_URBANSOUND8K, c.LAYOUT_ESC50, c.LAYOUT_FOLDERS, c.LAYOUT_CSV,
                                              c.LAYOUTS)
MARKERS = ((URBANSOUND8K, c.METADATA_CSV), (ESC50, c.ESC50_CSV), (CSV, c.COLLECTION_CSV))  # detection, in order
READERS = {URBANSOUND8K: read_urbansound8k, ESC50: read_esc50, CSV: read_metadata_csv, FOLDERS: read_folders}
CLASSES_FIXED = (URBANSOUND8K, ESC50)  # their CSV names the classes: --classes is refused


@dataclasses.dataclass(frozen=True)
class Collection:
    """A dataset as the job ingests it: the layout's rows with their folds, and what the manifest records."""

    layout: str
    detected: bool  # found by detection (no --layout)
    listing: Listing  # the reader's (its rows before duplicates and folds)
    rows: list[ClipRow | BadRow]  # every row, each ClipRow with its fold
    fold_assignment: str | dict  # "dataset", or {"num_folds": K, "rule": RULE}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.listing.class_names

    @property
    def invalid_rows(self) -> int:
        """Rows (files) listed as failures before decoding."""
        return sum(isinstance(row, BadRow) for row in self.rows)

    @property
    def source(self) -> dict:
        """The manifest's "source": kind, path, sha256, rows, invalid_rows."""
        return {**self.listing.source, "invalid_rows": self.invalid_rows}


def detect_layout(root: str) -> tuple[str, list[tuple[str, int]] | None]:
    """(layout, the root's file listing when it was made to decide) for a dataset root; LayoutError
    saying what was looked for when none fits."""
    for layout, marker in MARKERS:
        if FileSystems.exists(FileSystems.join(root, marker)):
            return layout, None
    files = list_files(root)
    if holds_class_folders(files):
        return FOLDERS, files
    looked_for = ", ".join(f"{marker} ({layout})" for layout, marker in MARKERS)
    found = f"{len(files)} file(s), none of them audio in a folder" if files else "nothing"
    raise LayoutError(f"no dataset layout found in {root} ({found}): looked for {looked_for} and folders "
                      f"holding audio files ({FOLDERS}); --layout names one")


def mark_duplicates(rows: list[ClipRow | BadRow]) -> list[ClipRow | BadRow]:
    """Every ClipRow naming a file an earlier ClipRow named → a BadRow "listed twice (line N)"."""
    first: dict[str, int | None] = {}
    marked = []
    for row in rows:
        if isinstance(row, ClipRow):
            if row.relative_path in first:
                row = BadRow(line=row.line, text=None, file=row.relative_path,
                             reason=f"listed twice (line {first[row.relative_path]})")
            else:
                first[row.relative_path] = row.line
        marked.append(row)
    return marked


def _check_options(layout: str, classes, num_folds) -> tuple[str, ...] | None:
    if classes is not None:
        if layout in CLASSES_FIXED:
            raise LayoutError(f"--classes applies to the {FOLDERS} and {CSV} layouts; the {layout} layout's CSV "
                              f"names its classes")
        try:
            classes = check_class_names(classes)
        except ClassListError as exc:
            raise LayoutError(f"--classes: {exc}") from None
    if num_folds is not None:
        try:
            check_num_folds(num_folds)
        except FoldAssignmentError as exc:
            raise LayoutError(str(exc)) from None
    return classes


def read_collection(root: str, layout: str | None = None, classes: tuple[str, ...] | None = None,
                    num_folds: int | None = None) -> Collection:
    """The dataset under `root` in `layout` (None: detected), its classes fixed by `classes` (--classes)
    where the layout allows it, folds dealt (`num_folds`, default DEFAULT_NUM_FOLDS) where it has none."""
    if layout is not None and layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    detected = layout is None
    files = None
    if detected:
        layout, files = detect_layout(root)
    classes = _check_options(layout, classes, num_folds)
    listing = read_folders(root, classes, files) if layout == FOLDERS else READERS[layout](root, classes)
    rows = mark_duplicates(listing.rows)
    if listing.has_folds:
        if num_folds is not None:
            raise LayoutError(f"--num-folds applies to data without folds; this {layout} layout's CSV sets them "
                              f"(its fold column)")
        return Collection(layout, detected, listing, rows, "dataset")
    num_folds = DEFAULT_NUM_FOLDS if num_folds is None else num_folds
    try:
        rows = assign_folds(rows, listing.class_names, num_folds)
    except FoldAssignmentError as exc:
        raise LayoutError(str(exc)) from None
    return Collection(layout, detected, listing, rows, {"num_folds": num_folds, "rule": RULE})
