"""`us8k synth OUT --layout …`: synthetic collections in every layout `us8k ingest` reads.

`urbansound8k` (the default) is tfdata.synth.generate_dataset, unchanged. The others hold the generic
classes of tfdata.synth_sounds (5 by default, or the names given), built from each layout's documented
columns (ESC-50 itself cannot be downloaded here):

- `esc50`: OUT/meta/esc50.csv (filename, fold, target, category, esc10, src_file, take) and
  OUT/audio/{fold}-{src_file}-{take}-{target}.wav, 5 s mono 44.1 kHz 16-bit WAV; folds 1..5; a
  src_file (one recording) gives takes A, B, C… in one fold; some events are shorter and padded with
  digital silence, as in ESC-50; esc10 is True for every fifth target (ESC-10 is 10 of ESC-50's 50).
- `folders`: OUT/<class>/…/clip_NNNNN.{wav,flac,ogg} at depth 0 to 2 (session_S/, session_S/mic_M/),
  0.5–6 s, 16–48 kHz, mono or stereo, WAV 16/24-bit or float, FLAC, Ogg Vorbis; no folds, each file
  its own recording; a README.txt at the top and a notes.txt in the first class's folder (not audio).
- `csv`: OUT/metadata.csv (file_name, label, fold, group; `fold` left out with fold_column=False) and
  OUT/clips/<group>/<group>-<n>.{wav,flac}; a group is one recording (its clips share format and
  voice) and never spans two folds.

Every clip draws from its own numpy Generator seeded by (seed, layout, fold, class, n): the same seed
gives the same bytes (tfdata.synth_encoding), whatever else is chosen. `corrupt` adds listed but
unreadable files (tfdata.synth.CORRUPT_KINDS). Bad arguments raise SynthLayoutError (a ValueError)
before anything is written.
"""
from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from tfdata import contract
from tfdata.classes import MAX_CLASSES, ClassListError, check_class_names
from tfdata.contract import SAMPLE_RATE, URBANSOUND8K_FOLDS
from tfdata.synth import (
    CORRUPT_KINDS,
    DEFAULT_CLIPS_PER_CLASS_PER_FOLD,
    SynthConfig,
    corrupt_bytes,
    generate_dataset,
    parse_difficulty,
    prepare_out_dir,
    write_csv,
)
from tfdata.synth_encoding import audio_bytes, wav_bytes
from tfdata.synth_sounds import default_class_names, draw_voice, render_voice_clip

LAYOUTS = contract.LAYOUTS
DEFAULT_LAYOUT = contract.LAYOUT_URBANSOUND8K
DEFAULT_NUM_CLASSES = 5
DEFAULT_CLIPS_PER_CLASS = 10  # layouts without folds: enough for `us8k ingest`'s default --num-folds 10

# ESC-50's layout (its README: meta/esc50.csv and audio/*.wav, 5 s mono 44.1 kHz, 5 folds).
ESC50_CSV, ESC50_COLUMNS, ESC50_AUDIO_DIR = contract.ESC50_CSV, contract.ESC50_COLUMNS, contract.ESC50_AUDIO_DIR
ESC50_FOLDS = 5
ESC50_SECONDS = 5.0
ESC50_SAMPLE_RATE = 44100
ESC50_SHORT_EVENT_PROBABILITY = 0.3  # an event of 1–5 s, the rest of the 5 s digital silence
# The csv layout (Hugging Face AudioFolder's metadata.csv: file_name relative to the root, label).
CSV_LISTING, CSV_COLUMNS = contract.COLLECTION_CSV, contract.COLLECTION_CSV_COLUMNS
CSV_AUDIO_DIR = "clips"
CSV_MAX_FOLDS = URBANSOUND8K_FOLDS
DEFAULT_GENERIC_FOLDS = 5  # esc50, and csv with a fold column: folds 1..5 unless named
# The folders layout (Keras' audio_dataset_from_directory, AudioFolder): a folder per class.
FOLDERS_README = "README.txt"
FOLDERS_NOTES = "notes.txt"

_SLOTS = 1 << 16  # recordings per (fold, class) at most
_ID_MODULUS = 1 << 31
_ID_MULTIPLIER = 0x5BD1E995  # odd: k ↦ a·k + b mod 2^31 is a bijection, so recording ids never collide
_STREAMS = {"esc50": 2_000_001, "folders": 2_000_002, "csv": 2_000_003}  # seed words per layout
_GROUP_STREAM, _VOICE_STREAM, _CORRUPT_STREAM = 1_000_001, 1_000_003, 1_000_002


class SynthLayoutError(ValueError):
    """Arguments a layout cannot take (the message names the flag and why)."""


@dataclass(frozen=True)
class _Format:
    extension: str  # wav | flac | ogg
    subtype: str  # libsndfile's
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class _Job:
    """The checked arguments of one generic layout."""

    layout: str
    out: Path
    names: tuple[str, ...]
    folds: tuple[int, ...]  # () for a layout without folds
    count: int  # clips per class per fold (with folds) or per class (without)
    seed: int
    corrupt: int
    config: SynthConfig
    say: Callable[[str], None]

    def rng(self, *words: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAMS[self.layout], *words])

    def _id(self, k: int) -> int:
        return 1 + (_ID_MULTIPLIER * k + self.seed * 7919 + 104_729) % _ID_MODULUS

    def recording_id(self, fold: int, class_index: int, group: int) -> int:
        """A recording's number (ESC-50's src_file, the csv layout's group), unique in the collection."""
        return self._id((fold * MAX_CLASSES + class_index) * _SLOTS + group)

    def corrupt_id(self, i: int) -> int:
        return self._id((CSV_MAX_FOLDS + 1) * MAX_CLASSES * _SLOTS + i)  # past every (fold, class, group) key


@dataclass
class _Tally:
    listed: int = 0  # files a reader finds listed: CSV rows, or audio files in class folders
    rows: list[dict] = field(default_factory=list)
    per_class: Counter = field(default_factory=Counter)
    per_fold: dict[int, int] = field(default_factory=dict)
    groups: int = 0
    audio_seconds: float = 0.0
    extra_files: int = 0


# ---------------------------------------------------------------------------------------------
# Arguments


def generate(layout: str, out_dir: str | os.PathLike, *, classes: Iterable[str] | None = None,
             num_classes: int | None = None, folds: Iterable[int] | None = None, fold_column: bool = True,
             clips_per_class_per_fold: int | None = None, clips_per_class: int | None = None, seed: int = 0,
             corrupt: int = 0, difficulty: str | float | None = None, imbalance: bool = False,
             progress: Callable[[str], None] | None = None, config: SynthConfig | None = None,
             overwrite: bool = False) -> dict:
    """Write a synthetic collection in `layout`; returns its summary (layout, rows, clips, corrupt,
    class_names, per_class, per_fold, groups, audio_seconds, seconds…). `progress(line)` receives a
    line per fold (per class without folds) and one at the end."""
    if layout not in LAYOUTS:
        raise SynthLayoutError(f"layout {layout!r}: one of {', '.join(LAYOUTS)}")
    if layout == "urbansound8k":
        return _urbansound8k(out_dir, classes, num_classes, folds, fold_column, clips_per_class_per_fold,
                             clips_per_class, seed=seed, corrupt=corrupt, difficulty=difficulty, imbalance=imbalance,
                             progress=progress, config=config, overwrite=overwrite)
    if imbalance:
        raise SynthLayoutError("--imbalance is UrbanSound8K's class imbalance: the urbansound8k layout's only")
    config = config or SynthConfig()
    if difficulty is not None:
        config = replace(config, difficulty=parse_difficulty(difficulty))
    job = _Job(layout, Path(out_dir), _class_names(classes, num_classes), _folds(layout, folds, fold_column),
               0, int(seed), int(corrupt), config, progress or (lambda _line: None))
    job = replace(job, count=_clip_count(job, clips_per_class_per_fold, clips_per_class))
    if job.corrupt < 0:
        raise SynthLayoutError(f"corrupt must be >= 0, got {job.corrupt}")
    prepare_out_dir(job.out, overwrite, _REMOVERS[layout])
    started = time.perf_counter()
    tally = _WRITERS[layout](job)
    return _summary(job, tally, time.perf_counter() - started)


def _urbansound8k(out_dir, classes, num_classes, folds, fold_column, clips_per_class_per_fold, clips_per_class,
                  **kwargs) -> dict:
    if classes is not None or num_classes is not None:
        raise SynthLayoutError("--classes and --num-classes are for the esc50, folders and csv layouts: "
                               "urbansound8k has UrbanSound8K's ten classes")
    if not fold_column:
        raise SynthLayoutError("--no-fold-column is for the csv layout")
    if clips_per_class is not None:
        raise SynthLayoutError("--clips-per-class is for layouts without folds (folders, csv --no-fold-column); "
                               "urbansound8k takes --clips-per-class-per-fold")
    if clips_per_class_per_fold is None:
        clips_per_class_per_fold = DEFAULT_CLIPS_PER_CLASS_PER_FOLD
    summary = generate_dataset(out_dir, clips_per_class_per_fold=clips_per_class_per_fold,
                               folds=range(1, URBANSOUND8K_FOLDS + 1) if folds is None else folds, **kwargs)
    return {"layout": "urbansound8k", **summary}


def _class_names(classes, num_classes) -> tuple[str, ...]:
    if classes is not None and num_classes is not None:
        raise SynthLayoutError("give --classes (names) or --num-classes (a count), not both")
    if classes is not None:
        return check_class_names(classes)
    try:
        return default_class_names(DEFAULT_NUM_CLASSES if num_classes is None else num_classes)
    except ClassListError as exc:
        raise SynthLayoutError(f"--num-classes {num_classes}: {exc}") from None


def _folds(layout: str, folds, fold_column: bool) -> tuple[int, ...]:
    has_folds = layout == "esc50" or (layout == "csv" and fold_column)
    if not fold_column and layout != "csv":
        raise SynthLayoutError("--no-fold-column is for the csv layout")
    if not has_folds:
        if folds is not None:
            where = "the folders layout" if layout == "folders" else "a csv without a fold column"
            raise SynthLayoutError(f"{where} has no folds (`us8k ingest --num-folds K` assigns them): "
                                   "leave out --folds")
        return ()
    highest = ESC50_FOLDS if layout == "esc50" else CSV_MAX_FOLDS
    chosen = sorted(set(int(f) for f in (range(1, DEFAULT_GENERIC_FOLDS + 1) if folds is None else folds)))
    if not chosen or any(not 1 <= f <= highest for f in chosen):
        raise SynthLayoutError(f"the {layout} layout's folds are a non-empty subset of 1..{highest}, got {chosen}")
    return tuple(chosen)


def _clip_count(job: _Job, per_fold, per_class) -> int:
    if job.folds and per_class is not None:
        raise SynthLayoutError(f"--clips-per-class is for layouts without folds (folders, csv --no-fold-column); "
                               f"{job.layout} takes --clips-per-class-per-fold")
    if not job.folds and per_fold is not None:
        where = "the folders layout" if job.layout == "folders" else "a csv without a fold column"
        raise SynthLayoutError(f"{where} has no folds: give --clips-per-class, not --clips-per-class-per-fold")
    if job.folds:
        count = DEFAULT_CLIPS_PER_CLASS_PER_FOLD if per_fold is None else per_fold
    else:
        count = DEFAULT_CLIPS_PER_CLASS if per_class is None else per_class
    if not 1 <= int(count) < _SLOTS:
        raise SynthLayoutError(f"clips per class{' per fold' if job.folds else ''} must be in 1..{_SLOTS - 1}, "
                               f"got {count}")
    return int(count)


# ---------------------------------------------------------------------------------------------
# Shared steps


def _group_sizes(job: _Job, fold: int, class_index: int) -> list[int]:
    """Clips per recording for one (fold, class): 1–4 each (tfdata.synth's slices_per_recording), job.count in all."""
    rng = job.rng(fold, class_index, _GROUP_STREAM)
    weights = np.asarray(job.config.slices_per_recording, dtype=np.float64)
    sizes, left = [], job.count
    while left:
        size = min(left, 1 + int(rng.choice(weights.size, p=weights / weights.sum())))
        sizes.append(size)
        left -= size
    return sizes


def _fold_progress(job: _Job, what: str, clips: int, corrupt: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    job.say(f"{what}: {clips} clips + {corrupt} corrupt in {elapsed:.1f} s ({clips / max(elapsed, 1e-9):.0f} clips/s)")


def _corrupt_of(job: _Job, fold: int) -> list[int]:
    """Corrupt file numbers placed in `fold` (round robin over the folds; all of them without folds)."""
    return [i for i in range(job.corrupt) if not job.folds or job.folds[i % len(job.folds)] == fold]


def _corrupt_file(job: _Job, i: int) -> bytes:
    class_index = i % len(job.names)
    rng = job.rng(0, class_index, _CORRUPT_STREAM, i)
    voice = draw_voice(class_index, len(job.names), rng)
    return corrupt_bytes(CORRUPT_KINDS[i % len(CORRUPT_KINDS)], lambda: wav_bytes(
        render_voice_clip(voice, rng, SAMPLE_RATE, 1.0, 1, job.config), SAMPLE_RATE, "PCM_16"))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pick(rng, options: tuple, weights: tuple[float, ...]):
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


# ---------------------------------------------------------------------------------------------
# esc50


def _write_esc50(job: _Job) -> _Tally:
    tally = _Tally()
    for fold in job.folds:
        started = time.perf_counter()
        for class_index in range(len(job.names)):
            _esc50_class(job, fold, class_index, tally)
        corrupt = _corrupt_of(job, fold)
        for i in corrupt:
            target = i % len(job.names)
            row = _esc50_row(job, fold, target, job.corrupt_id(i), "A")
            _write(job.out / ESC50_AUDIO_DIR / row["filename"], _corrupt_file(job, i))
            tally.rows.append(row)
        tally.per_fold[fold] = job.count * len(job.names)
        _fold_progress(job, f"fold {fold}", tally.per_fold[fold], len(corrupt), started)
    write_csv(job.out / ESC50_CSV, tally.rows, ESC50_COLUMNS, "filename")
    tally.listed = len(tally.rows)
    return tally


def _esc50_class(job: _Job, fold: int, class_index: int, tally: _Tally) -> None:
    n, total = 0, int(ESC50_SECONDS * ESC50_SAMPLE_RATE)
    for group, size in enumerate(_group_sizes(job, fold, class_index)):
        src_file = job.recording_id(fold, class_index, group)
        voice = draw_voice(class_index, len(job.names), job.rng(fold, class_index, _VOICE_STREAM, group))
        for take in range(size):
            rng = job.rng(fold, class_index, n)
            event = ESC50_SECONDS
            if rng.random() < ESC50_SHORT_EVENT_PROBABILITY:
                event = round(float(rng.uniform(1.0, ESC50_SECONDS)), 3)
            frames = render_voice_clip(voice, rng, ESC50_SAMPLE_RATE, event, 1, job.config)
            frames = np.pad(frames, ((0, total - frames.shape[0]), (0, 0)))
            row = _esc50_row(job, fold, class_index, src_file, chr(ord("A") + take))
            _write(job.out / ESC50_AUDIO_DIR / row["filename"], wav_bytes(frames, ESC50_SAMPLE_RATE, "PCM_16"))
            tally.rows.append(row)
            tally.audio_seconds += ESC50_SECONDS
            n += 1
        tally.groups += 1
    tally.per_class[job.names[class_index]] += job.count


def _esc50_row(job: _Job, fold: int, target: int, src_file: int, take: str) -> dict:
    return {"filename": f"{fold}-{src_file}-{take}-{target}.wav", "fold": fold, "target": target,
            "category": job.names[target], "esc10": "True" if target % 5 == 0 else "False",
            "src_file": src_file, "take": take}


def _remove_esc50(out: Path) -> None:
    (out / ESC50_CSV).unlink(missing_ok=True)
    shutil.rmtree(out / ESC50_AUDIO_DIR, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# folders

_FOLDERS_RATES = ((16000, 22050, 32000, 44100, 48000), (0.15, 0.15, 0.1, 0.35, 0.25))
_FOLDERS_KINDS = ((("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"), ("flac", "PCM_16"), ("flac", "PCM_24"),
                   ("ogg", "VORBIS")), (0.25, 0.1, 0.05, 0.2, 0.1, 0.3))
_FOLDERS_SECONDS = (0.5, 6.0)
_FOLDERS_STEREO_PROBABILITY = 0.4


def _write_folders(job: _Job) -> _Tally:
    tally = _Tally()
    for class_index, name in enumerate(job.names):
        started = time.perf_counter()
        for n in range(job.count):
            rng = job.rng(0, class_index, n)
            kind = _pick(rng, *_FOLDERS_KINDS)
            fmt = _Format(*kind, _pick(rng, *_FOLDERS_RATES), 2 if rng.random() < _FOLDERS_STEREO_PROBABILITY else 1)
            seconds = round(float(rng.uniform(*_FOLDERS_SECONDS)), 3)
            where = _folders_subdir(rng)
            frames = render_voice_clip(draw_voice(class_index, len(job.names), rng), rng, fmt.sample_rate, seconds,
                                       fmt.channels, job.config)
            _write(job.out / name / where / f"clip_{n:05d}.{fmt.extension}",
                   audio_bytes(frames, fmt.sample_rate, fmt.extension, fmt.subtype))
            tally.audio_seconds += frames.shape[0] / fmt.sample_rate
        corrupt = [i for i in _corrupt_of(job, 0) if i % len(job.names) == class_index]
        for i in corrupt:
            _write(job.out / name / f"clip_{job.count + i:05d}.wav", _corrupt_file(job, i))
        tally.per_class[name] += job.count
        tally.groups += job.count
        tally.listed += job.count + len(corrupt)
        _fold_progress(job, f"class {name}", job.count, len(corrupt), started)
    _write(job.out / FOLDERS_README, _folders_readme(job).encode())
    _write(job.out / job.names[0] / FOLDERS_NOTES, b"Recording notes (not audio): microphones 1 and 2, sessions 1-3.\n")
    tally.extra_files = 2
    return tally


def _folders_subdir(rng) -> str:
    """Where a file sits under its class folder: the folder itself, session_S/ or session_S/mic_M/."""
    depth = _pick(rng, (0, 1, 2), (0.5, 0.35, 0.15))
    session, mic = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    return ("", f"session_{session}", f"session_{session}/mic_{mic}")[depth]


def _folders_readme(job: _Job) -> str:
    return (f"A synthetic collection in the folders layout (us8k synth --layout folders, seed {job.seed}).\n"
            f"One folder per class ({len(job.names)}): {', '.join(job.names)}.\n"
            "Audio (wav, flac, ogg) sits in each class folder at any depth; this file and notes.txt are not audio.\n")


def _remove_folders(out: Path) -> None:
    (out / FOLDERS_README).unlink(missing_ok=True)
    for path in out.iterdir():
        if path.is_dir():  # in a folders collection every sub-folder is a class
            shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------
# csv

_CSV_RATES = ((16000, 22050, 44100), (0.3, 0.3, 0.4))
_CSV_KINDS = ((("wav", "PCM_16"), ("flac", "PCM_16")), (0.5, 0.5))
_CSV_SECONDS = (1.0, 5.0)


def _write_csv_layout(job: _Job) -> _Tally:
    tally = _Tally()
    for fold in job.folds or (0,):
        started = time.perf_counter()
        for class_index in range(len(job.names)):
            if not job.folds:
                started = time.perf_counter()
            _csv_class(job, fold, class_index, tally)
            if not job.folds:
                corrupt = [i for i in _corrupt_of(job, 0) if i % len(job.names) == class_index]
                _csv_corrupt(job, 0, corrupt, tally)
                _fold_progress(job, f"class {job.names[class_index]}", job.count, len(corrupt), started)
        if job.folds:
            corrupt = _corrupt_of(job, fold)
            _csv_corrupt(job, fold, corrupt, tally)
            tally.per_fold[fold] = job.count * len(job.names)
            _fold_progress(job, f"fold {fold}", tally.per_fold[fold], len(corrupt), started)
    columns = CSV_COLUMNS if job.folds else tuple(c for c in CSV_COLUMNS if c != "fold")
    write_csv(job.out / CSV_LISTING, tally.rows, columns, "file_name")
    tally.listed = len(tally.rows)
    return tally


def _csv_class(job: _Job, fold: int, class_index: int, tally: _Tally) -> None:
    n = 0
    for group, size in enumerate(_group_sizes(job, fold, class_index)):
        group_id = f"rec{job.recording_id(fold, class_index, group)}"
        rng = job.rng(fold, class_index, _VOICE_STREAM, group)
        kind = _pick(rng, *_CSV_KINDS)
        fmt = _Format(*kind, _pick(rng, *_CSV_RATES), 2 if rng.random() < 0.3 else 1)
        voice = draw_voice(class_index, len(job.names), rng)
        for take in range(1, size + 1):
            rng = job.rng(fold, class_index, n)
            seconds = round(float(rng.uniform(*_CSV_SECONDS)), 3)
            frames = render_voice_clip(voice, rng, fmt.sample_rate, seconds, fmt.channels, job.config)
            file_name = f"{CSV_AUDIO_DIR}/{group_id}/{group_id}-{take}.{fmt.extension}"
            _write(job.out / file_name, audio_bytes(frames, fmt.sample_rate, fmt.extension, fmt.subtype))
            tally.rows.append(_csv_row(job, file_name, class_index, fold, group_id))
            tally.audio_seconds += frames.shape[0] / fmt.sample_rate
            n += 1
        tally.groups += 1
    tally.per_class[job.names[class_index]] += job.count


def _csv_corrupt(job: _Job, fold: int, corrupt: list[int], tally: _Tally) -> None:
    for i in corrupt:
        group_id = f"rec{job.corrupt_id(i)}"
        file_name = f"{CSV_AUDIO_DIR}/{group_id}/{group_id}-1.wav"
        _write(job.out / file_name, _corrupt_file(job, i))
        tally.rows.append(_csv_row(job, file_name, i % len(job.names), fold, group_id))


def _csv_row(job: _Job, file_name: str, class_index: int, fold: int, group_id: str) -> dict:
    row = {"file_name": file_name, "label": job.names[class_index], "group": group_id}
    if job.folds:
        row["fold"] = fold
    return row


def _remove_csv(out: Path) -> None:
    (out / CSV_LISTING).unlink(missing_ok=True)
    shutil.rmtree(out / CSV_AUDIO_DIR, ignore_errors=True)


_WRITERS = {"esc50": _write_esc50, "folders": _write_folders, "csv": _write_csv_layout}
_REMOVERS = {"esc50": _remove_esc50, "folders": _remove_folders, "csv": _remove_csv}


# ---------------------------------------------------------------------------------------------
# Summary


def _summary(job: _Job, tally: _Tally, seconds: float) -> dict:
    clips = sum(tally.per_class.values())
    listing = {"esc50": ESC50_CSV, "csv": CSV_LISTING, "folders": None}[job.layout]
    summary = {
        "out_dir": str(job.out), "layout": job.layout, "listing": listing, "rows": tally.listed, "clips": clips,
        "corrupt": job.corrupt, "class_names": list(job.names),
        "per_class": {name: tally.per_class[name] for name in job.names}, "per_fold": dict(tally.per_fold),
        "groups": tally.groups, "extra_files": tally.extra_files, "audio_seconds": round(tally.audio_seconds, 3),
        "difficulty": job.config.difficulty, "seed": job.seed, "seconds": round(seconds, 3),
        "clips_per_second": round(clips / max(seconds, 1e-9), 1),
    }
    if listing:
        listed = f"{tally.listed} rows of {listing}"
    else:
        listed = f"{tally.listed} audio files in {len(job.names)} class folders (+ {tally.extra_files} not audio)"
    folds = f"folds {','.join(map(str, job.folds))}" if job.folds else "no folds"
    job.say(f"wrote {clips} clips + {job.corrupt} corrupt = {listed} to {job.out} ({job.layout} layout, "
            f"{len(job.names)} classes, {folds}, {tally.groups} recordings, {tally.audio_seconds / 60:.1f} min of "
            f"audio, difficulty {job.config.difficulty:g}) in {seconds:.1f} s ({summary['clips_per_second']:.0f} "
            "clips/s)")
    return summary
