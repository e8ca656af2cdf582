"""`us8k launch-training` and `--status` against a moto server on loopback (tests/moto_sagemaker.py).

moto 5.2.5 implements CreateTrainingJob / DescribeTrainingJob (a job completes at once); the job is
read back with boto3 over HTTP: image, instances, channel, hyperparameters, checkpoint and
TensorBoard config, and the uploaded source_dir. moto replaces MetricDefinitions with its own
(test:dcg) and reports a fixed FinalMetricDataList (train:progress 100): our regexes are tested on
a real job log in tests/test_job_entry.py instead."""
import io
import json
import re
import tarfile

import boto3
import moto_sagemaker
import pytest

import us8k
from models.config import TrainConfig

pytestmark = pytest.mark.timeout(300)

REGION = "us-east-1"
BUCKET = "us8k-train"
ROLE = "arn:aws:iam::123456789012:role/us8k-sagemaker"
IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/tensorflow-training:2.19.0-gpu-py312"


@pytest.fixture(scope="module")
def moto_url():
    with moto_sagemaker.emulated_aws(REGION, BUCKET) as url:
        yield url


def launch(*options):
    return us8k.main(["launch-training", "--records", f"s3://{BUCKET}/records", "--output", f"s3://{BUCKET}/runs",
                      "--role", ROLE, *options])


def test_launch_creates_the_training_job(moto_url, capsys):
    assert launch("--job-name", "us8k-t1", "--models", "cnn,crnn", "--epochs", "40", "--spot",
                  "--input-mode", "FastFile") == 0
    out = capsys.readouterr().out
    assert "job us8k-t1 created" in out and "us8k launch-training --status us8k-t1" in out
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName="us8k-t1")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge" and job["ResourceConfig"]["InstanceCount"] == 1
    [channel] = job["InputDataConfig"]
    assert channel["ChannelName"] == "records" and channel["InputMode"] == "FastFile"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/records"
    hps = job["HyperParameters"]
    config = TrainConfig.from_dict(json.loads(json.loads(hps["config"])))  # the TrainConfig as one JSON text
    assert config == TrainConfig(models=("cnn", "crnn"), epochs=40)
    assert json.loads(hps["verbose"]) == 2
    assert json.loads(hps["sagemaker_program"]) == "job_entry.py"
    assert "model_dir" not in hps  # model_dir=False: no s3:// model dir handed to the script
    assert not any(k.startswith("sagemaker_multi_worker") for k in hps)  # one instance: no distribution
    assert job["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/runs/us8k-t1/checkpoints",
                                       "LocalPath": "/opt/ml/checkpoints"}
    assert job["TensorBoardOutputConfig"] == {"S3OutputPath": f"s3://{BUCKET}/runs/us8k-t1/tensorboard",
                                              "LocalPath": "/opt/us8k/tensorboard"}  # not under /opt/ml
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/runs"
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] >= job["StoppingCondition"]["MaxRuntimeInSeconds"]

    # the source_dir as uploaded: only the training code and the entry point, no requirements.txt
    submit = json.loads(hps["sagemaker_submit_directory"])
    assert submit.startswith(f"s3://{BUCKET}/runs/us8k-t1/source/")
    key = submit[len(f"s3://{BUCKET}/"):]
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
    assert "job_entry.py" in names and "models/job_entry.py" in names and "tfdata/dataset.py" in names
    assert {n.split("/")[0] for n in names} == {"job_entry.py", "models", "tfdata"}
    assert not any("requirements" in n for n in names)


def test_launch_from_a_run_config(moto_url, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"models": ["deep_cnn"], "epochs": 7,
                                                            "spec_augment": True}}))
    assert launch("--job-name", "us8k-t2", "--config", str(run / "config.json"), "--epochs", "9") == 0
    hps = boto3.client("sagemaker").describe_training_job(TrainingJobName="us8k-t2")["HyperParameters"]
    assert TrainConfig.from_dict(json.loads(json.loads(hps["config"]))) == TrainConfig(models=("deep_cnn",), epochs=9,
                                                                           spec_augment=True)


def test_status_reports_state_and_metrics(moto_url, capsys):
    assert launch("--job-name", "us8k-t3", "--wait") == 0
    capsys.readouterr()
    assert us8k.main(["launch-training", "--status", "us8k-t3"]) == 0
    out = capsys.readouterr().out
    assert "job us8k-t3: Completed (Completed); 1 × ml.g5.12xlarge" in out
    assert "final metrics: train:progress 100" in out  # moto's fixed FinalMetricDataList
    assert "Starting: Preparing the instances for training" in out
    assert f"checkpoints: s3://{BUCKET}/runs/us8k-t3/checkpoints" in out
    assert f"model: s3://{BUCKET}/runs/us8k-t3/output/model.tar.gz" in out


def test_several_instances_run_multi_worker_mirrored_strategy(moto_url, capsys):
    """--instance-count 2: the SDK encodes the distribution as the hyperparameter the container reads
    to set TF_CONFIG on every instance (the job then trains through models.custom_loop)."""
    assert launch("--job-name", "us8k-t4", "--instance-count", "2", "--models", "cnn") == 0
    assert "2 × ml.g5.12xlarge" in capsys.readouterr().out
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName="us8k-t4")
    assert job["ResourceConfig"]["InstanceCount"] == 2
    hps = job["HyperParameters"]
    assert json.loads(hps["sagemaker_multi_worker_mirrored_strategy_enabled"]) is True
    assert TrainConfig.from_dict(json.loads(json.loads(hps["config"]))) == TrainConfig(models=("cnn",))  # "auto"


def refusal(capsys, run) -> str:
    """The line a refused command prints last on stderr (`run()` returns 1)."""
    capsys.readouterr()
    assert run() == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_errors_are_one_line(moto_url, capsys):
    assert re.search(r"^us8k launch-training: error: --instance-count 2 with --strategy "
                     r"default: every instance would train its own model",
                     refusal(capsys, lambda: launch("--instance-count", "2", "--strategy", "default")))
    assert re.search(r"^us8k launch-training: error: --records must be an s3://", refusal(capsys, lambda: us8k.main([
        "launch-training", "--records", "/local/records", "--output", f"s3://{BUCKET}/runs", "--role", ROLE])))
    assert re.search(r"^us8k launch-training: error: --records, --output, --role required",
                     refusal(capsys, lambda: us8k.main(["launch-training", "--epochs", "3"])))
    assert re.search(r"^us8k launch-training: error: describing training job 'nope' failed",
                     refusal(capsys, lambda: us8k.main(["launch-training", "--status", "nope"])))
    assert re.search(r"^us8k launch-training: error: --instance-count must be ≥ 1, got 0$",
                     refusal(capsys, lambda: launch("--instance-count", "0")))
    assert re.search(r"^us8k launch-training: error: invalid job name 'no_underscores'",
                     refusal(capsys, lambda: launch("--job-name", "no_underscores")))
    assert re.search(r"^us8k launch-training: error: invalid job name '-x'",
                     refusal(capsys, lambda: launch("--job-name=-x")))


def test_hyperparameters_stay_under_sagemakers_limit_as_sent():
    """SageMaker takes at most 2,500 characters per hyperparameter value, counted as the SDK sends it
    (JSON-encoded: a JSON text's quotes come back escaped)."""
    from models.launch import HYPERPARAMETER_LIMIT, LaunchError, job_hyperparameters

    config = TrainConfig(models=("cnn", "crnn"))
    sent = json.dumps(job_hyperparameters(config)["config"])
    assert len(sent) <= HYPERPARAMETER_LIMIT
    long = TrainConfig(models=("cnn",) * 400)  # one long value: ≈ 3,200 characters as sent
    refusal = r"hyperparameter config is \d+ characters as sent; SageMaker takes at most 2500"
    with pytest.raises(LaunchError, match=refusal):
        job_hyperparameters(long)


def test_tensorboard_local_path_outside_the_reserved_paths():
    from models.launch import LaunchError, check_local_path

    assert check_local_path("/opt/us8k/tensorboard") == "/opt/us8k/tensorboard"
    for refused in ("/opt/ml/checkpoints/tensorboard", "/opt/ml", "/tmp/tb", "/usr/local/nvidia/x", "/opt/mlx"):
        with pytest.raises(LaunchError, match="SageMaker reserves"):
            check_local_path(refused)
