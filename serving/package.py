"""`us8k package EXPORT --output model.tar.gz`: an export in the SageMaker TF Serving layout.

At the archive's root, as the SageMaker TensorFlow Serving container expects:

    1/                      the SavedModel (from EXPORT/model/1/; TF Serving's version folder)
    code/inference.py       the request/response handlers (serving/inference.py)
    code/requirements.txt   the compiled decoders it needs, pinned to the versions installed here
    code/lib/tfdata/        __init__.py, contract.py, audio.py: pure Python, no TensorFlow
    metadata.json           class names, threshold, window hop… (read by inference.py)

The container puts code/lib on the path and pip-installs code/requirements.txt at start-up.
Entries are relative, sorted, with fixed owner/mode/mtime (the same export gives the same bytes);
symbolic links are refused rather than followed.
"""
from __future__ import annotations

import gzip
import importlib.metadata
import io
import json
import tarfile
from pathlib import Path

import serving.inference
import tfdata

MODEL_SUBDIR = "model"  # EXPORT/model/<version>/ (models.export)
METADATA_FILE = serving.inference.METADATA_FILE
CODE_DIR = "code"
LIB_MODULES = ("__init__.py", "contract.py", "audio.py")  # tfdata modules the handlers import (not records.py: TF)
REQUIREMENTS = ("soundfile", "soxr", "av", "numpy")  # decoders + numpy, pinned from this environment
ARCHIVE_MTIME = 0  # fixed timestamps: reproducible archives


class PackageError(ValueError):
    """The export cannot be packaged; the message says why."""


def find_export_version(export_dir: Path) -> Path:
    """EXPORT/model/<n>/ with a saved_model.pb (the highest n)."""
    parent = export_dir / MODEL_SUBDIR
    versions = sorted((p for p in parent.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                      key=lambda p: int(p.name)) if parent.is_dir() else []
    if not versions:
        raise PackageError(f"no SavedModel in {parent}/<version>/ (is {export_dir} an `us8k export` output?)")
    return versions[-1]


def requirements_text() -> str:
    lines = []
    for name in REQUIREMENTS:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise PackageError(f"{name} is not installed here; it is needed to pin code/requirements.txt") from None
    return "\n".join(lines) + "\n"


def archive_members(export_dir: str | Path) -> list[tuple[str, Path | bytes]]:
    """(archive name, source file or content) for every file, in archive order."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise PackageError(f"export directory not found: {export_dir}")
    metadata = export_dir / METADATA_FILE
    if not metadata.is_file():
        raise PackageError(f"no {METADATA_FILE} in {export_dir}")
    try:
        json.loads(metadata.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{metadata} is not valid JSON ({exc})") from None
    version_dir = find_export_version(export_dir)
    members: list[tuple[str, Path | bytes]] = []
    for path in sorted(version_dir.rglob("*")):
        if path.is_symlink():
            raise PackageError(f"refusing to package a symbolic link: {path}")
        if path.is_file():
            members.append((f"{version_dir.name}/{path.relative_to(version_dir).as_posix()}", path))
    members.append((f"{CODE_DIR}/inference.py", Path(serving.inference.__file__)))
    members.append((f"{CODE_DIR}/requirements.txt", requirements_text().encode()))
    tfdata_dir = Path(tfdata.__file__).parent
    for module in LIB_MODULES:
        members.append((f"{CODE_DIR}/lib/tfdata/{module}", tfdata_dir / module))
    members.append((METADATA_FILE, metadata))
    for name, _ in members:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "" in parts:
            raise PackageError(f"unsafe archive name {name!r}")
    return sorted(members, key=lambda member: member[0])


def write_package(export_dir: str | Path, output: str | Path) -> Path:
    """Write model.tar.gz (atomically: a temp file beside it, then renamed)."""
    members = archive_members(export_dir)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=ARCHIVE_MTIME) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for directory in _directories(name for name, _ in members):
                archive.addfile(_info(directory, tarfile.DIRTYPE, 0, 0o755))
            for name, source in members:
                data = source if isinstance(source, bytes) else source.read_bytes()
                archive.addfile(_info(name, tarfile.REGTYPE, len(data), 0o644), io.BytesIO(data))
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return output


def _directories(names) -> list[str]:
    found = set()
    for name in names:
        parts = name.split("/")[:-1]
        found.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(found)


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def add_arguments(parser) -> None:
    parser.add_argument("export", metavar="EXPORT", help="export directory (EXPORT/model/1/ + metadata.json)")
    parser.add_argument("--output", default="model.tar.gz", help="archive to write (default model.tar.gz)")


def run(args) -> int:
    try:
        output = write_package(args.export, args.output)
    except (PackageError, OSError) as exc:
        raise SystemExit(f"us8k package: error: {exc}") from None
    with tarfile.open(output, "r:gz") as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    version = next(name.split("/")[0] for name in names if name.endswith("/saved_model.pb"))
    size_mb = output.stat().st_size / 1e6
    print(f"us8k package: wrote {output} ({size_mb:.1f} MB, {len(names)} files: {version}/ SavedModel, "
          f"code/inference.py, code/requirements.txt, code/lib/tfdata/, {METADATA_FILE})")
    return 0
