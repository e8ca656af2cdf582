"""One trained, evaluated (calibrated) and exported run, built once per test run, and shared tone records.

`trained_run` (session fixture): tone records (2 shards per fold; TEST_CLIPS test clips, not a
multiple of any batch size used), a `tiny` model trained until it learned the tones (20 epochs:
test accuracy ≈ 0.7 where chance is 0.1) beside a `baseline` trained for 2 epochs (a second model for
the report's "every model"; the seed's floor, it stays near chance), the run evaluated on the test fold
(RUN/report/, RUN/calibration.json) and its selected model (tiny) exported with the calibrated
temperature and threshold. It is built by `shared_dir.built_once`: once for the whole test run, also
under pytest-xdist. Tests that only read it use the paths as they are; tests that write into the run
(`us8k evaluate` rewrites RUN/report/ and calibration.json) work on `run_copy(...)`.

Two `train_models` calls build the run: tiny with 20 epochs, then tiny and baseline with 2 (tiny,
finished, is skipped); RUN/config.json therefore holds the second call's configuration (epochs 2), as
a re-run's does.

Its records have no manifest, so the run is UrbanSound8K's ten classes (as records written before
manifests recorded a class list are read). `new_classes_run` (session fixture) is the other kind: tone
records of NEW_CLASSES (three classes that are not UrbanSound8K's) in five folds with a schema-2
manifest, `us8k train` of a `tiny` model for 2 epochs with no fold flags (so validation 4, test 5: the
dataset's last two), evaluated, and `us8k export`ed; its `log` is what the commands printed.

Import the fixture in a test module with `from trained_run import trained_run  # noqa: F401`.
`records_once(tmp_path_factory, per_fold, **kw)`: a tone-record directory (conftest's
`write_tone_records`) written once per test run for those arguments, for tests that only read records.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import NamedTuple

import pytest
import shared_dir
from conftest import write_tone_manifest, write_tone_records

TEST_CLIPS = 31  # test fold 3: one partial batch in evaluation (32), not a multiple of 8 or 5
PER_FOLD = {1: 60, 2: 30, 3: TEST_CLIPS}
SHARDS = 2
MODELS = ("tiny", "baseline")
TINY_EPOCHS = 20
BASELINE_EPOCHS = 2
LEARNING_RATE = 5e-3
BATCH_SIZE = 8
VAL_FOLD, TEST_FOLD = 2, 3


NEW_CLASSES = ("bell", "hum", "chirp")  # not UrbanSound8K's, and three of them
NEW_PER_FOLD = {1: 9, 2: 9, 3: 9, 4: 6, 5: 6}  # five folds: validation 4 and test 5 by default
NEW_EPOCHS = 2


class TrainedRun(NamedTuple):
    records: Path  # records/fold{1,2,3}/ (read only)
    run: Path  # the run directory (read only: copy it with run_copy before writing into it)
    export: Path  # EXPORT/ of the selected model (read only)


def _build(target: Path) -> None:
    import us8k
    from models import train
    from models.config import TrainConfig

    records, run, export = target / "records", target / "run", target / "export"
    write_tone_records(records, PER_FOLD, shards=SHARDS)
    common = dict(batch_size=BATCH_SIZE, val_fold=VAL_FOLD, test_fold=TEST_FOLD, learning_rate=LEARNING_RATE)
    train.train_models(records, run, TrainConfig(models=("tiny",), epochs=TINY_EPOCHS, patience=TINY_EPOCHS,
                                                 **common), evaluate=False, verbose=0)
    train.train_models(records, run, TrainConfig(models=MODELS, epochs=BASELINE_EPOCHS, **common), verbose=0)
    assert us8k.main(["export", str(run), "--output", str(export)]) == 0


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """The shared run (see the module docstring); built on first use, once per test run."""
    root = shared_dir.built_once(tmp_path_factory, "trained-run", _build)
    return TrainedRun(root / "records", root / "run", root / "export")


class NewClassesRun(NamedTuple):
    records: Path  # records/fold1..fold5/ + manifest.json of schema 2 listing NEW_CLASSES (read only)
    run: Path  # trained, evaluated (read only: run_copy before writing into it)
    export: Path  # EXPORT/ of its selected model (read only)
    log: str  # what `us8k train` and `us8k export` printed


def _build_new_classes(target: Path) -> None:
    import us8k

    records, run, export = target / "records", target / "run", target / "export"
    write_tone_manifest(records, write_tone_records(records, NEW_PER_FOLD, shards=1, class_names=NEW_CLASSES),
                        NEW_CLASSES)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert us8k.main(["train", "--records", str(records), "--output", str(run), "--models", "tiny", "--epochs",
                          str(NEW_EPOCHS), "--batch-size", str(BATCH_SIZE), "--learning-rate", str(LEARNING_RATE),
                          "--verbose", "0"]) == 0
        assert us8k.main(["export", str(run), "--output", str(export)]) == 0
    (target / "log.txt").write_text(out.getvalue())


@pytest.fixture(scope="session")
def new_classes_run(tmp_path_factory) -> NewClassesRun:
    """The run of three new classes in five folds (see the module docstring), built once per test run."""
    root = shared_dir.built_once(tmp_path_factory, "new-classes-run", _build_new_classes)
    return NewClassesRun(root / "records", root / "run", root / "export", (root / "log.txt").read_text())


def run_copy(trained: TrainedRun, target: Path) -> Path:
    """A private copy of the run directory (its records stay the shared ones it names)."""
    return shared_dir.copy_of(trained.run, target)


def records_once(tmp_path_factory, per_fold: dict, **kwargs) -> Path:
    """Tone records for `write_tone_records(dir, per_fold, **kwargs)`, written once per test run."""
    key = json.dumps([sorted(per_fold.items()), sorted((k, sorted(v.items()) if isinstance(v, dict) else v)
                                                       for k, v in kwargs.items())])
    name = "records-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return shared_dir.built_once(tmp_path_factory, name,
                                 lambda target: write_tone_records(target / "records", per_fold, **kwargs)) / "records"


def read_json(path):
    """A run file (config.json, the report's JSON files, calibration.json) as Python objects."""
    with open(path) as f:
        return json.load(f)
