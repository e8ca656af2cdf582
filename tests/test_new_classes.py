"""Classes and folds come from the records (issue 22): a run of three new classes in five folds (tests/trained_run.py's
`new_classes_run`: a schema-2 manifest, `us8k train` without fold flags, `us8k export`) keeps them from training to
the SavedModel's answers; a run or export of the old kind reads as UrbanSound8K's; what cannot be read is refused
in one line."""
import json
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from trained_run import NEW_CLASSES, NEW_PER_FOLD, new_classes_run, run_copy  # noqa: F401  (the fixture)

import models.architectures  # noqa: F401  (registers the frontend layers for load_model)
import us8k
from serving.inference import load_config
from tfdata import contract as c
from tfdata import layout

pytestmark = pytest.mark.timeout(300)


def read_json(path):
    return json.loads(path.read_text())


def last_error(capsys, argv) -> str:
    """The line a refused command prints last on stderr (it returns 1)."""
    capsys.readouterr()
    assert us8k.main(argv) == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_the_run_takes_classes_and_folds_from_the_manifest(new_classes_run):
    log = new_classes_run.log
    assert "Classes: 3 (bell, hum, chirp) from manifest.json (schema 2, layout folders)" in log
    assert "Folds: train [1, 2, 3], validation 4, test 5 (not given: the dataset's last two folds)" in log
    classes = read_json(new_classes_run.run / layout.CLASSES_FILE)
    assert classes["class_names"] == list(NEW_CLASSES) and classes["num_classes"] == 3
    assert classes["folds"] == [1, 2, 3, 4, 5] and classes["schema_version"] == 2
    selection = read_json(new_classes_run.run / layout.SELECTION_FILE)
    assert (selection["val_fold"], selection["test_fold"], selection["train_folds"]) == (4, 5, [1, 2, 3])
    assert selection["num_classes"] == 3
    # the labels cycle through the three classes in each fold: 9 clips per training fold, 3 of each
    per_class = {name: 0 for name in NEW_CLASSES}
    for fold in (1, 2, 3):
        for i in range(NEW_PER_FOLD[fold]):
            per_class[NEW_CLASSES[i % 3]] += 1
    assert selection["train_class_counts"] == per_class == {"bell": 9, "hum": 9, "chirp": 9}
    config = read_json(new_classes_run.run / layout.CONFIG_FILE)["config"]
    assert config["val_fold"] is None and config["test_fold"] is None  # the defaults, as given
    model = keras.models.load_model(new_classes_run.run / "checkpoints" / "tiny" / "best.keras", compile=False)
    assert model.output_shape == (None, 3)


def test_evaluation_reports_the_run_classes(new_classes_run):
    report = read_json(new_classes_run.run / "report" / "report.json")
    assert report["class_names"] == list(NEW_CLASSES) and report["test_fold"] == 5
    tiny = report["models"]["tiny"]
    assert list(tiny["per_class"]) == list(NEW_CLASSES)
    assert [tiny["per_class"][name]["support"] for name in NEW_CLASSES] == [2, 2, 2]  # fold 5: 6 clips
    matrix = np.array(tiny["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum(axis=1).tolist() == [2, 2, 2]
    summary = (new_classes_run.run / "report" / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in NEW_CLASSES)


def test_the_export_names_its_outputs_with_the_run_classes(new_classes_run):
    metadata = read_json(new_classes_run.export / layout.METADATA_FILE)
    assert metadata["class_names"] == list(NEW_CLASSES) and metadata["num_classes"] == 3
    assert "us8k export: classes: 3 from classes.json" in new_classes_run.log
    loaded = tf.saved_model.load(str(layout.find_saved_model(new_classes_run.export)))
    rng = np.random.default_rng(0)
    waveform = (0.1 * rng.standard_normal((4, 3 * c.SAMPLE_RATE))).astype(np.float32)
    out = loaded.signatures[layout.SERVING_SIGNATURE](**layout.serving_inputs(
        tf.constant(waveform), tf.constant([3 * c.SAMPLE_RATE, c.SAMPLE_RATE, 100, 0], tf.int32)))
    assert out[layout.OUTPUT_PROBABILITIES].shape == (4, 3) and out[layout.OUTPUT_WINDOW_PROBABILITIES].shape[2] == 3
    names = [name.decode() for name in out[layout.OUTPUT_CLASS_NAME].numpy()]
    assert names == [NEW_CLASSES[k] for k in out[layout.OUTPUT_CLASS_ID].numpy()]
    assert load_config(new_classes_run.export / layout.METADATA_FILE).class_names == NEW_CLASSES  # what serving reads


def test_a_run_of_the_old_kind_reads_as_urbansound8k(new_classes_run, tmp_path, capsys):
    """No classes.json (written before runs kept their classes): UrbanSound8K's ten, so this run's three-output
    model is refused by evaluation and export in one line rather than named wrongly."""
    run_dir = run_copy(new_classes_run, tmp_path / "run")
    (run_dir / layout.CLASSES_FILE).unlink()
    error = last_error(capsys, ["evaluate", str(run_dir)])
    assert re.fullmatch(r"us8k evaluate: error: model 'tiny' has 3 outputs but the run's class list has 10 classes "
                        r"\(air_conditioner, .*\) \(no classes.json \(a run written before runs kept their classes\): "
                        r"UrbanSound8K's\)", error), error
    error = last_error(capsys, ["export", str(run_dir), "--output", str(tmp_path / "export")])
    assert error.startswith("us8k export: error: model 'tiny' has 3 outputs but the run's class list has 10 classes")
    assert not (tmp_path / "export" / "model").exists()


def test_a_newer_manifest_schema_is_refused_by_train_in_one_line(new_classes_run, tmp_path, capsys):
    records = tmp_path / "records"
    shutil.copytree(new_classes_run.records, records)
    manifest = read_json(records / c.MANIFEST_FILE)
    (records / c.MANIFEST_FILE).write_text(json.dumps({**manifest, "schema_version": 3}))
    error = last_error(capsys, ["train", "--records", str(records), "--output", str(tmp_path / "run"),
                                "--models", "tiny", "--epochs", "1"])
    assert re.fullmatch(r"us8k train: error: .*manifest.json: manifest schema version 3; this version reads 1 to 2",
                        error), error
    assert not (tmp_path / "run" / layout.CONFIG_FILE).exists()


def test_a_run_of_other_classes_is_not_continued(new_classes_run, tmp_path, capsys):
    """The same run directory on records whose manifest lists the classes in another order: refused before
    anything is trained or rewritten (the checkpoints' outputs mean other classes)."""
    records = tmp_path / "records"
    shutil.copytree(new_classes_run.records, records)
    manifest = read_json(records / c.MANIFEST_FILE)
    (records / c.MANIFEST_FILE).write_text(json.dumps({**manifest, "class_names": ["hum", "bell", "chirp"]}))
    run_dir = run_copy(new_classes_run, tmp_path / "run")
    before = (run_dir / layout.CLASSES_FILE).read_text()
    error = last_error(capsys, ["train", "--records", str(records), "--output", str(run_dir), "--models", "tiny",
                                "--epochs", "3"])
    assert error == (f"us8k train: error: {run_dir} was trained on other classes (bell, hum, chirp) than the "
                     "records' (hum, bell, chirp); use --force or a new --output")
    assert (run_dir / layout.CLASSES_FILE).read_text() == before


def test_folds_default_to_the_last_two_present_of_any_numbering(tone_records):
    """Records without a manifest (UrbanSound8K's classes) in folds 2, 5 and 7: validation 5, test 7, training 2;
    named folds win; two folds cannot make a run."""
    from models.errors import TrainingError
    from models.folds import resolve_split
    from tfdata.classes import read_dataset_info

    records = str(tone_records({2: 3, 5: 3, 7: 3}))
    info = read_dataset_info(records)
    assert info.class_names == c.URBANSOUND8K_CLASSES and info.folds == (2, 5, 7)
    assert resolve_split(records, info, None, None) == (5, 7, [2])
    assert resolve_split(records, info, 2, None) == (2, 7, [5])
    assert resolve_split(records, info, 7, 2) == (7, 2, [5])
    with pytest.raises(TrainingError, match=r"validation fold 9 has no shards .*\(folds present: 2, 5, 7\)"):
        resolve_split(records, info, 9, None)
    two = str(tone_records({1: 3, 2: 3}))
    with pytest.raises(TrainingError, match=r"a run needs at least 3 folds .*\[1, 2\]"):
        resolve_split(two, read_dataset_info(two), None, None)
