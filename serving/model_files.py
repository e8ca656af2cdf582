"""Where a servable model's files are: an export directory, an unpacked package, or a model.tar.gz.

`locate_model(path)` gives the SavedModel version directory and metadata.json for any of them
(a tarball is unpacked safely into a temp dir, removed by `ModelFiles.cleanup()`). The version
directory is found by `tfdata.layout.find_saved_model`, on the same `latest_version_dir` that
export verification and packaging use. No TensorFlow here.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tfdata.layout import METADATA_FILE, find_saved_model

UNPACK_PREFIX = "us8k-serve-"  # temp dirs holding an unpacked model.tar.gz


@dataclass
class ModelFiles:
    """Where a servable lives: the SavedModel version directory and metadata.json."""
    saved_model_dir: Path
    metadata_path: Path | None
    temp_dir: Path | None = None  # an unpacked model.tar.gz, removed by cleanup()

    def cleanup(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def locate_model(path: str | Path) -> ModelFiles:
    """An export dir (model/<v>/ + metadata.json), an unpacked package (<v>/ + code/), a SavedModel
    dir, or a model.tar.gz (unpacked safely into a temp dir)."""
    path = Path(path)
    if path.is_file() and tarfile.is_tarfile(path):
        return _locate_in_archive(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither an export directory nor a model.tar.gz")
    saved_model_dir = find_saved_model(path)
    if saved_model_dir is None:
        raise FileNotFoundError(f"no SavedModel under {path} (expected model/<version>/saved_model.pb "
                                "or <version>/saved_model.pb)")
    metadata = path / METADATA_FILE
    return ModelFiles(saved_model_dir, metadata if metadata.is_file() else None)


def _locate_in_archive(archive_path: Path) -> ModelFiles:
    """Unpack a model.tar.gz into a temp dir (kept until cleanup()) and locate the model in it."""
    temp_dir = Path(tempfile.mkdtemp(prefix=UNPACK_PREFIX))
    try:
        with tarfile.open(archive_path, "r:*") as archive:
            archive.extractall(temp_dir, filter="data")  # no absolute paths, no .., no devices
        files = locate_model(temp_dir)
    except Exception:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    files.temp_dir = temp_dir
    return files
