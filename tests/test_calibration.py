"""models.calibration: temperature scaling lowers the validation NLL, the threshold meets its target
(or says it cannot), and the exported temperature and threshold are what the endpoint applies."""
import json
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from conftest import tone_clip
from trained_run import trained_run  # noqa: F401  (the fixture)

import us8k
from models import calibration as cal
from tfdata import contract as c
from tfdata.layout import SERVING_SIGNATURE, find_saved_model, serving_inputs

CLASSES = len(c.URBANSOUND8K_CLASSES)  # ten, as the shared run's (records without a manifest)


def overconfident(n=400, seed=0, accuracy=0.7, sharpness=4.0):
    """Probabilities that are right `accuracy` of the time but sharper than that (T > 1 fixes it)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    predicted = np.where(rng.random(n) < accuracy, labels, (labels + rng.integers(1, CLASSES, n)) % CLASSES)
    logits = rng.normal(0, 1, (n, CLASSES))
    logits[np.arange(n), predicted] += 3.0
    p = np.exp(sharpness * logits)
    return p / p.sum(axis=1, keepdims=True), labels


def test_temperature_lowers_nll_and_keeps_the_argmax():
    p, y = overconfident()
    t = cal.fit_temperature(p, y)
    scaled = cal.apply_temperature(p, t)
    assert t > 1.5
    assert cal.nll(scaled, y) < cal.nll(p, y) - 0.1
    assert cal.ece(scaled, y) < cal.ece(p, y)
    np.testing.assert_array_equal(scaled.argmax(axis=1), p.argmax(axis=1))
    under, y2 = overconfident(sharpness=0.3)
    assert cal.fit_temperature(under, y2) < 1.0  # under-confident: sharpened
    np.testing.assert_allclose(cal.apply_temperature(p, 1.0), p, atol=1e-9)


def test_ece_and_reliability_on_known_values():
    p = np.array([[0.9, 0.1] + [0.0] * 8, [0.9, 0.1] + [0.0] * 8, [0.6, 0.4] + [0.0] * 8, [0.6, 0.4] + [0.0] * 8])
    y = np.array([0, 1, 0, 0])  # confidence 0.9 → accuracy 0.5; confidence 0.6 → accuracy 1.0
    assert cal.ece(p, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    bins = [b for b in cal.reliability(p, y) if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in bins] == [(2, 1.0), (2, 0.5)]


def test_threshold_meets_the_precision_target_or_warns():
    top = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4])
    right = np.array([1, 1, 1, 0, 1, 0, 0, 1], bool)
    p = np.zeros((8, CLASSES))
    p[:, 0], p[:, 1] = top, 1 - top
    y = np.where(right, 0, 2)
    chosen = cal.choose_threshold(p, y, "precision", 0.75)
    # answered at t = 0.7: 5 clips, 4 right (0.8 ≥ 0.75); at t = 0.6: 4 of 6 (0.67)
    assert chosen["threshold"] == pytest.approx(0.7) and chosen["reached"] and chosen["warning"] is None
    assert chosen["validation_coverage"] == pytest.approx(5 / 8)
    assert chosen["validation_precision"] == pytest.approx(0.8)
    unreachable = cal.choose_threshold(p, np.full(8, 5), "precision", 0.9)  # never right
    assert not unreachable["reached"] and "no threshold reaches" in unreachable["warning"]
    coverage = cal.choose_threshold(p, y, "coverage", 0.5)
    assert coverage["threshold"] == pytest.approx(0.8) and coverage["validation_coverage"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def exported(trained_run):
    """The shared tiny run (evaluated: calibration.json) and its export with the calibrated threshold."""
    assert json.loads((trained_run.run / "selection.json").read_text())["selected"] == "tiny"  # what was exported
    return trained_run.records, trained_run.run, trained_run.export


@pytest.mark.timeout(300)
def test_evaluation_fits_the_temperature_on_validation(exported):
    _, run_dir, _ = exported
    report = json.loads((run_dir / "report" / "report.json").read_text())
    k = report["models"]["tiny"]["calibration"]
    assert k["validation"]["nll_after"] < k["validation"]["nll_before"]  # lowers the validation NLL
    assert k["temperature"] != 1.0 and k["target"] == "precision" and k["target_value"] == 0.9
    assert {"ece_before", "ece_after", "coverage", "answered_precision"} <= set(k["test"])
    assert (run_dir / "report" / "reliability_tiny.png").read_bytes()[:4] == b"\x89PNG"
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "## Calibration" in summary and "ECE" in summary
    stored = json.loads((run_dir / "calibration.json").read_text())["models"]["tiny"]
    assert stored["temperature"] == k["temperature"] and stored["threshold"] == k["threshold"]


@pytest.mark.timeout(300)
def test_exported_temperature_and_threshold_are_the_endpoints_defaults(exported, tmp_path):
    import keras

    from serving.server import start_server

    base, run_dir, export_dir = exported
    stored = json.loads((run_dir / "calibration.json").read_text())["models"]["tiny"]
    metadata = json.loads((export_dir / "metadata.json").read_text())
    assert metadata["threshold"] == pytest.approx(stored["threshold"])
    assert metadata["temperature"] == pytest.approx(stored["temperature"])

    # the graph applies the temperature: the SavedModel's probabilities are the calibrated Keras ones
    rng = np.random.default_rng(7)
    clips = np.round(np.stack([tone_clip(k, rng) for k in range(4)]), 4).astype(np.float32)  # a small JSON body
    model = keras.models.load_model(run_dir / "checkpoints" / "tiny" / "best.keras", compile=False)
    expected = cal.apply_temperature(model(clips, training=False).numpy(), stored["temperature"])
    loaded = tf.saved_model.load(str(find_saved_model(export_dir)))
    served = loaded.signatures[SERVING_SIGNATURE](**serving_inputs(
        tf.constant(clips), tf.constant([c.CLIP_SAMPLES] * 4, tf.int32)))["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert np.abs(served - model(clips, training=False).numpy()).max() > 1e-3  # it did change them

    with start_server(export_dir) as server:
        assert server.config.threshold == pytest.approx(stored["threshold"])
        body = json.dumps({"instances": [[round(float(v), 4) for v in clip] for clip in clips]}).encode()
        request = urllib.request.Request(server.url + "/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answers = json.loads(response.read())["predictions"]
    for answer, p in zip(answers, served):
        assert answer["confidence"] == pytest.approx(float(p.max()), abs=1e-4)
        assert answer["undetermined"] == bool(p.max() < stored["threshold"])

    # the seed's 0.6 stays available
    seed_export = tmp_path / "seed_threshold"
    assert us8k.main(["export", str(run_dir), "--output", str(seed_export), "--threshold", "0.6"]) == 0
    assert json.loads((seed_export / "metadata.json").read_text())["threshold"] == 0.6
