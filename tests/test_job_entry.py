"""The SageMaker training job's entry point, run for real: the source_dir `us8k launch-training` ships
(models.launch.stage_source_dir), its job_entry.py in a fresh Python process with the SM_* variables
the container sets pointing at temporary directories, a tiny model and one epoch.

The interpreter is this one unless US8K_JOB_PYTHON names another (e.g. a venv with the training
image's TensorFlow 2.19 / Keras 3.10 / numpy 2.1, to check the code against them)."""
import json
import os
import re
import subprocess
import sys

import pytest

from models.launch import METRIC_DEFINITIONS, stage_source_dir

pytestmark = pytest.mark.timeout(420)

CONFIG = {"models": ["tiny"], "epochs": 1, "batch_size": 8, "val_fold": 2, "test_fold": 3, "patience": 3,
          "shuffle_buffer": 64}


def run_job(source, records, sm, config, timeout=240):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "TF_CONFIG", "PYTHONPATH"))}
    env.update(SM_CHANNEL_RECORDS=str(records), SM_MODEL_DIR=str(sm / "model"), SM_OUTPUT_DATA_DIR=str(sm / "data"),
               US8K_CHECKPOINT_DIR=str(sm / "checkpoints"), TF_CPP_MIN_LOG_LEVEL="2",
               SM_HPS=json.dumps({"config": config, "verbose": 2}))
    python = os.environ.get("US8K_JOB_PYTHON", sys.executable)
    done = subprocess.run([python, "job_entry.py"], cwd=source, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def job(tmp_path_factory, tone_records_writer):
    base = tmp_path_factory.mktemp("job")
    records = base / "records"
    tone_records_writer(records, {1: 24, 2: 10, 3: 10})
    source = stage_source_dir(base / "source")
    sm = base / "opt-ml"
    log = run_job(source, records, sm, CONFIG)
    return {"source": source, "records": records, "sm": sm, "log": log}


def test_source_dir_holds_only_the_training_code(job):
    source = job["source"]
    tops = sorted(p.name for p in source.iterdir())
    assert tops == ["job_entry.py", "models", "tfdata"]
    assert not list(source.rglob("requirements*.txt")) and not list(source.rglob("setup.py"))
    assert {p.suffix for p in source.rglob("*") if p.is_file()} <= {".py", ".pyc"}


def test_entry_point_exports_reports_and_checkpoints(job):
    sm = job["sm"]
    assert (sm / "model" / "model" / "1" / "saved_model.pb").is_file()
    metadata = json.loads((sm / "model" / "metadata.json").read_text())
    assert metadata["model_name"] == "tiny"
    for name in ("report/report.json", "selection.json", "config.json", "calibration.json", "history/tiny.csv"):
        assert (sm / "data" / name).is_file(), name
    selection = json.loads((sm / "data" / "selection.json").read_text())
    assert selection["per_replica_batch_size"] == 8 and selection["workers"] == 1
    assert selection["training_loop"] == "fit" and selection["xla"] is False  # one process: Keras's Model.fit
    assert selection["config"]["models"] == ["tiny"]
    run_dir = sm / "checkpoints"  # the run directory is the checkpoint path (synced to checkpoint_s3_uri)
    assert (run_dir / "checkpoints" / "tiny" / "last.keras").is_file()
    assert (run_dir / "checkpoints" / "tiny" / "best.keras").is_file()
    assert list((run_dir / "tensorboard" / "tiny").rglob("events.out.tfevents.*"))
    assert "us8k job: exporting tiny" in job["log"]


def test_metric_definitions_match_the_job_log(job):
    found = {}
    for definition in METRIC_DEFINITIONS:
        values = re.findall(definition["Regex"], job["log"])
        if values:
            found[definition["Name"]] = float(values[-1])
    assert set(found) == {"accuracy", "loss", "val_accuracy", "val_loss", "input_stall", "test_accuracy"}, \
        job["log"][-2000:]
    selection = json.loads((job["sm"] / "data" / "selection.json").read_text())
    assert found["val_accuracy"] == pytest.approx(selection["models"]["tiny"]["best_val_accuracy"], abs=1e-4)
    assert found["input_stall"] == pytest.approx(selection["models"]["tiny"]["input_stall"], rel=1e-3, abs=1e-4)


def test_restarted_job_resumes_from_its_checkpoints(job):
    """As a spot job restarts: the checkpoints are there, the channel is downloaded again (new mtimes)."""
    for path in job["records"].rglob("*.tfrecord"):
        os.utime(path, (path.stat().st_atime + 100, path.stat().st_mtime + 100))
    log = run_job(job["source"], job["records"], job["sm"], {**CONFIG, "epochs": 2})
    assert "downloaded again" in log and "[tiny] resuming after epoch 1 of 2" in log
    state = json.loads((job["sm"] / "checkpoints" / "checkpoints" / "tiny" / "state.json").read_text())
    assert state["epochs_run"] == 2
    history = (job["sm"] / "data" / "history" / "tiny.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + two epochs, the first from before the restart
