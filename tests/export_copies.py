"""Exports derived from the run's shared `tiny_export` (tests/conftest.py) instead of exported again.

An export's threshold lives in its metadata.json only (models.export: EXPORT/metadata.json and the
SavedModel's asset copy, model/<v>/assets/metadata.json; the graph does not hold it), so a copy
whose two metadata.json files state another threshold is what `export_model(..., threshold=T)` of
the same model writes."""
from __future__ import annotations

import json
from pathlib import Path

import shared_dir

from tfdata.layout import METADATA_FILE, MODEL_SUBDIR


def set_threshold(export_dir: Path, threshold: float) -> Path:
    """Rewrite both metadata.json files of `export_dir` (a private copy) with `threshold`."""
    for path in [export_dir / METADATA_FILE, *sorted((export_dir / MODEL_SUBDIR).glob(f"*/assets/{METADATA_FILE}"))]:
        content = json.loads(path.read_text())
        content["threshold"] = float(threshold)
        path.write_text(json.dumps(content, indent=2) + "\n")
    return export_dir


def with_threshold(tmp_path_factory, tiny_export: Path, threshold: float) -> Path:
    """A copy of `tiny_export` whose threshold is `threshold`, made once per test run (read only)."""
    def build(target: Path) -> None:
        set_threshold(shared_dir.copy_of(tiny_export, target / "export"), threshold)

    return shared_dir.built_once(tmp_path_factory, f"tiny-export-threshold-{threshold:g}", build) / "export"
