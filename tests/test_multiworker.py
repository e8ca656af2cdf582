"""The job under MultiWorkerMirroredStrategy as SageMaker starts it on two instances: `us8k
launch-training --instance-count 2` creates the job on the AWS emulator, and on each "instance" (its
own SAGEMAKER_BASE_DIR tree) SageMaker's training toolkits start the entry point
(tests/sagemaker_container.py): the toolkit builds TF_CONFIG itself (workers only: worker 0 is the
chief); the test changes only its ports, since both instances share this machine's loopback.

Both must finish, their final weights must agree bit for bit (synchronous all-reduce: every update
is the same), and only the chief may leave outputs: the export, the report, the run directory
(checkpoints, history) and the TensorBoard logs. The other worker's model, output, checkpoint and
TensorBoard directories stay empty and its temporary run directory is gone. Training there is
TensorFlow's custom training loop (`models.custom_loop`; Keras 3's Model.fit does not run under MWMS,
keras-team/keras#20585): the run records it, with the same history columns, state.json and
TensorBoard scalars as fit gives. Then the job is restarted as a spot job would be (both instances get
the chief's checkpoints back) with one more epoch: both workers resume from epoch 1 and still agree.
The cluster logic itself (TF_CONFIG, chief, worker directories) is tested directly below.
"""
import csv
import json
import os
import re
import shutil
import socket
import sys
import time

import boto3
import moto_sagemaker
import pytest
import sagemaker_container

import us8k

pytestmark = pytest.mark.timeout(600)

REGION = "us-east-1"
BUCKET = "us8k-mwms"
ROLE = "arn:aws:iam::123456789012:role/us8k-sagemaker"
HOSTS = ("localhost", "127.0.0.1")  # two names that resolve here, as algo-1 and algo-2 do on SageMaker
TRAINING = ["--models", "tiny", "--batch-size", "4", "--val-fold", "2", "--test-fold", "3", "--shuffle-buffer", "64"]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(name, epochs):
    assert us8k.main(["launch-training", "--records", f"s3://{BUCKET}/records", "--output", f"s3://{BUCKET}/runs",
                      "--role", ROLE, "--instance-type", "ml.m5.xlarge", "--instance-count", "2", "--job-name",
                      name, "--epochs", str(epochs), *TRAINING]) == 0
    return boto3.client("sagemaker").describe_training_job(TrainingJobName=name)


def run_cluster(base, described, s3, restore_from=None):
    """The toolkit on two instance trees base/algo-1, base/algo-2; `restore_from` (a run directory) is
    copied into every instance's checkpoint directory first, as SageMaker restores checkpoint_s3_uri on
    each instance of a restarted job."""
    ports = free_ports(2)
    processes, hosts = [], []
    for index, host_name in enumerate(HOSTS):
        host = sagemaker_container.container_tree(base / f"algo-{index + 1}", described, s3, hosts=HOSTS,
                                                  current_host=host_name)
        (host / "tmp").mkdir()
        if restore_from is None:
            (host / "checkpoints").mkdir()  # SageMaker creates it on every instance
        else:
            shutil.copytree(restore_from, host / "checkpoints")
        processes.append(sagemaker_container.run_toolkit(
            host, described["TrainingJobName"], checkpoints=host / "checkpoints",
            tensorboard=host / "tensorboard-local", ports=ports, extra_env={"TMPDIR": str(host / "tmp")},
            wait=False))
        hosts.append(host)
    started = time.monotonic()
    try:
        codes = [p.wait(timeout=400) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"two-worker job: {time.monotonic() - started:.1f} s", file=sys.stderr)
    logs = [(h / "toolkit.log").read_text() for h in hosts]
    return {"hosts": hosts, "codes": codes, "logs": logs}


@pytest.fixture(scope="module")
def job(tmp_path_factory, tone_records_writer):
    base = tmp_path_factory.mktemp("mwms")
    records = base / "records"
    tone_records_writer(records, {1: 16, 4: 16, 2: 8, 3: 8})  # two training shards: one file per worker
    with moto_sagemaker.emulated_aws(REGION, BUCKET):
        s3 = boto3.client("s3")
        for path in sorted(records.rglob("*.tfrecord")):
            s3.upload_file(str(path), BUCKET, f"records/{path.relative_to(records)}")
        yield {"base": base, "s3": s3, "first": launch("us8k-mwms-1", 1), "second": launch("us8k-mwms-2", 2)}


@pytest.fixture(scope="module")
def cluster(job):
    return run_cluster(job["base"] / "instances", job["first"], job["s3"])


@pytest.fixture(scope="module")
def restarted(job, cluster):
    """The job restarted with epochs 2 (a spot interruption after epoch 1) on new instances: the same
    paths, nothing of the first run's trees but the chief's checkpoints, restored on every instance,
    and the records downloaded again (new files). Deviation: a restarted job keeps its
    hyperparameters; a second job with 2 epochs stands in for one interrupted after epoch 1."""
    assert cluster["codes"] == [0, 0], "the first run failed"
    saved = job["base"] / "checkpoint-s3-uri"  # what SageMaker synced to checkpoint_s3_uri
    shutil.copytree(cluster["hosts"][0] / "checkpoints", saved)
    for host in cluster["hosts"]:
        shutil.rmtree(host)
    return run_cluster(job["base"] / "instances", job["second"], job["s3"], restore_from=saved)


def test_the_toolkit_built_the_cluster(cluster):
    """TF_CONFIG as the toolkit builds it for multi_worker_mirrored_strategy, ports aside."""
    for index, log in enumerate(cluster["logs"]):
        config = json.loads(re.search(r"^TF_CONFIG=(\{.*\})$", log, re.M).group(1))
        assert [a.rsplit(":", 1)[0] for a in config["cluster"]["worker"]] == list(HOSTS)
        assert config["task"] == {"index": index, "type": "worker"} and config["environment"] == "cloud"
        assert "Running distributed training job with multi_worker_mirrored_strategy setup" in log


def digests_of(logs):
    return [re.findall(r"final weights tiny sha256 (\w+) sum\|w\| (\S+)", log) for log in logs]


def event_tags(log_dir):
    import tensorflow as tf

    tags = set()
    for path in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_both_workers_finish(cluster):
    assert cluster["codes"] == [0, 0], "\n\n".join(log[-3000:] for log in cluster["logs"])
    assert "task worker 0 of 2 worker(s) (chief)" in cluster["logs"][0]
    assert "task worker 1 of 2 worker(s);" in cluster["logs"][1]
    for log in cluster["logs"]:
        assert "Strategy: multi_worker (2 replicas), batch 4 per replica = 8 global" in log


def test_final_weights_agree(cluster):
    digests = digests_of(cluster["logs"])
    assert all(len(d) == 1 for d in digests), digests
    (sha0, sum0), (sha1, sum1) = digests[0][0], digests[1][0]
    assert float(sum0) == pytest.approx(float(sum1), rel=1e-6)
    assert sha0 == sha1  # the same bytes: every update is the same all-reduced gradient


def test_only_the_chief_writes(cluster):
    chief, worker = cluster["hosts"]
    assert (chief / "model" / "model" / "1" / "saved_model.pb").is_file()
    assert (chief / "output" / "data" / "report" / "report.json").is_file()
    assert (chief / "checkpoints" / "checkpoints" / "tiny" / "last.keras").is_file()
    assert list((chief / "tensorboard-local" / "tiny").rglob("events.out.tfevents.*"))
    for name in ("model", "output/data", "checkpoints"):
        assert list((worker / name).iterdir()) == [], name
    assert not (worker / "tensorboard-local").exists()
    assert list((worker / "tmp").iterdir()) == []  # its temporary run directory was removed
    assert "worker 1 done; its temporary run directory is removed" in cluster["logs"][1]


def test_selection_records_batch_and_sharding(cluster):
    selection = json.loads((cluster["hosts"][0] / "output" / "data" / "selection.json").read_text())
    assert selection["strategy"] == "multi_worker"
    assert selection["workers"] == 2 and selection["replicas"] == 2
    assert selection["per_replica_batch_size"] == 4 and selection["global_batch_size"] == 8
    assert selection["auto_shard_policy"] == "DATA"  # augmentation on: FILE sharding cannot split Dataset.random
    assert selection["training_loop"] == "custom"  # models.custom_loop, not Model.fit


def test_the_custom_loop_writes_what_fit_writes(cluster):
    chief = cluster["hosts"][0]
    run = chief / "checkpoints"
    with open(run / "history" / "tiny.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]  # fit's
    assert [r["epoch"] for r in rows] == ["0"] and float(rows[0]["learning_rate"]) == pytest.approx(1e-3)
    state = json.loads((run / "checkpoints" / "tiny" / "state.json").read_text())
    assert state["epochs_run"] == 1 and state["best_epoch"] == 1
    assert state["best_val_accuracy"] == pytest.approx(float(rows[0]["val_accuracy"]))
    [timing] = state["timing"]
    assert timing["steps"] == 4  # 32 training clips / 8 global: every worker steps 4 times
    assert 0.0 <= state["input_stall"] <= 1.0 and timing["input_wait_seconds"] <= timing["step_seconds"]
    assert (run / "checkpoints" / "tiny" / "best.keras").is_file()
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_input_stall",
            "confusion_matrix"} <= event_tags(chief / "tensorboard-local" / "tiny")
    selection = json.loads((chief / "output" / "data" / "selection.json").read_text())
    assert selection["models"]["tiny"]["input_stall"] == pytest.approx(state["input_stall"])
    epoch_lines = [line for line in cluster["logs"][0].splitlines() if " - val_accuracy: " in line]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("4/4 - ")  # Keras's own progress line


def test_a_restarted_job_resumes_on_every_worker(restarted):
    assert restarted["codes"] == [0, 0], "\n\n".join(log[-3000:] for log in restarted["logs"])
    for log in restarted["logs"]:  # each instance's copy of the run is brought up to date, then resumed
        assert "downloaded again" in log and "[tiny] resuming after epoch 1 of 2" in log
    (sha0, _), (sha1, _) = (d[0] for d in digests_of(restarted["logs"]))
    assert sha0 == sha1
    chief, worker = restarted["hosts"]
    state = json.loads((chief / "checkpoints" / "checkpoints" / "tiny" / "state.json").read_text())
    assert state["epochs_run"] == 2 and [t["epoch"] for t in state["timing"]] == [1, 2]
    for history in (chief / "checkpoints" / "history", chief / "output" / "data" / "history"):  # run, job output
        with open(history / "tiny.csv") as f:  # the first epoch from before the restart
            assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"], history
    assert (chief / "model" / "model" / "1" / "saved_model.pb").is_file()
    assert list((worker / "model").iterdir()) == [] and list((worker / "tmp").iterdir()) == []
    restored = json.loads((worker / "checkpoints" / "checkpoints" / "tiny" / "state.json").read_text())
    assert restored["epochs_run"] == 1  # the worker's instance copy is untouched: it trained in its temporary copy


# ------------------------------------------------------------------- the cluster logic, directly
from models import distribute  # noqa: E402

WORKERS = {"worker": ["a:1", "b:2", "c:3"]}


def env(task, cluster=None):
    return {"TF_CONFIG": json.dumps({"cluster": cluster or WORKERS, "task": task})}


def test_single_process_is_its_own_chief(tmp_path):
    assert distribute.is_chief({}) and distribute.num_workers({}) == 1 and distribute.task({}) == ("chief", 0)
    assert distribute.worker_dir(tmp_path / "run", {}) == str(tmp_path / "run")


def test_worker_zero_is_chief_without_a_chief_task():
    assert distribute.is_chief(env({"type": "worker", "index": 0}))
    assert not distribute.is_chief(env({"type": "worker", "index": 1}))
    assert distribute.num_workers(env({"type": "worker", "index": 2})) == 3
    with_chief = {"chief": ["c:0"], "worker": ["a:1"]}
    assert distribute.is_chief(env({"type": "chief", "index": 0}, with_chief))
    assert not distribute.is_chief(env({"type": "worker", "index": 0}, with_chief))
    assert distribute.num_workers(env({"type": "worker", "index": 0}, with_chief)) == 2


def test_bad_tf_config_is_a_cluster_error():
    with pytest.raises(distribute.ClusterError, match="not valid JSON"):
        distribute.tf_config({"TF_CONFIG": "{"})
    with pytest.raises(distribute.ClusterError, match="not in the cluster"):
        distribute.tf_config(env({"type": "worker", "index": 5}))


def test_a_worker_writes_a_temporary_copy_of_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    run = tmp_path / "run"
    (run / "checkpoints" / "cnn").mkdir(parents=True)
    (run / "checkpoints" / "cnn" / "state.json").write_text("{}")
    (run / "checkpoints" / "cnn" / "last.keras.tmp.keras").write_text("partial")
    worker = env({"type": "worker", "index": 1})
    target = distribute.prepare_dir(run, worker)
    assert target.startswith(str(tmp_path / "tmp")) and target != str(run)
    assert os.path.isfile(os.path.join(target, "checkpoints", "cnn", "state.json"))  # resumes like the chief
    assert not os.path.exists(os.path.join(target, "checkpoints", "cnn", "last.keras.tmp.keras"))
    distribute.remove_worker_dir(run, worker)
    assert not os.path.exists(target) and (run / "checkpoints" / "cnn" / "state.json").is_file()
    chief = env({"type": "worker", "index": 0})
    assert distribute.prepare_dir(run, chief) == str(run)
