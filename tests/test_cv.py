"""models.cv (`us8k cv`): every fold of the records in turn (four here: the protocol is the same for
UrbanSound8K's ten, whose wrap-around rule test_validation_rule_is_the_fold_before checks), no test clip in
any fold's training data or normalisation statistics (on record ids), the summary, and a resumed run."""
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from trained_run import read_json

import us8k
from models import cv
from models.frontend import compute_normalization_stats
from tfdata import contract as c
from tfdata import dataset, records

FOLDS = range(1, 5)  # four folds (each trains on two): cv runs over the folds present


def refusal(capsys, argv) -> str:
    """The line a refused `us8k cv` prints last on stderr (it returns 1)."""
    capsys.readouterr()
    assert us8k.main(argv) == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


def ids_in(files):
    spec = {c.KEY_FILE: records.FEATURE_SPEC[c.KEY_FILE]}
    ids = set()
    for serialized in tf.data.TFRecordDataset(files):
        ids.add(tf.io.parse_single_example(serialized, spec)[c.KEY_FILE].numpy().decode())
    return ids


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, tone_records_writer):
    base = tmp_path_factory.mktemp("cv")
    records_dir = base / "records"
    tone_records_writer(records_dir, {k: 10 for k in FOLDS}, seed=3)
    output = base / "cv"
    assert us8k.main(["cv", "--records", str(records_dir), "--output", str(output), "--models", "tiny",
                      "--epochs", "1", "--batch-size", "30", "--verbose", "0"]) == 0
    return records_dir, output


def test_validation_rule_is_the_fold_before():
    present = list(range(1, 11))
    assert {k: cv.validation_fold(k, present) for k in present} == {1: 10, **{k: k - 1 for k in range(2, 11)}}
    assert cv.validation_fold(4, [2, 4, 7]) == 2 and cv.validation_fold(2, [2, 4, 7]) == 7
    with pytest.raises(cv.CVError, match="^cross-validation needs at least 3 folds"):  # whatever K
        cv.validation_fold(1, [1, 2])


def macro_f1(labels, predicted):
    """Macro-F1 over the classes present in `labels`, from the predictions (numpy)."""
    f1s = []
    for k in np.unique(labels):
        hits = np.sum((predicted == k) & (labels == k))
        precision = hits / max(np.sum(predicted == k), 1)
        recall = hits / np.sum(labels == k)
        f1s.append(2 * precision * recall / (precision + recall) if hits else 0.0)
    return float(np.mean(f1s))


@pytest.mark.timeout(420)
def test_every_fold_runs_and_the_summary_is_worked_out(cv_run):
    """Each fold's figures against its own model's predictions on its test fold, worked out here;
    the mean and sample std over the folds from those."""
    records_dir, output = cv_run
    summary = read_json(output / "summary.json")
    assert summary["completed"] == list(FOLDS) and summary["test_folds"] == list(FOLDS)
    tiny = summary["models"]["tiny"]
    assert sorted(map(int, tiny["folds"])) == list(FOLDS)
    accuracies, f1s = [], []
    for k in FOLDS:
        fold = tiny["folds"][str(k)]
        model = keras.models.load_model(output / f"fold{k:02d}" / "checkpoints" / "tiny" / "best.keras", compile=False)
        waveforms, labels = zip(*records.read_folds(records_dir, [k]).as_numpy_iterator())
        labels = np.array(labels)
        predicted = keras.ops.convert_to_numpy(model(np.stack(waveforms), training=False)).argmax(axis=1)
        accuracies.append(float(np.mean(predicted == labels)))
        f1s.append(macro_f1(labels, predicted))
        assert len(labels) == 10
        assert fold["accuracy"] == pytest.approx(accuracies[-1]) and fold["macro_f1"] == pytest.approx(f1s[-1]), k
        report = read_json(output / f"fold{k:02d}" / "report" / "report.json")
        assert report["test_fold"] == k and fold["accuracy"] == report["models"]["tiny"]["accuracy"]
        assert fold["val_fold"] == (FOLDS[-1] if k == 1 else k - 1)
        assert fold["temperature"] > 0 and 0.0 <= fold["threshold"] <= 1.0
        keras.backend.clear_session()
    assert tiny["accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert tiny["accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert tiny["macro_f1_mean"] == pytest.approx(np.mean(f1s))
    assert tiny["macro_f1_std"] == pytest.approx(np.std(f1s, ddof=1))
    assert summary["models"][cv.SELECTED]["accuracy_mean"] == pytest.approx(tiny["accuracy_mean"])
    assert all(f["model"] == "tiny" for f in summary["models"][cv.SELECTED]["folds"].values())
    markdown = (output / "summary.md").read_text()
    assert "| tiny |" in markdown and "± " in markdown and f"fold {FOLDS[-1]}" in markdown
    assert f"{tiny['accuracy_mean']:.4f} ± {tiny['accuracy_std']:.4f}" in markdown


@pytest.mark.timeout(300)
def test_no_test_clip_reaches_training_or_normalisation(cv_run):
    records_dir, output = cv_run
    for k in FOLDS:
        fold_dir = output / f"fold{k:02d}"
        split = read_json(fold_dir / "split.json")
        test_ids = set(split["test_ids"])
        assert len(test_ids) == 10 and all(i.startswith(f"{1000 * k}") or int(i.split("-")[0]) // 1000 == k
                                           for i in test_ids)
        assert not test_ids & set(split["train_ids"]) and not test_ids & set(split["val_ids"])
        assert len(split["train_ids"]) == 10 * (len(FOLDS) - 2)
        norm = read_json(fold_dir / "normalization.json")
        assert k not in norm["train_folds"] and split["val_fold"] not in norm["train_folds"]
        stat_files = [os.path.join(records_dir, rel) for rel, _, _ in norm["shards"]]
        stat_ids = ids_in(stat_files)
        assert stat_ids == set(split["train_ids"])  # the statistics saw exactly the training clips
        assert not stat_ids & test_ids
        selection = read_json(fold_dir / "selection.json")
        assert selection["test_fold"] == k and k not in selection["train_folds"]
    # and the statistics are those of the training folds alone (fold 1's, recomputed)
    norm = read_json(output / "fold01" / "normalization.json")
    mean, _ = compute_normalization_stats(dataset.make_dataset(records_dir, norm["train_folds"],
        dataset.DatasetConfig(batch_size=64, training=False)))
    np.testing.assert_allclose(norm["mean"], mean, rtol=1e-5, atol=1e-4)
    with_test, _ = compute_normalization_stats(dataset.make_dataset(records_dir, [*norm["train_folds"], 1],
        dataset.DatasetConfig(batch_size=64, training=False)))
    assert np.abs(np.asarray(norm["mean"]) - with_test).max() > 1e-3  # the check can tell the difference


@pytest.mark.timeout(300)
def test_a_killed_run_continues_fold_by_fold(cv_run, capsys):
    records_dir, output = cv_run
    kept = output / "fold01" / "checkpoints" / "tiny" / "best.keras"
    before = os.stat(kept).st_mtime_ns
    # the last fold killed during training: its report and last state are gone, its directory half there
    last = output / f"fold{FOLDS[-1]:02d}"
    os.remove(last / "report" / "report.json")
    os.remove(last / "checkpoints" / "tiny" / "state.json")
    capsys.readouterr()
    assert us8k.main(["cv", "--records", str(records_dir), "--output", str(output), "--models", "tiny",
                      "--epochs", "1", "--batch-size", "30", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, read back") == len(FOLDS) - 1
    assert f"test fold {FOLDS[-1]}, validation fold {FOLDS[-2]}" in out
    assert os.stat(kept).st_mtime_ns == before
    assert read_json(output / "summary.json")["completed"] == list(FOLDS)
    # another configuration into the same output is refused, in one line
    assert re.search("^us8k cv: error: .*another configuration", refusal(capsys, [
        "cv", "--records", str(records_dir), "--output", str(output), "--models", "tiny", "--epochs", "2",
        "--verbose", "0"]))


def test_cli_errors_are_one_line(tmp_path, capsys):
    for records_dir, message in [(tmp_path / "missing", "records directory not found"),
                                 (tmp_path, "no TFRecord shards")]:
        assert re.search(f"^us8k cv: error: {message}", refusal(capsys, [
            "cv", "--records", str(records_dir), "--output", str(tmp_path / "cv")]))
