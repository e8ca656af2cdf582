"""Small synthetic datasets (tfdata.synth, tfdata.synth_layouts) generated once per test run and shared by
the test files that ask for the same one (tests/shared_dir.built_once: once for all pytest-xdist workers).
Read them as they are; a test that changes one works on `shared_dir.copy_of` it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import shared_dir


def synth_dataset(tmp_path_factory, folds, corrupt: int, clips_per_class_per_fold: int = 1) -> Path:
    """The dataset root (metadata/UrbanSound8K.csv, audio/fold<k>/) of tfdata.synth.generate_dataset
    with these arguments and the default seed and difficulty."""
    from tfdata.synth import generate_dataset

    folds = tuple(folds)
    name = f"synth-{clips_per_class_per_fold}x-folds{'-'.join(map(str, folds))}-corrupt{corrupt}"

    def build(target: Path) -> None:
        generate_dataset(target / "UrbanSound8K", clips_per_class_per_fold=clips_per_class_per_fold, folds=folds,
                         corrupt=corrupt, progress=None)

    return shared_dir.built_once(tmp_path_factory, name, build) / "UrbanSound8K"


def synth_layout(tmp_path_factory, layout: str, **kwargs) -> Path:
    """The root of tfdata.synth_layouts.generate(layout, ROOT, **kwargs) (`us8k synth --layout LAYOUT`):
    meta/esc50.csv + audio/ (esc50), class folders (folders), metadata.csv + clips/ (csv)."""
    from tfdata.synth_layouts import generate

    key = hashlib.sha256(repr(sorted(kwargs.items())).encode()).hexdigest()[:12]

    def build(target: Path) -> None:
        generate(layout, target / "data", progress=None, **kwargs)

    return shared_dir.built_once(tmp_path_factory, f"synth-{layout}-{key}", build) / "data"
