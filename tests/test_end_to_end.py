"""The whole product on tiny synthetic data: `us8k demo` runs every stage for real, each as its own
CLI process (synth → Beam ingest → train → evaluate → export → package → local endpoint → predict)."""
import json
import os
import subprocess
import sys
import tarfile

import pytest
import wheel_cache

from tfdata import contract as c


@pytest.mark.timeout(900)
def test_demo_runs_every_stage(tmp_path, tmp_path_factory):
    work = tmp_path / "demo"
    cache = wheel_cache.cache_home(tmp_path_factory, tmp_path / "cache")  # its `us8k package`: the run's wheels
    done = subprocess.run(
        [sys.executable, "-m", "us8k", "demo", "--workdir", str(work), "--clips-per-class-per-fold", "1",
         "--models", "tiny,baseline", "--epochs", "1", "--batch-size", "8"],
        capture_output=True, text=True, timeout=840, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    manifest = json.loads((work / "records" / c.MANIFEST_FILE).read_text())
    assert manifest["examples"] == len(c.URBANSOUND8K_CLASSES) * c.URBANSOUND8K_FOLDS and manifest["errors"] == 3
    errors = (work / "records" / c.ERRORS_FILE).read_text().splitlines()
    assert len(errors) == 3

    selection = json.loads((work / "run" / "selection.json").read_text())
    assert set(selection["models"]) == {"tiny", "baseline"} and selection["selected"] in selection["models"]
    assert (work / "run" / "report" / "report.json").exists()

    metadata = json.loads((work / "export" / "metadata.json").read_text())
    assert list(metadata["class_names"]) == list(c.URBANSOUND8K_CLASSES)
    with tarfile.open(work / "model.tar.gz") as tar:
        names = tar.getnames()
    assert "code/inference.py" in names and any(n.startswith("1/") for n in names)

    # `us8k predict` printed one line per file (file, label, confidence) and the JSON waveforms' answers.
    lines = [line.split("\t") for line in done.stdout.splitlines() if line.count("\t") == 2]
    labels = {fields[1] for fields in lines}
    assert len(lines) >= 5 + 2, done.stdout[-3000:]
    assert labels <= set(c.URBANSOUND8K_CLASSES) | {c.UNDETERMINED}
    assert all(0.0 <= float(fields[2]) <= 1.0 for fields in lines)
    assert "demo finished" in done.stdout
    assert f"found in {cache / 'us8k' / 'wheels'} (no download)" in done.stdout + done.stderr
