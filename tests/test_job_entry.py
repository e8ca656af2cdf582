"""The SageMaker training job as SageMaker starts it: `us8k launch-training` creates the job on the AWS
emulator (moto server), and SageMaker's own training toolkits (`sagemaker-training` 4.8.3 +
`sagemaker-tensorflow-training` 20.5.0, tests/sagemaker_container.py) start our entry point from what
the emulator holds: the hyperparameters DescribeTrainingJob returns, the source directory the SDK
uploaded (downloaded by the toolkit itself from the emulator's S3) and the records channel. The
deviations from the real container are listed in tests/sagemaker_container.py.

The interpreter is this one unless US8K_JOB_PYTHON names another (e.g. a venv with the training
image's TensorFlow 2.19 / Keras 3.10 / numpy 1.26.4: tests/job_image_env.sh)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import moto_sagemaker
import pytest
import sagemaker_container

import us8k
from models.config import TrainConfig
from models.job_contract import RESERVED_LOCAL_PATHS, TENSORBOARD_DIR
from models.launch import METRIC_DEFINITIONS

pytestmark = pytest.mark.timeout(600)

REGION = "us-east-1"
BUCKET = "us8k-job"
ROLE = "arn:aws:iam::123456789012:role/us8k-sagemaker"
TRAINING = ["--models", "tiny", "--batch-size", "8", "--val-fold", "2", "--test-fold", "3", "--patience", "3",
            "--shuffle-buffer", "64"]


def launch(name, *options):
    assert us8k.main(["launch-training", "--records", f"s3://{BUCKET}/records", "--output", f"s3://{BUCKET}/runs",
                      "--role", ROLE, "--instance-type", "ml.m5.xlarge", "--job-name", name, *TRAINING,
                      *options]) == 0
    return boto3.client("sagemaker").describe_training_job(TrainingJobName=name)


def start(base, job, **kwargs):
    """The toolkit on `base` (one host) for `job`; its log (stdout + stderr), after it succeeded."""
    done = sagemaker_container.run_toolkit(base, job["TrainingJobName"], checkpoints=base / "checkpoints",
                                           tensorboard=base / "tensorboard-local", **kwargs)
    assert done.returncode == 0, done.stdout[-6000:]
    return done.stdout


@pytest.fixture(scope="module")
def job(tmp_path_factory, tone_records_writer):
    base = tmp_path_factory.mktemp("job")
    with moto_sagemaker.emulated_aws(REGION, BUCKET):
        s3 = boto3.client("s3")
        tone_records_writer(base / "records", {1: 24, 2: 10, 3: 10})
        for path in sorted((base / "records").rglob("*.tfrecord")):
            s3.upload_file(str(path), BUCKET, f"records/{path.relative_to(base / 'records')}")
        described = launch("us8k-job-1", "--epochs", "1")
        tree = sagemaker_container.container_tree(base / "opt-ml", described, s3)
        log = start(tree, described)
        yield {"base": base, "tree": tree, "described": described, "log": log, "s3": s3}


def test_the_job_trains_with_the_launched_config(job):
    """The toolkit hands every hyperparameter over twice: decoded in SM_HPS, and as command-line
    arguments joined by spaces and run through /bin/sh unquoted (sagemaker_training.process), which
    strips the JSON's quotes. The entry point reads SM_HPS, and the run's config is the launched one."""
    sent = job["described"]["HyperParameters"]
    config_text = json.loads(sent["config"])  # the SDK JSON-encodes the value: a JSON text inside
    command = re.search(r"Invoking script with the following command:\s+(\S+ job_entry\.py .*)", job["log"]).group(1)
    assert f"--config {config_text}" in command and command.endswith("--verbose 2"), command
    assert "config from SM_HPS" in job["log"]
    selection = json.loads((job["tree"] / "output" / "data" / "selection.json").read_text())
    assert TrainConfig.from_dict(selection["config"]) == TrainConfig.from_dict(json.loads(config_text))
    assert TrainConfig.from_dict(selection["config"]) == TrainConfig(
        models=("tiny",), epochs=1, batch_size=8, val_fold=2, test_fold=3, patience=3, shuffle_buffer=64)


def test_the_job_runs_the_shipped_code(job):
    """The toolkit downloaded sagemaker_submit_directory from the emulator's S3 into code/ and ran it."""
    code = job["tree"] / "code"
    assert sorted(p.name for p in code.iterdir() if not p.name.startswith("__")) == ["job_entry.py", "models",
                                                                                     "tfdata"]
    assert f"code {code / 'models'}" in job["log"]


def test_entry_point_exports_reports_and_checkpoints(job):
    tree = job["tree"]
    saved = list((tree / "model").rglob("saved_model.pb"))
    assert len(saved) == 1 and saved[0].parent.name == "1"  # SM_MODEL_DIR/…/1/: servable by TF Serving
    metadata = json.loads((tree / "model" / "metadata.json").read_text())
    assert metadata["model_name"] == "tiny"
    data = tree / "output" / "data"
    for name in ("report/report.json", "selection.json", "config.json", "classes.json", "calibration.json",
                 "history/tiny.csv"):
        assert (data / name).is_file(), name
    assert metadata["class_names"] == json.loads((data / "classes.json").read_text())["class_names"]
    selection = json.loads((data / "selection.json").read_text())
    assert selection["per_replica_batch_size"] == 8 and selection["workers"] == 1
    assert selection["training_loop"] == "fit" and selection["xla"] is False  # one process: Keras's Model.fit
    assert selection["config"]["models"] == ["tiny"] and selection["config"]["epochs"] == 1
    run_dir = tree / "checkpoints"  # the run directory is the checkpoint path (synced to checkpoint_s3_uri)
    assert (run_dir / "checkpoints" / "tiny" / "last.keras").is_file()
    assert (run_dir / "checkpoints" / "tiny" / "best.keras").is_file()
    assert "us8k job: exporting tiny" in job["log"]
    assert not (tree / "output" / "failure").exists()  # the toolkit writes it when the entry point fails


def test_tensorboard_logs_go_to_the_synced_local_path(job):
    """TensorBoardOutputConfig's LocalPath is outside the paths CreateTrainingJob refuses, and it is
    where the run writes its TensorBoard logs (redirected into the tree here)."""
    config = job["described"]["TensorBoardOutputConfig"]
    assert config["LocalPath"] == TENSORBOARD_DIR
    assert not any(config["LocalPath"].startswith(p) for p in RESERVED_LOCAL_PATHS)
    assert config["S3OutputPath"] == f"s3://{BUCKET}/runs/us8k-job-1/tensorboard"
    assert list((job["tree"] / "tensorboard-local" / "tiny").rglob("events.out.tfevents.*"))
    assert not (job["tree"] / "checkpoints" / "tensorboard").exists()


def test_metric_definitions_match_the_job_log(job):
    found = {}
    for definition in METRIC_DEFINITIONS:
        values = re.findall(definition["Regex"], job["log"])
        if values:
            found[definition["Name"]] = float(values[-1])
    assert set(found) == {"accuracy", "loss", "val_accuracy", "val_loss", "input_stall", "test_accuracy"}, \
        job["log"][-2000:]
    selection = json.loads((job["tree"] / "output" / "data" / "selection.json").read_text())
    assert found["val_accuracy"] == pytest.approx(selection["models"]["tiny"]["best_val_accuracy"], abs=1e-4)
    assert found["input_stall"] == pytest.approx(selection["models"]["tiny"]["input_stall"], rel=1e-3, abs=1e-4)


def test_refusals_are_one_line(job, tmp_path):
    """What the toolkit cannot fix for us: no channel, a config that is not one."""
    described = dict(job["described"])
    no_channel = sagemaker_container.container_tree(tmp_path / "no-channel", {**described, "InputDataConfig": []},
                                                    job["s3"])
    shutil.copytree(job["tree"] / "code", no_channel / "code", dirs_exist_ok=True)  # no S3 needed
    done = sagemaker_container.run_toolkit(no_channel, "us8k-job-1", checkpoints=tmp_path / "c1",
                                           tensorboard=tmp_path / "t1", timeout=120)
    assert done.returncode != 0
    assert "us8k job: error: no records: set SM_CHANNEL_RECORDS" in done.stdout
    bad = {**described, "HyperParameters": {**described["HyperParameters"],
                                            "config": json.dumps(json.dumps({"epochs": "many"}))}}
    tree = sagemaker_container.container_tree(tmp_path / "bad-config", {**bad, "InputDataConfig": []}, job["s3"])
    shutil.copytree(job["tree"] / "code", tree / "code", dirs_exist_ok=True)
    shutil.copytree(job["tree"] / "input" / "data", tree / "input" / "data")
    (tree / "input" / "config" / "inputdataconfig.json").write_text(
        (job["tree"] / "input" / "config" / "inputdataconfig.json").read_text())
    done = sagemaker_container.run_toolkit(tree, "us8k-job-1", checkpoints=tmp_path / "c2",
                                           tensorboard=tmp_path / "t2", timeout=120)
    assert done.returncode != 0
    assert "us8k job: error: hyperparameter config: " in done.stdout and "epochs" in done.stdout
    assert "failure" in os.listdir(tree / "output")  # the toolkit's failure file, as SageMaker reports it


def test_settings_come_from_sm_hps_before_the_command_line():
    """With SM_HPS set (always, under the toolkit) the command line's config is not read: there it is
    the toolkit's k=v rendering or a JSON text whose quotes /bin/sh removed. Without it (a local run),
    --config is JSON."""
    from models import job_entry

    def parse(argv):
        return job_entry.build_parser().parse_known_args(argv)[0]

    mangled = parse(["--config", "augment=True,models=[cnn, crnn]", "--verbose", "2"])
    hps = {"SM_HPS": json.dumps({"config": json.dumps({"models": ["cnn"], "epochs": 3}), "verbose": 1})}
    assert job_entry.settings(mangled, hps) == (TrainConfig(models=("cnn",), epochs=3), 1, "SM_HPS")
    as_object = {"SM_HPS": json.dumps({"config": {"models": ["crnn"]}})}  # the SDK's decoded object works too
    assert job_entry.settings(mangled, as_object) == (TrainConfig(models=("crnn",)), 2, "SM_HPS")
    local = parse(["--config", '{"epochs": 4}'])
    assert job_entry.settings(local, {}) == (TrainConfig(epochs=4), 2, "the command line")
    with pytest.raises(job_entry.JobError, match="SM_HPS is not valid JSON"):
        job_entry.settings(local, {"SM_HPS": "{"})
    with pytest.raises(job_entry.JobError, match="hyperparameter config: "):
        job_entry.settings(mangled, {})


@pytest.mark.timeout(60)
def test_a_refused_job_stops_before_importing_tensorflow(tmp_path):
    """The channel and the config are checked first: a refused job does not pay TensorFlow's import."""
    probe = ("import sys\nfrom models.job_entry import main\ncode = main(sys.argv[1:])\n"
             "print('tensorflow imported:', 'tensorflow' in sys.modules, 'exit', code)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "TF_CONFIG"))}
    for argv, message in ((["--checkpoint-dir", str(tmp_path)], "no records"),
                          (["--records", str(tmp_path), "--config", '{"epochs": "many"}'], "hyperparameter config")):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env,
                              cwd=Path(__file__).resolve().parents[1], timeout=50)
        assert f"us8k job: error: {message}" in done.stderr, done.stderr[-2000:]
        assert done.stdout.strip() == "tensorflow imported: False exit 1", done.stdout
