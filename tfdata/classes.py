"""A collection's classes and folds: the rules a class list follows, and where each stage reads it.

Label k is `class_names[k]`. `us8k ingest` writes the list (label order), the folds and their counts
into RECORDS/manifest.json (schema version 2); training takes them from there and keeps the list in
its run; export writes it into the SavedModel's graph and metadata.json; the endpoint, `us8k label`
and the listening page read the export's. No stage reads a fixed list: UrbanSound8K's ten names are
that layout's (tfdata.contract.URBANSOUND8K_CLASSES), and the reading of records written before
schema 2, whose manifests carry no list and whose labels are UrbanSound8K's classIDs.

Class names: 1 to MAX_NAME_LENGTH characters among ASCII letters, digits, space, "_", "-" and ".",
beginning with a letter or a digit and not ending with a space; no two equal once lower-cased (a
folder per class must survive a case-insensitive file system); MIN_CLASSES to MAX_CLASSES of them;
"undetermined" is the answer below the threshold, never a class. Imports no TensorFlow or numpy.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

from tfdata import contract as c

SCHEMA_VERSION = 2  # RECORDS/manifest.json: 2 adds class_names, layout and the fold assignment
MIN_CLASSES = 2
MAX_CLASSES = 1000
MAX_NAME_LENGTH = 64
NAME_PATTERN = re.compile(rf"[A-Za-z0-9](?:[A-Za-z0-9 _.-]{{0,{MAX_NAME_LENGTH - 2}}}[A-Za-z0-9_.-])?")
NAME_RULE = (f"1 to {MAX_NAME_LENGTH} characters among letters, digits, space, '_', '-' and '.', "
             "beginning with a letter or digit, not ending with a space")


class ClassListError(ValueError):
    """A class list, or a records directory's manifest, that a stage cannot use; the message says why."""


def check_class_name(name: str) -> str:
    """`name` if it is a valid class name, else ClassListError naming the rule it breaks."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ClassListError(f"class name {name!r} is not {NAME_RULE}")
    if name.lower() == c.UNDETERMINED:
        raise ClassListError(f"class name {name!r} is the answer below the threshold, not a class")
    return name


def check_class_names(names) -> tuple[str, ...]:
    """The names as a tuple (label order) if they form a valid class list, else ClassListError."""
    names = tuple(names)
    for name in names:
        check_class_name(name)
    if not MIN_CLASSES <= len(names) <= MAX_CLASSES:
        raise ClassListError(f"{len(names)} class(es): a class list has {MIN_CLASSES} to {MAX_CLASSES}")
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            raise ClassListError(f"class {name!r} is listed twice"
                                 + (f" (as {seen[name.lower()]!r})" if seen[name.lower()] != name else ""))
        seen[name.lower()] = name
    return names


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a records directory holds: its classes (label order), its folds, where that was read."""

    class_names: tuple[str, ...]
    folds: tuple[int, ...]  # folds with at least one record, ascending
    schema_version: int  # the manifest's (1: written before class lists were recorded, or no manifest)
    source: str  # how the class list was found, for the log: "manifest.json (schema 2, layout esc50)"…

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def default_split(self) -> tuple[int, int]:
        """(validation fold, test fold): the dataset's last two folds (9 and 10 for UrbanSound8K)."""
        if len(self.folds) < 3:
            raise ClassListError(f"a run needs at least 3 folds (training, validation, test); "
                                 f"the records have {list(self.folds)}")
        return self.folds[-2], self.folds[-1]


def folds_on_disk(records_dir: str) -> list[int]:
    """Folds k with at least one shard (fold{k}/*.tfrecord) under a local records directory."""
    found = set()
    for path in glob.glob(os.path.join(os.fspath(records_dir), c.FOLD_DIR_PREFIX + "*")):
        digits = os.path.basename(path)[len(c.FOLD_DIR_PREFIX):]
        if digits.isdigit() and int(digits) >= 1 and glob.glob(os.path.join(path, "*" + c.RECORD_SUFFIX)):
            found.add(int(digits))
    return sorted(found)


def read_dataset_info(records_dir: str) -> DatasetInfo:
    """The classes and folds of a local records directory, from its manifest.json.

    Schema 2: the recorded class list (checked) and the folds with records. A manifest without a
    schema version (written before class lists were recorded), or no manifest at all (records written
    by other tools): UrbanSound8K's classes, as those records were always read. A newer schema is
    refused in one line."""
    path = os.path.join(os.fspath(records_dir), c.MANIFEST_FILE)
    if not os.path.isfile(path):
        return DatasetInfo(c.URBANSOUND8K_CLASSES, tuple(folds_on_disk(records_dir)), 1,
                           f"no {c.MANIFEST_FILE}: UrbanSound8K's classes assumed")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise ClassListError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ClassListError(f"{path}: not a readable manifest (not a JSON object)")
    version = manifest.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise ClassListError(f"{path}: manifest schema version {version!r}; this version reads 1 to {SCHEMA_VERSION}")
    folds = tuple(sorted(int(k) for k, entry in (manifest.get("folds") or {}).items()
                         if isinstance(entry, dict) and entry.get("examples", 0) > 0))
    if version == 1:
        return DatasetInfo(c.URBANSOUND8K_CLASSES, folds, 1,
                           f"{c.MANIFEST_FILE} of schema 1 (no class list): UrbanSound8K's classes")
    if "class_names" not in manifest:
        raise ClassListError(f"{path}: schema {version} manifest lacks class_names")
    try:
        names = check_class_names(manifest["class_names"])
    except ClassListError as exc:
        raise ClassListError(f"{path}: {exc}") from None
    return DatasetInfo(names, folds, version,
                       f"{c.MANIFEST_FILE} (schema {version}, layout {manifest.get('layout', '?')})")


def parse_class_list(text: str) -> tuple[str, ...]:
    """A `--classes` value: comma-separated names (as the other list flags), checked as a class list."""
    names = [part.strip() for part in str(text).split(",")]
    if any(not name for name in names):
        raise ClassListError(f"--classes {text!r}: an empty name (comma-separated names expected)")
    return check_class_names(names)
