"""SageMaker's TensorFlow training container, as far as it runs here: its own toolkits start our job.

The TensorFlow 2.19 training image starts a job with the `train` command of `sagemaker-training`
(its `trainer.train`), which imports the module the image names in SAGEMAKER_TRAINING_MODULE,
`sagemaker_tensorflow_container.training:main` (`sagemaker-tensorflow-training`). That main reads
the job's tree (input/config/*.json, input/data/<channel>/), downloads `sagemaker_submit_directory`
from S3 into code/, turns the hyperparameters into SM_HPS and command-line arguments, sets TF_CONFIG
under multi_worker_mirrored_strategy and runs `python job_entry.py ARGS`. Both packages, pinned in
tests/sagemaker_toolkit.txt, are installed by `make install` with `pip install --no-deps --target`
into .venv/sagemaker-toolkit (20.5.0 pins numpy<1.24 and sagemaker-training<=4.8.3, which do not
matter at run time) and run here unmodified, on this environment's (or US8K_JOB_PYTHON's) Python.

`container_tree` writes the tree SageMaker writes from DescribeTrainingJob's answer (what
`us8k launch-training` sent to the AWS emulator): hyperparameters.json holds the hyperparameters
exactly as sent (each value JSON-encoded by the SDK), inputdataconfig.json the channels,
resourceconfig.json the hosts; the channel's objects are downloaded from the emulator's S3 as File
mode does. Where this differs from the real container, and why:
  - host names: SageMaker names hosts algo-1, algo-2…, which do not resolve here, and the toolkit
    waits up to 15 minutes for every host to resolve; the hosts here are names that resolve
    (localhost, 127.0.0.1).
  - multi-worker ports: the toolkit's TF_CONFIG builder gives every host port 8890; two workers on
    one machine need two ports, so `run_toolkit(ports=...)` wraps that builder and changes only the
    ports of the cluster it returns (the hosts, order, task type and index are the toolkit's).
  - checkpoint and TensorBoard paths: the job's LocalPaths (/opt/ml/checkpoints, /opt/us8k/tensorboard)
    are redirected into the tree with US8K_CHECKPOINT_DIR / US8K_TENSORBOARD_DIR.
  - SageMaker then syncs checkpoints and TensorBoard to S3 and uploads model/ and output/data/ as
    model.tar.gz / output.tar.gz: that is the service's part, not run here.
  - the interpreter is this environment's (TensorFlow 2.21), or US8K_JOB_PYTHON (e.g. the image's
    TensorFlow 2.19 + numpy 1.26.4, tests/job_image_env.sh), not the image's Python 3.12.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TRAINING_MODULE = "sagemaker_tensorflow_container.training:main"  # the image's SAGEMAKER_TRAINING_MODULE
# The image's `train` command; with `ports`, the toolkit's own TF_CONFIG builder with other ports.
TRAIN = "from sagemaker_training.cli.train import main; main()"
TRAIN_WITH_PORTS = """
import json, sys
from sagemaker_tensorflow_container import training
ports = json.loads(sys.argv[1])
build = training._build_tf_config_for_mwms
def with_ports(hosts, current_host):
    config = build(hosts=hosts, current_host=current_host)
    config["cluster"]["worker"] = [f"{address.rsplit(':', 1)[0]}:{ports[i]}"
                                   for i, address in enumerate(config["cluster"]["worker"])]
    return config
training._build_tf_config_for_mwms = with_ports
from sagemaker_training.cli.train import main
main()
"""


def toolkit_dir() -> Path:
    """Where `make install` put the toolkits (US8K_SAGEMAKER_TOOLKIT overrides)."""
    path = Path(os.environ.get("US8K_SAGEMAKER_TOOLKIT") or Path(sys.prefix) / "sagemaker-toolkit")
    if not (path / "sagemaker_tensorflow_container" / "training.py").is_file():
        raise RuntimeError(f"SageMaker's training toolkits are not installed in {path}: run `make install`")
    return path


def job_python() -> str:
    """US8K_JOB_PYTHON (absolute: the toolkit runs in the tree), else this interpreter. abspath, not
    realpath: a venv's python is a symlink that must stay one."""
    return os.path.abspath(os.environ["US8K_JOB_PYTHON"]) if os.environ.get("US8K_JOB_PYTHON") else sys.executable


def container_tree(base: Path, job: dict, s3, *, hosts=("localhost",), current_host="localhost") -> Path:
    """SAGEMAKER_BASE_DIR for one host of `job` (a DescribeTrainingJob answer), its channels
    downloaded from S3 with the boto3 client `s3`."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(job["HyperParameters"]))
    channels = {}
    for channel in job["InputDataConfig"]:
        source = channel["DataSource"]["S3DataSource"]
        channels[channel["ChannelName"]] = {"TrainingInputMode": channel.get("InputMode", "File"),
                                           "S3DistributionType": source["S3DataDistributionType"],
                                           "RecordWrapperType": channel.get("RecordWrapperType", "None")}
        download_prefix(s3, source["S3Uri"], base / "input" / "data" / channel["ChannelName"])
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    group = "homogeneousCluster"
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": current_host, "hosts": list(hosts), "current_group_name": group,
        "current_instance_type": job["ResourceConfig"]["InstanceType"],
        "instance_groups": [{"instance_group_name": group, "hosts": list(hosts),
                             "instance_type": job["ResourceConfig"]["InstanceType"]}],
        "network_interface_name": "eth0"}))
    for name in ("model", "output/data", "code"):
        (base / name).mkdir(parents=True, exist_ok=True)
    return base


def download_prefix(s3, uri: str, target: Path) -> None:
    """Every object under the s3:// prefix `uri`, to the same relative path under `target`."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    prefix = prefix.rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            path = target / item["Key"][len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(path))


def run_toolkit(base: Path, job_name: str, *, checkpoints: Path, tensorboard: Path, ports=None,
                extra_env=None, timeout: float = 300, wait: bool = True):
    """Start the image's `train` on the tree `base`, its output (stdout + stderr) into base/toolkit.log.
    wait: the finished CompletedProcess, with the log as its stdout; else the running Popen."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SM_", "TF_CONFIG", "PYTHONPATH", "SAGEMAKER_", "US8K_"))}
    env.update(SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_TRAINING_MODULE=TRAINING_MODULE,
               TRAINING_JOB_NAME=job_name, PYTHONPATH=str(toolkit_dir()), TF_CPP_MIN_LOG_LEVEL="2",
               US8K_CHECKPOINT_DIR=str(checkpoints), US8K_TENSORBOARD_DIR=str(tensorboard),
               **(extra_env or {}))
    command = [job_python(), "-c", TRAIN] if ports is None else [job_python(), "-c", TRAIN_WITH_PORTS,
                                                                 json.dumps(list(ports))]
    with open(base / "toolkit.log", "w") as log:
        process = subprocess.Popen(command, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT)
    if not wait:
        return process
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, code, (base / "toolkit.log").read_text())
