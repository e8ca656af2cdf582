"""models.cv (`us8k cv`): the 10 folds of the official protocol, no test clip in any fold's training
data or normalisation statistics (on record ids), the summary, and a resumed run."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import us8k
from models import cv
from models.frontend import compute_normalization_stats
from tfdata import contract as c
from tfdata import pipeline, records


def read_json(path):
    with open(path) as f:
        return json.load(f)


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
    tone_records_writer(records_dir, {k: 10 for k in range(1, c.NUM_FOLDS + 1)}, seed=3)
    output = base / "cv"
    assert us8k.main(["cv", "--records", str(records_dir), "--output", str(output), "--models", "tiny",
                      "--epochs", "1", "--batch-size", "30", "--verbose", "0"]) == 0
    return records_dir, output


def test_validation_rule_is_the_fold_before():
    present = list(range(1, 11))
    assert {k: cv.validation_fold(k, present) for k in present} == {1: 10, **{k: k - 1 for k in range(2, 11)}}
    assert cv.validation_fold(4, [2, 4, 7]) == 2 and cv.validation_fold(2, [2, 4, 7]) == 7
    with pytest.raises(cv.CVError, match="at least 3 folds"):
        cv.validation_fold(1, [1, 2])


@pytest.mark.timeout(420)
def test_ten_folds_run_and_write_the_summary(cv_run):
    _, output = cv_run
    summary = read_json(output / "summary.json")
    assert summary["completed"] == list(range(1, 11)) and summary["test_folds"] == list(range(1, 11))
    tiny = summary["models"]["tiny"]
    assert sorted(map(int, tiny["folds"])) == list(range(1, 11))
    accuracies = [tiny["folds"][str(k)]["accuracy"] for k in range(1, 11)]
    assert tiny["accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert tiny["accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert 0.0 <= tiny["macro_f1_mean"] <= 1.0 and tiny["macro_f1_std"] >= 0.0
    for k in range(1, 11):
        fold = tiny["folds"][str(k)]
        report = read_json(output / f"fold{k:02d}" / "report" / "report.json")
        assert report["test_fold"] == k and fold["accuracy"] == report["models"]["tiny"]["accuracy"]
        assert fold["val_fold"] == (10 if k == 1 else k - 1)
        assert fold["temperature"] > 0 and 0.0 <= fold["threshold"] <= 1.0
    assert summary["models"][cv.SELECTED]["accuracy_mean"] == pytest.approx(tiny["accuracy_mean"])
    markdown = (output / "summary.md").read_text()
    assert "| tiny |" in markdown and "± " in markdown and "fold 10" in markdown


@pytest.mark.timeout(300)
def test_no_test_clip_reaches_training_or_normalisation(cv_run):
    records_dir, output = cv_run
    for k in range(1, 11):
        fold_dir = output / f"fold{k:02d}"
        split = read_json(fold_dir / "split.json")
        test_ids = set(split["test_ids"])
        assert len(test_ids) == 10 and all(i.startswith(f"{1000 * k}") or int(i.split("-")[0]) // 1000 == k
                                           for i in test_ids)
        assert not test_ids & set(split["train_ids"]) and not test_ids & set(split["val_ids"])
        assert len(split["train_ids"]) == 80
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
    mean, _ = compute_normalization_stats(pipeline.make_dataset(records_dir, norm["train_folds"], batch_size=64,
                                                                training=False))
    np.testing.assert_allclose(norm["mean"], mean, rtol=1e-5, atol=1e-4)
    with_test, _ = compute_normalization_stats(pipeline.make_dataset(records_dir, [*norm["train_folds"], 1],
                                                                     batch_size=64, training=False))
    assert np.abs(np.asarray(norm["mean"]) - with_test).max() > 1e-3  # the check can tell the difference


@pytest.mark.timeout(300)
def test_a_killed_run_continues_fold_by_fold(cv_run, capsys):
    records_dir, output = cv_run
    kept = output / "fold01" / "checkpoints" / "tiny" / "best.keras"
    before = os.stat(kept).st_mtime_ns
    # fold 10 killed during training: its report and last state are gone, its directory half there
    os.remove(output / "fold10" / "report" / "report.json")
    os.remove(output / "fold10" / "checkpoints" / "tiny" / "state.json")
    capsys.readouterr()
    assert us8k.main(["cv", "--records", str(records_dir), "--output", str(output), "--models", "tiny",
                      "--epochs", "1", "--batch-size", "30", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, read back") == 9
    assert "test fold 10, validation fold 9" in out
    assert os.stat(kept).st_mtime_ns == before
    assert read_json(output / "summary.json")["completed"] == list(range(1, 11))
    # another configuration into the same output is refused, in one line
    with pytest.raises(SystemExit, match="^us8k cv: error: .*another configuration"):
        us8k.main(["cv", "--records", str(records_dir), "--output", str(output), "--models", "tiny",
                   "--epochs", "2", "--verbose", "0"])


def test_cli_errors_are_one_line(tmp_path):
    for records_dir, message in [(tmp_path / "missing", "records directory not found"),
                                 (tmp_path, "no TFRecord shards")]:
        with pytest.raises(SystemExit, match=f"^us8k cv: error: {message}"):
            us8k.main(["cv", "--records", str(records_dir), "--output", str(tmp_path / "cv")])
