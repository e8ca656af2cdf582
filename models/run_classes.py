"""A training run's classes: RUN/classes.json, written from the records once per run, read by every later step.

`us8k train` reads the records' classes and folds once (`tfdata.classes.read_dataset_info`, from
RECORDS/manifest.json) and keeps them in RUN/classes.json (`tfdata.layout.CLASSES_FILE`):

    {"class_names": ["bell", "hum", …],   label order: output k of every model of the run is class_names[k]
     "num_classes": 3,
     "folds": [1, 2, 3, 4, 5],             the folds the records hold
     "schema_version": 2,                  the records manifest's
     "source": "manifest.json (schema 2, layout folders)",
     "records": "/abs/records"}

Evaluation, calibration, the TensorBoard confusion matrix and export take the class list from there. A
run written before runs kept their classes has no classes.json: every run then trained on UrbanSound8K's
ten classes, so it is read as UrbanSound8K's (`read_run_classes` says so in its `source`). Pure Python.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

from models.run_files import write_json
from tfdata import contract as c
from tfdata.classes import ClassListError, DatasetInfo, check_class_names
from tfdata.layout import CLASSES_FILE


class RunClasses(NamedTuple):
    """A run's class names (label order) and where they were read (for the log)."""

    class_names: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def run_classes_record(info: DatasetInfo, records_dir: str) -> dict:
    """The content of RUN/classes.json for records described by `info`."""
    return {"class_names": list(info.class_names), "num_classes": info.num_classes, "folds": list(info.folds),
            "schema_version": info.schema_version, "source": info.source,
            "records": os.path.abspath(os.fspath(records_dir))}


def write_run_classes(run_dir: str, info: DatasetInfo, records_dir: str) -> dict:
    """Write RUN/classes.json (atomically); return its content."""
    record = run_classes_record(info, records_dir)
    write_json(os.path.join(os.fspath(run_dir), CLASSES_FILE), record)
    return record


def recorded_class_names(run_dir: str) -> tuple[str, ...] | None:
    """The class names RUN/classes.json holds, or None when the run has none yet (or it is unreadable)."""
    try:
        return read_run_classes(run_dir, missing_ok=False).class_names
    except ClassListError:
        return None


def read_run_classes(run_dir: str, *, missing_ok: bool = True) -> RunClasses:
    """The run's class list from RUN/classes.json. Without that file (a run written before runs kept
    their classes; `missing_ok`): UrbanSound8K's ten classes, as every such run was trained on. An
    unreadable file or an invalid list is a ClassListError naming the file."""
    path = os.path.join(os.fspath(run_dir), CLASSES_FILE)
    if not os.path.isfile(path):
        if missing_ok:
            return RunClasses(c.URBANSOUND8K_CLASSES,
                              f"no {CLASSES_FILE} (a run written before runs kept their classes): UrbanSound8K's")
        raise ClassListError(f"no {CLASSES_FILE} in {run_dir}")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as exc:
        raise ClassListError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(content, dict) or "class_names" not in content:
        raise ClassListError(f"{path} lacks class_names")
    try:
        names = check_class_names(content["class_names"])
    except ClassListError as exc:
        raise ClassListError(f"{path}: {exc}") from None
    return RunClasses(names, f"{CLASSES_FILE}, from {content.get('source', 'the records')}")


def output_mismatch(output_size, class_names, what: str) -> str | None:
    """The one-line reason a model whose output has `output_size` units cannot answer with `class_names`,
    or None when the sizes agree."""
    if output_size == len(class_names):
        return None
    return (f"{what} has {output_size} outputs but the run's class list has {len(class_names)} classes "
            f"({', '.join(class_names[:5])}{', …' if len(class_names) > 5 else ''})")
