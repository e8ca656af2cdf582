"""models.evaluate (`us8k evaluate RUN`) on the shared trained run (tests/trained_run.py): report files, and
every figure against the same figure worked out here from the model's own predictions and the records."""
import json
import re
import shutil

import keras
import matplotlib.image
import numpy as np
import pytest
from trained_run import MODELS, TEST_CLIPS, TEST_FOLD, run_copy, trained_run  # noqa: F401  (the fixture)

import us8k
from models import evaluate
from tfdata import contract as c
from tfdata import records

pytestmark = pytest.mark.timeout(300)

US8K = c.URBANSOUND8K_CLASSES  # the shared run's classes (its records have no manifest)


def evaluated_copy(trained, tmp_path):
    """A copy of the shared run without its evaluation: what `us8k evaluate` writes is then new."""
    run_dir = run_copy(trained, tmp_path / "run")
    shutil.rmtree(run_dir / "report")
    (run_dir / "calibration.json").unlink()
    return run_dir


@pytest.fixture(scope="module")
def independent(trained_run):
    """{model: (probabilities, labels)} over the test fold, from the checkpoints and the records
    directly (the model called eagerly, the records' own labels): not through models.evaluate."""
    waveforms, labels = zip(*records.read_folds(trained_run.records, [TEST_FOLD]).as_numpy_iterator())
    out = {}
    for name in MODELS:
        model = keras.models.load_model(trained_run.run / "checkpoints" / name / "best.keras", compile=False)
        out[name] = (keras.ops.convert_to_numpy(model(np.stack(waveforms), training=False)).astype(np.float64),
                     np.array(labels, np.int64))
    return out


def test_cli_writes_report_files_and_prints_test_accuracy(trained_run, tmp_path, capsys):
    run_dir = evaluated_copy(trained_run, tmp_path)
    assert us8k.main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    report = json.loads((run_dir / "report" / "report.json").read_text())
    selected = json.loads((run_dir / "selection.json").read_text())["selected"]
    assert report["selected"] == selected and set(report["models"]) == set(MODELS)
    assert f"Test accuracy ({selected}" in out and f"{report['models'][selected]['accuracy']:.4f}" in out
    assert report["threshold"] == c.DEFAULT_THRESHOLD and report["class_names"] == list(US8K)
    assert report["robustness"] is None  # opt-in (--robustness: tests/test_robustness.py)
    for name in MODELS:
        for key in ("confusion_png", "threshold_png", "reliability_png"):
            image = matplotlib.image.imread(run_dir / "report" / report["models"][name]["files"][key])
            assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    summary = (run_dir / "report" / "summary.md").read_text()
    assert f"**{selected}**" in summary and "| Model | Val Accuracy | Test Accuracy |" in summary
    assert set(json.loads((run_dir / "calibration.json").read_text())["models"]) == set(MODELS)
    # the same answers as the shared run's own evaluation (train_models → evaluate_run), which the
    # next test checks figure by figure
    shared = json.loads((trained_run.run / "report" / "report.json").read_text())
    for name in MODELS:
        assert report["models"][name]["confusion_matrix"] == shared["models"][name]["confusion_matrix"]


def test_metrics_match_an_independent_pass_over_the_test_fold(trained_run, independent):
    """Every figure of the report against the same figure computed here from the predictions
    (numpy, not scikit-learn or the report's own confusion matrix)."""
    report = json.loads((trained_run.run / "report" / "report.json").read_text())
    for name in MODELS:
        m = report["models"][name]
        probabilities, labels = independent[name]
        predicted = probabilities.argmax(axis=1)
        assert m["examples"] == len(labels) == TEST_CLIPS
        assert m["accuracy"] == pytest.approx(np.mean(predicted == labels))
        expected_matrix = [[int(np.sum((labels == t) & (predicted == p))) for p in range(len(US8K))]
                           for t in range(len(US8K))]
        assert m["confusion_matrix"] == expected_matrix  # rows: true class
        f1s = []
        for k, cls in enumerate(US8K):
            hits = np.sum((predicted == k) & (labels == k))
            support, answered = np.sum(labels == k), np.sum(predicted == k)
            precision = hits / answered if answered else 0.0
            recall = hits / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            assert m["per_class"][cls] == {"precision": pytest.approx(precision), "recall": pytest.approx(recall),
                                           "f1": pytest.approx(f1), "support": support}, cls
            if support:
                f1s.append(f1)
        assert m["macro_f1"] == pytest.approx(np.mean(f1s))  # over the classes the test fold holds
        top = probabilities.max(axis=1)
        sweep = m["threshold_sweep"]
        assert [p["threshold"] for p in sweep] == list(evaluate.SWEEP_THRESHOLDS)
        for point in sweep:
            answered = top >= point["threshold"]
            assert point["coverage"] == pytest.approx(answered.mean()), point
            assert point["undetermined"] == int((~answered).sum()), point
            if answered.any():
                assert point["answered_accuracy"] == pytest.approx(np.mean(predicted[answered] == labels[answered]))
            else:
                assert point["answered_accuracy"] is None
        assert m["undetermined_rule"] == next(p for p in sweep if p["threshold"] == c.DEFAULT_THRESHOLD)
    # a sweep that does not move would not tell: the selected model's answers spread over the thresholds
    coverages = {p["coverage"] for p in report["models"][report["selected"]]["threshold_sweep"]}
    assert len(coverages) > 3


def test_threshold_option(trained_run, tmp_path):
    run_dir = evaluated_copy(trained_run, tmp_path)
    assert us8k.main(["evaluate", str(run_dir), "--threshold", "0.25"]) == 0
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["threshold"] == 0.25
    for m in report["models"].values():
        assert m["undetermined_rule"] == next(p for p in m["threshold_sweep"] if p["threshold"] == 0.25)


def test_classification_metrics_on_known_probabilities():
    probabilities = np.full((4, len(US8K)), 0.01)
    probabilities[0, 0] = 0.91  # right, confident
    probabilities[1, 1] = 0.50  # right, unsure
    probabilities[2, 1] = 0.95  # wrong (true 2), confident
    probabilities[3, 3] = 0.55  # right, unsure
    labels = np.array([0, 1, 2, 3])
    m = evaluate.classification_metrics(probabilities, labels, threshold=0.6, class_names=US8K)
    assert m["accuracy"] == 0.75
    assert m["undetermined_rule"] == {"threshold": 0.6, "coverage": 0.5, "answered_accuracy": 0.5,
                                      "undetermined": 2}
    assert m["per_class"]["car_horn"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                                          "support": 1}
    assert m["macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3, 0.0, 1.0]))  # over the 4 classes present
    sweep = {p["threshold"]: p for p in m["threshold_sweep"]}
    assert sweep[0.95]["coverage"] == 0.25 and sweep[0.95]["answered_accuracy"] == 0.0
    assert sweep[1.0]["coverage"] == 0.0 and sweep[1.0]["answered_accuracy"] is None


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    def refusal(*argv):
        capsys.readouterr()
        assert us8k.main(["evaluate", *argv]) == 1
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert re.search("us8k evaluate: error: no selection.json .* run `us8k train` first", refusal(str(tmp_path)))
    (tmp_path / "selection.json").write_text(json.dumps({"records": str(tmp_path), "test_fold": 3,
                                                         "selected": "tiny", "models": {}}))
    assert "threshold must be in" in refusal(str(tmp_path), "--threshold", "1.5")


def test_the_confusion_figure_draws_three_or_a_thousand_classes():
    """The figure takes the run's class list: three named classes, or a thousand (the most a class list
    holds), which it draws with label numbers and no cell counts (a million cells' text would not read)."""
    few = evaluate.confusion_png(np.eye(3, dtype=int) * 4, "three", ("bell", "hum", "chirp"))
    many_names = tuple(f"class {k}" for k in range(1000))
    many = evaluate.confusion_png(np.eye(1000, dtype=int), "a thousand", many_names)
    for png in (few, many):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert evaluate.MAX_LABELLED_CLASSES >= 40
