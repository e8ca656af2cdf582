"""Strategies and the cluster: which tf.distribute strategy a run uses, and who writes its files.

One process (no `TF_CONFIG`, or a cluster of one task): `make_strategy("auto")` is MirroredStrategy
over the GPUs when there is one, else the default strategy; "mirrored" without GPUs uses every
logical CPU device (`split_cpu`). Several processes: `TF_CONFIG` names the cluster
and this process's task, as TensorFlow reads it and as the SageMaker TensorFlow container sets it
for `distribution={"multi_worker_mirrored_strategy": {"enabled": True}}`:

    {"cluster": {"worker": ["algo-1:8890", "algo-2:8890"]}, "task": {"type": "worker", "index": 0}}

There "auto" and "mirrored" become MultiWorkerMirroredStrategy ("multi_worker"): synchronous
data-parallel training over every worker's devices (each worker's GPUs, else its CPU), gradients
all-reduced across workers, trained by TensorFlow's custom training loop (`models.custom_loop`):
Keras 3's Model.fit does not run under this strategy.

Writing (TensorFlow's multi-worker guide): every worker runs the same callbacks and saves (a save
may need the other workers' collective ops), but only the chief's files are the run's. The chief is
the "chief" task when the cluster has one, else worker 0. `worker_dir(run_dir)` is where this
process writes: the run directory itself on the chief, a temporary directory outside it on every
other worker (`$TMPDIR/us8k-worker-<type>-<index>-<hash of run_dir>`; `prepare_dir` fills it with
a copy of the run directory first, so a resumed worker starts from the chief's checkpoints, and
`remove_worker_dir` deletes it). The input pipeline of a multi-worker run shards by file when
every worker gets at least one shard, else by element (`tfdata.dataset.auto_shard_policy`); with
augmentation it shards by element (`with_shard_policy`), and selection.json records the policy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import tensorflow as tf

from models.errors import TrainingError

TF_CONFIG_ENV = "TF_CONFIG"
STRATEGIES = ("auto", "default", "mirrored")  # as models.config.STRATEGIES
MULTI_WORKER = "multi_worker"  # the resolved name of MultiWorkerMirroredStrategy
WORKER_TASK_TYPES = ("chief", "worker")  # the tasks that train (not "evaluator" or "ps")


class ClusterError(ValueError):
    """TF_CONFIG is not a cluster description this process can use."""


def tf_config(environ=None) -> dict | None:
    """TF_CONFIG as a dict (None when unset or empty); malformed JSON or entries are a ClusterError."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG_ENV, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterError(f"{TF_CONFIG_ENV} is not valid JSON: {error}") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster", {}), dict):
        raise ClusterError(f"{TF_CONFIG_ENV} must be an object with a \"cluster\" object")
    task = value.get("task", {})
    if not isinstance(task, dict):
        raise ClusterError(f"{TF_CONFIG_ENV}: \"task\" must be an object")
    if value.get("cluster") and (task.get("type") not in value["cluster"]
                                 or not 0 <= int(task.get("index", 0)) < len(value["cluster"][task["type"]])):
        raise ClusterError(f"{TF_CONFIG_ENV}: task {task} is not in the cluster {value['cluster']}")
    return value


def num_workers(environ=None) -> int:
    """The training processes of the cluster (chief + workers); 1 without TF_CONFIG."""
    config = tf_config(environ)
    if not config or not config.get("cluster"):
        return 1
    return sum(len(config["cluster"].get(kind, [])) for kind in WORKER_TASK_TYPES) or 1


def task(environ=None) -> tuple[str, int]:
    """(task type, index) of this process; ("chief", 0) without a cluster."""
    config = tf_config(environ)
    if not config or not config.get("cluster"):
        return "chief", 0
    spec = config.get("task", {})
    return str(spec.get("type", "worker")), int(spec.get("index", 0))


def is_chief(environ=None) -> bool:
    """True in a single process, on the "chief" task, and on worker 0 of a cluster without a chief."""
    config = tf_config(environ)
    if not config or not config.get("cluster"):
        return True
    kind, index = task(environ)
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config["cluster"]


def worker_dir(run_dir: str, environ=None) -> str:
    """Where this process writes the run: `run_dir` on the chief, else a temporary directory outside it."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    if is_chief(environ):
        return run_dir
    kind, index = task(environ)
    digest = hashlib.sha256(run_dir.encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"us8k-worker-{kind}-{index}-{digest}")


_PREPARED: set[str] = set()  # worker directories this process has filled (prepare_dir copies once)


def prepare_dir(run_dir: str, environ=None) -> str:
    """`worker_dir(run_dir)`, ready: on a non-chief worker a fresh copy of what `run_dir` holds
    (nothing on a new run; the restored checkpoints on a resumed one, so every worker resumes from
    the same epoch as the chief), made once per process: a second call returns it as it is (the
    job's entry point prepares it first, then `train_models` asks again). The chief's run
    directory is returned as it is."""
    target = worker_dir(run_dir, environ)
    if target == os.path.abspath(os.fspath(run_dir)) or (target in _PREPARED and os.path.isdir(target)):
        return target
    shutil.rmtree(target, ignore_errors=True)
    if os.path.isdir(run_dir):
        shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("*.tmp", "*.tmp.keras"))
    os.makedirs(target, exist_ok=True)
    _PREPARED.add(target)
    return target


def remove_worker_dir(run_dir: str, environ=None) -> None:
    """Delete a non-chief worker's temporary directory (nothing on the chief)."""
    target = worker_dir(run_dir, environ)
    if target != os.path.abspath(os.fspath(run_dir)):
        shutil.rmtree(target, ignore_errors=True)
        _PREPARED.discard(target)


def make_strategy(name: str, environ=None):
    """(resolved name, strategy) for a TrainConfig.strategy; ValueError for an unknown name.

    With a TF_CONFIG cluster of several workers, "auto" and "mirrored" are MultiWorkerMirroredStrategy
    ("multi_worker": TensorFlow reads the cluster from TF_CONFIG itself); "default" stays the
    default strategy (every worker would then train alone: `us8k launch-training` refuses it)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    if name != "default" and num_workers(environ) > 1:
        return MULTI_WORKER, tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if gpus else "default"
    if name == "default":
        return "default", tf.distribute.get_strategy()
    if gpus:
        return "mirrored", tf.distribute.MirroredStrategy(gpus)
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return "mirrored", tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())


def split_cpu(replicas: int) -> None:
    """Make `replicas` logical CPU devices, so MirroredStrategy can run that many replicas without a GPU.

    TensorFlow accepts a logical device configuration only before it initialises its devices
    (the first op or device listing); afterwards it raises RuntimeError.
    A process whose CPU is already split into `replicas` devices (e.g. by the CLI before
    `train_models` runs) is accepted as it is."""
    if replicas < 1:
        raise TrainingError(f"--cpu-replicas must be ≥ 1, got {replicas}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != replicas:
            raise TrainingError(f"cannot split the CPU into {replicas}: TensorFlow is already initialised "
                                f"with {len(tf.config.list_logical_devices('CPU'))} CPU device(s)") from None


def with_shard_policy(dataset, policy: str):
    """`dataset` with tf.data's auto-shard policy set to `policy` ("FILE", "DATA", "OFF", "AUTO").

    The training pipeline with augmentation zips its batches with `tf.data.Dataset.random` (the
    per-batch seeds), a second source FILE sharding cannot split (AutoShardDataset fails on it):
    there a multi-worker run shards by element (DATA): every worker reads and augments the same
    seeded stream and keeps its own batches of it."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, policy)
    return dataset.with_options(options)


def shard_policy_of(dataset) -> str:
    """The auto-shard policy `dataset` carries, by name ("FILE", "DATA", …): how a multi-worker
    strategy splits it over the workers (a single worker reads all of it whatever the policy)."""
    return dataset.options().experimental_distribute.auto_shard_policy.name
