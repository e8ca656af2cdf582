"""The folders layout's reader (the Keras / Hugging Face AudioFolder convention): every audio file under
ROOT/<class>/, at any depth, is a clip of that class.

    ROOT/dog/a.wav, ROOT/dog/2024/b.flac, ROOT/rain/c.ogg …   classes: dog, rain (sorted), or --classes

Audio files: the extensions of beam.audio_files.AUDIO_EXTENSIONS (any case). Files without one
are ignored (counted for the plan's lines), as are hidden files and folders (a name beginning with
"."). A folder holding no audio file is an error naming it (with --classes, a class of the list
without audio; a folder not in the list is no class: its files are listed failures), an audio file
directly under ROOT is a listed failure. Each file is its own group; the folds are assigned
(beam.fold_assignment). Listing goes through Beam's FileSystems.match (local, gs://, s3://); locally
the root's folders are also read with os.scandir, so that an empty one is seen.
"""
from __future__ import annotations

import hashlib
import os

from apache_beam.io.filesystems import FileSystems

from beam.audio_files import AUDIO_EXTENSIONS, has_audio_extension
from beam.files import is_remote
from beam.ingest_rows import BadRow, ClipRow, LayoutError, Listing, group_id
from tfdata.classes import ClassListError, check_class_names
from tfdata.contract import LAYOUT_FOLDERS

SHOWN = 5  # folders named at most in one error line
FOLDERS = LAYOUT_FOLDERS


def list_files(root: str) -> list[tuple[str, int]]:
    """(path relative to `root`, "/"-separated; size in bytes) of every file under it, sorted."""
    try:
        found = FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list
    except Exception as exc:
        raise LayoutError(f"cannot list {root}: {' '.join(str(exc).split())[:300]}") from None
    prefix = root.rstrip("/") + "/"
    files = []
    for metadata in found:
        path = metadata.path.replace(os.sep, "/") if not is_remote(root) else metadata.path
        relative = path[len(prefix):] if path.startswith(prefix) else ""
        if relative and not relative.endswith("/"):  # an object store's "folder/" marker is no file
            files.append((relative, int(metadata.size_in_bytes)))
    return sorted(files)


def hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def is_audio(relative: str) -> bool:
    """Whether a listed file counts as audio: not hidden, with an audio extension."""
    return not hidden(relative) and has_audio_extension(relative)


def holds_class_folders(files: list[tuple[str, int]]) -> bool:
    """Whether some audio file lies in a folder under the root (layout detection)."""
    return any("/" in relative and is_audio(relative) for relative, _ in files)


def _folders(root: str, files: list[tuple[str, int]]) -> set[str]:
    """The root's (not hidden) folders: those holding files, and locally the empty ones too."""
    folders = {relative.split("/", 1)[0] for relative, _ in files if "/" in relative}
    if not is_remote(root) and os.path.isdir(root):
        folders |= {entry.name for entry in os.scandir(root) if entry.is_dir()}
    return {name for name in folders if not name.startswith(".")}


def _named(root: str, names: list[str]) -> str:
    shown = ", ".join(FileSystems.join(root, name) for name in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def read_folders(root: str, classes: tuple[str, ...] | None = None,
                 files: list[tuple[str, int]] | None = None) -> Listing:
    """ROOT/<class>/… → a ClipRow per audio file (fold 0: assigned later) or a BadRow (a file directly
    under ROOT, or in a folder that is not one of `classes`). `files`: the root's listing, when
    detection already made it."""
    files = list_files(root) if files is None else files
    audio = [relative for relative, _ in files if is_audio(relative)]
    with_audio = {relative.split("/", 1)[0] for relative in audio if "/" in relative}
    if not with_audio:
        raise LayoutError(f"no audio file in a folder under {root} (the {FOLDERS} layout: ROOT/<class>/…/<file>)")
    if classes is None:
        empty = sorted(_folders(root, files) - with_audio)
        if empty:
            raise LayoutError(f"empty class folder: {_named(root, empty)} holds no audio file "
                              f"({', '.join(AUDIO_EXTENSIONS[:6])}…)")
        try:
            names = check_class_names(sorted(with_audio))
        except ClassListError as exc:
            raise LayoutError(f"{root}: the folder names are not a class list: {exc}") from None
        classes_from = "the folder names, sorted"
    else:
        names, classes_from = tuple(classes), "--classes"
        missing = [name for name in names if name not in with_audio]
        if missing:
            raise LayoutError(f"class(es) of --classes without audio: {_named(root, missing)} "
                              f"holds no audio file")
    label = {name: index for index, name in enumerate(names)}
    rows: list[ClipRow | BadRow] = []
    for relative in audio:
        folder = relative.split("/", 1)[0] if "/" in relative else None
        if folder is None:
            rows.append(BadRow(line=None, text=None, file=relative,
                               reason="not in a class folder: an audio file directly under the dataset root"))
        elif folder not in label:
            rows.append(BadRow(line=None, text=None, file=relative,
                               reason=f"folder {folder!r} is not one of --classes"))
        else:
            rows.append(ClipRow(line=None, relative_path=relative, slice_file_name=relative, label=label[folder],
                                class_name=folder, fold=0, group=group_id(relative)))
    listing_sha256 = hashlib.sha256("".join(f"{relative}\t{size}\n" for relative, size in files).encode()).hexdigest()
    return Listing(rows=rows, class_names=names, classes_from=classes_from, has_folds=False,
                   groups="none: each file is its own group",
                   source={"kind": "folders", "path": root, "sha256": listing_sha256, "rows": len(audio)},
                   ignored_files=len(files) - len(audio))
