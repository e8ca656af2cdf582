"""models.robustness (`us8k evaluate RUN --robustness`): the conditions change the audio as named,
and the report (on a copy of the shared trained run, tests/trained_run.py) holds accuracy deltas against
the clean test fold with calibration checked there; a strong degradation costs the learned model clips."""
import json

import numpy as np
import pytest
from trained_run import TEST_CLIPS, run_copy, trained_run  # noqa: F401  (the fixture)

import us8k
from models import robustness
from tfdata import contract as c
from tfdata.audio import decode_audio


def tone(seconds=2.0, hz=440.0):
    t = np.arange(int(seconds * c.SAMPLE_RATE)) / c.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.timeout(60)
def test_mp3_and_ogg_round_trip_in_memory():
    x = tone()
    mp3 = robustness.encode(x, "mp3", "libmp3lame", 32_000)
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF
    ogg = robustness.encode(x, "ogg", "vorbis", 48_000, layout="stereo", options={"strict": "experimental"})
    assert ogg[:4] == b"OggS"
    for data in (mp3, ogg):
        y = decode_audio(data)
        assert abs(len(y) - len(x)) < 0.05 * len(x)
        n = min(len(x), len(y))
        assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.99  # a pure tone survives; aligned
        assert len(data) < 0.2 * len(x) * 2  # compressed well below 16-bit PCM


@pytest.mark.timeout(60)
def test_conditions_change_the_audio_as_named():
    rng = np.random.default_rng(0)
    x = tone(hz=6000.0)
    conds = robustness.conditions()
    assert {"clean", "mp3_32k", "mp3_64k", "ogg_vorbis_48k", "gain_-20dB", "gain_+6dB", "resampled_8kHz",
            "resampled_48kHz", "embedded_10s"} <= set(conds)
    np.testing.assert_array_equal(conds["clean"](x, rng), x)
    np.testing.assert_allclose(conds["gain_-20dB"](x, rng), 0.1 * x, rtol=1e-5)
    assert np.abs(conds["gain_+6dB"](x, rng)).max() <= 1.0
    # 8 kHz keeps nothing above 4 kHz: a 6 kHz tone is gone; 48 kHz keeps it
    assert np.sqrt(np.mean(conds["resampled_8kHz"](x, rng) ** 2)) < 0.01
    assert np.sqrt(np.mean(conds["resampled_48kHz"](x, rng) ** 2)) > 0.2
    embedded = conds["embedded_10s"](tone(), rng)
    assert len(embedded) == 10 * c.SAMPLE_RATE and np.abs(embedded).max() > 0.25
    # no condition but "clean" hands the clip back unchanged (a 440 Hz tone every condition keeps)
    clip = tone()
    for name, transform in conds.items():
        changed = transform(clip, rng)
        assert (name == "clean") == (len(changed) == len(clip) and np.array_equal(changed, clip)), name


@pytest.mark.timeout(420)
def test_evaluate_with_robustness_reports_deltas(trained_run, tmp_path):
    # opt-in: the shared run's plain evaluation (train_models → evaluate_run) has no robustness section
    assert json.loads((trained_run.run / "report" / "report.json").read_text())["robustness"] is None
    run_dir = run_copy(trained_run, tmp_path / "run")
    assert us8k.main(["evaluate", str(run_dir), "--robustness"]) == 0
    report = json.loads((run_dir / "report" / "report.json").read_text())
    rob = report["robustness"]
    tiny = report["models"]["tiny"]
    assert report["selected"] == "tiny"  # the model measured
    assert rob["examples"] == TEST_CLIPS and rob["temperature"] == pytest.approx(tiny["calibration"]["temperature"])
    conditions = rob["conditions"]
    assert set(conditions) == set(robustness.conditions())
    assert conditions["clean"]["accuracy"] == pytest.approx(tiny["accuracy"])  # the same clips, the same answers
    assert conditions["clean"]["delta_accuracy"] == 0.0
    for name, r in conditions.items():
        assert r["delta_accuracy"] == pytest.approx(r["accuracy"] - conditions["clean"]["accuracy"])
        assert 0.0 <= r["ece_after"] <= 1.0 and 0.0 <= r["coverage"] <= 1.0
    # every condition changed what the model heard: its raw probabilities (ECE before calibration) moved
    for name, r in conditions.items():
        if name != "clean":
            assert r["ece_before"] != conditions["clean"]["ece_before"], name
    # a model that learned the tones (chance: 0.1) loses clips when the band that tells the highest
    # classes apart is gone: through 8 kHz nothing above 4 kHz survives (classes 8 and 9: tones of
    # ~3.8 and ~5.8 kHz, octaves above 7 kHz)
    assert conditions["clean"]["accuracy"] >= 0.5
    assert conditions["resampled_8kHz"]["accuracy"] < conditions["clean"]["accuracy"]
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "## Robustness" in summary and "mp3_32k" in summary and "embedded_10s" in summary
