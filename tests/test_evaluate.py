"""models.evaluate (`us8k evaluate RUN`): report files, metrics consistent with each other and with the data."""
import json

import keras
import matplotlib.image
import numpy as np
import pytest

import us8k
from models import evaluate, train
from tfdata import contract as c
from tfdata import records

pytestmark = pytest.mark.timeout(300)
MODELS = ["tiny", "baseline"]
TEST_CLIPS = 23  # not a multiple of the batch: the last batch is partial


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tone_records_writer):
    root = tmp_path_factory.mktemp("evaluate")
    records_dir = root / "records"
    tone_records_writer(records_dir, {1: 30, 2: 10, 3: TEST_CLIPS}, shards=2)
    run_dir = root / "run"
    config = train.TrainConfig(models=tuple(MODELS), epochs=2, batch_size=8, val_fold=2, test_fold=3,
                               learning_rate=5e-3)
    train.train_models(records_dir, run_dir, config, evaluate=False, verbose=0)
    return records_dir, run_dir


def test_cli_writes_report_files_and_prints_test_accuracy(trained_run, capsys):
    _, run_dir = trained_run
    assert us8k.main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    report = json.loads((run_dir / "report" / "report.json").read_text())
    selected = json.loads((run_dir / "selection.json").read_text())["selected"]
    assert report["selected"] == selected and set(report["models"]) == set(MODELS)
    assert f"Test accuracy ({selected}" in out and f"{report['models'][selected]['accuracy']:.4f}" in out
    assert report["threshold"] == c.DEFAULT_THRESHOLD and report["class_names"] == list(c.CLASS_NAMES)
    for name in MODELS:
        for key in ("confusion_png", "threshold_png"):
            image = matplotlib.image.imread(run_dir / "report" / report["models"][name]["files"][key])
            assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    summary = (run_dir / "report" / "summary.md").read_text()
    assert f"**{selected}**" in summary and "| Model | Val Accuracy | Test Accuracy |" in summary


def test_metrics_are_consistent(trained_run):
    _, run_dir = trained_run
    report = evaluate.evaluate_run(run_dir, verbose=False)
    for name, m in report["models"].items():
        matrix = np.array(m["confusion_matrix"])
        assert matrix.shape == (c.NUM_CLASSES, c.NUM_CLASSES)
        assert matrix.sum() == m["examples"] == TEST_CLIPS
        assert m["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
        support = matrix.sum(axis=1)
        recalls, f1s = [], []
        for i, cls in enumerate(c.CLASS_NAMES):
            per_class = m["per_class"][cls]
            assert per_class["support"] == support[i]
            if support[i]:
                assert per_class["recall"] == pytest.approx(matrix[i, i] / support[i])
                recalls.append(per_class["recall"])
                f1s.append(per_class["f1"])
            if matrix[:, i].sum():
                assert per_class["precision"] == pytest.approx(matrix[i, i] / matrix[:, i].sum())
        assert m["macro_f1"] == pytest.approx(np.mean(f1s))
        sweep = m["threshold_sweep"]
        assert [p["threshold"] for p in sweep] == list(evaluate.SWEEP_THRESHOLDS)
        assert sweep[0]["coverage"] == 1.0 and sweep[0]["answered_accuracy"] == pytest.approx(m["accuracy"])
        coverages = [p["coverage"] for p in sweep]
        assert coverages == sorted(coverages, reverse=True)  # a higher threshold answers less
        at_default = next(p for p in sweep if p["threshold"] == c.DEFAULT_THRESHOLD)
        assert m["undetermined_rule"] == at_default
        assert at_default["undetermined"] == round((1 - at_default["coverage"]) * TEST_CLIPS)


def test_accuracy_matches_an_independent_pass_over_the_test_fold(trained_run):
    records_dir, run_dir = trained_run
    report = evaluate.evaluate_run(run_dir, verbose=False)
    waveforms, labels = zip(*records.read_folds(records_dir, [3]).as_numpy_iterator())
    for name in MODELS:
        model = keras.models.load_model(run_dir / "checkpoints" / name / "best.keras", compile=False)
        probabilities = model.predict(np.stack(waveforms), batch_size=5, verbose=0)
        predicted = probabilities.argmax(axis=1)
        assert report["models"][name]["accuracy"] == pytest.approx(np.mean(predicted == np.array(labels)))
        confident = probabilities.max(axis=1) >= c.DEFAULT_THRESHOLD
        assert report["models"][name]["undetermined_rule"]["coverage"] == pytest.approx(confident.mean())


def test_threshold_option(trained_run):
    _, run_dir = trained_run
    assert us8k.main(["evaluate", str(run_dir), "--threshold", "0.25"]) == 0
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["threshold"] == 0.25
    for m in report["models"].values():
        assert m["undetermined_rule"] == next(p for p in m["threshold_sweep"] if p["threshold"] == 0.25)


def test_classification_metrics_on_known_probabilities():
    probabilities = np.full((4, c.NUM_CLASSES), 0.01)
    probabilities[0, 0] = 0.91  # right, confident
    probabilities[1, 1] = 0.50  # right, unsure
    probabilities[2, 1] = 0.95  # wrong (true 2), confident
    probabilities[3, 3] = 0.55  # right, unsure
    labels = np.array([0, 1, 2, 3])
    m = evaluate.classification_metrics(probabilities, labels, threshold=0.6)
    assert m["accuracy"] == 0.75
    assert m["undetermined_rule"] == {"threshold": 0.6, "coverage": 0.5, "answered_accuracy": 0.5,
                                      "undetermined": 2}
    assert m["per_class"]["car_horn"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                                          "support": 1}
    assert m["macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3, 0.0, 1.0]))  # over the 4 classes present
    sweep = {p["threshold"]: p for p in m["threshold_sweep"]}
    assert sweep[0.95]["coverage"] == 0.25 and sweep[0.95]["answered_accuracy"] == 0.0
    assert sweep[1.0]["coverage"] == 0.0 and sweep[1.0]["answered_accuracy"] is None


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="us8k evaluate: error: no selection.json .* run `us8k train` first"):
        us8k.main(["evaluate", str(tmp_path)])
    with pytest.raises(SystemExit, match="threshold must be in"):
        (tmp_path / "selection.json").write_text(json.dumps({"records": str(tmp_path), "test_fold": 3,
                                                             "selected": "tiny", "models": {}}))
        us8k.main(["evaluate", str(tmp_path), "--threshold", "1.5"])
