"""Launching the training of `us8k train` as a SageMaker training job (TensorFlow estimator): `us8k launch-training`.

    us8k launch-training --records s3://B/records --output s3://B/runs --role ARN \\
        --instance-type ml.g5.12xlarge --instance-count N [--config RUN/config.json | training flags] \\
        [--spot] [--wait] [--job-name NAME]
    us8k launch-training --status NAME

The job runs models/job_entry.py in the SageMaker TensorFlow training image (framework 2.19,
py312, the newest the sagemaker 2.x SDK knows) on the image's own TensorFlow, Keras and numpy.
What the job gets:
  source_dir      a staged copy of tfdata/*.py and models/*.py plus a two-line job_entry.py at its
                  root (the estimator's entry_point); no requirements.txt, so nothing is installed
                  over the image's TensorFlow
  records         the channel "records" (SM_CHANNEL_RECORDS) from --records, --input-mode File
                  (default: copied to the instance first) or FastFile (read through a mount);
                  TensorFlow here has no s3:// filesystem, so it reads local files either way
  hyperparameters "config": the whole TrainConfig as one JSON text (`TrainConfig.to_dict()`, ≈ 1 kB)
                  and "verbose": 2 (one log line per epoch). The SDK JSON-encodes every value
                  (SageMaker takes at most 2500 characters per value); in the container the
                  toolkit decodes them into SM_HPS, which the entry point reads (the command-line
                  arguments the toolkit also passes do not survive its /bin/sh: job_entry.py)
  distribution    --instance-count 1: none; the config's strategy ("auto") is MirroredStrategy over
                  the instance's GPUs. --instance-count > 1: {"multi_worker_mirrored_strategy":
                  {"enabled": True}}: the container sets TF_CONFIG and the run uses
                  MultiWorkerMirroredStrategy (models.distribute) through TensorFlow's custom training
                  loop (models.custom_loop: Keras 3's Model.fit does not run under it,
                  keras-team/keras#20585); only the chief (algo-1) writes checkpoints, export and
                  report (tests/test_multiworker.py runs two workers on loopback). The config's
                  strategy "default" would make every instance train alone: refused there
  checkpoints     checkpoint_s3_uri = OUTPUT/NAME/checkpoints ↔ /opt/ml/checkpoints, which is the run
                  directory itself (config.json, checkpoints/, history/, selection.json …): a spot
                  job that is interrupted resumes from its last finished epoch
  TensorBoard     OUTPUT/NAME/tensorboard ← /opt/us8k/tensorboard, where the chief writes its
                  TensorBoard logs (CreateTrainingJob refuses a LocalPath under /opt/ml, /tmp or
                  /usr/local/nvidia, as the SDK's users report; the debugger hook and profiler are off)
  outputs         OUTPUT/NAME/output/model.tar.gz: the export (model/1/ + metadata.json);
                  OUTPUT/NAME/output/output.tar.gz: report/, selection.json, config.json …
  metrics         metric_definitions over the per-epoch Keras lines: accuracy, loss, val_accuracy,
                  val_loss, input_stall (the epoch's wait on tf.data / step time), and test_accuracy
                  from the entry point's last line
`model_dir=False`: the estimator otherwise passes an s3:// model dir the script cannot write.
`--status NAME` prints the job's status, its last status transitions, its final metrics and its
artifacts (DescribeTrainingJob). Every AWS call goes through one boto3 session (`cloud.aws`), so
AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and the credential variables apply. What the job is asked for
is one `JobRequest`; the names the job and this launcher share live in `models.job_contract`.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from cloud.aws import sagemaker_session
from models.config import TrainConfig
from models.errors import LaunchError
from models.job_contract import (
    CHANNEL,
    CHECKPOINT_DIR,
    ENTRY_POINT,
    LOG_PREFIX,
    RESERVED_LOCAL_PATHS,
    SOURCE_PACKAGES,
    TENSORBOARD_DIR,
)

FRAMEWORK_VERSION = "2.19.0"  # newest TensorFlow training image the sagemaker 2.x SDK knows
PY_VERSION = "py312"
INPUT_MODES = ("File", "FastFile")
DEFAULT_INSTANCE_TYPE = "ml.g5.12xlarge"  # 4 GPUs
DEFAULT_VOLUME_GB = 30
DEFAULT_JOB_PREFIX = "us8k-train"
MAX_RUN_S = 24 * 3600
HYPERPARAMETER_LIMIT = 2500  # SageMaker: characters per hyperparameter value
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# One Keras line per epoch (verbose 2): "3/3 - 2s - 700ms/step - accuracy: 0.1 - loss: 2.3 - val_accuracy: …"
METRIC_DEFINITIONS = [
    {"Name": "accuracy", "Regex": r" - accuracy: ([0-9.]+)"},
    {"Name": "loss", "Regex": r" - loss: ([0-9.]+)"},
    {"Name": "val_accuracy", "Regex": r" - val_accuracy: ([0-9.]+)"},
    {"Name": "val_loss", "Regex": r" - val_loss: ([0-9.]+)"},
    {"Name": "input_stall", "Regex": r" - input_stall: ([0-9.]+(?:e[-+][0-9]+)?)"},  # Keras prints < 1e-3 as 1.2e-04
    {"Name": "test_accuracy", "Regex": LOG_PREFIX + r": test_accuracy: ([0-9.]+)"},
]
SHIM = '''"""SageMaker entry point of `us8k launch-training`: models.job_entry, shipped beside it."""
import sys

from models.job_entry import main

sys.exit(main())
'''


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """One training job as asked: where the records are and the outputs go, the role, the instances,
    how the records are read, spot capacity and limits, and the run's TrainConfig."""

    records: str  # s3://BUCKET/records
    output: str  # s3://BUCKET/runs: NAME/output/model.tar.gz, NAME/checkpoints/, NAME/tensorboard/
    role: str  # the SageMaker execution role's ARN
    config: TrainConfig = TrainConfig()
    job_name: str | None = None  # default DEFAULT_JOB_PREFIX-<UTC time>
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    input_mode: str = "File"
    spot: bool = False
    max_run: int = MAX_RUN_S
    max_wait: int | None = None  # spot: seconds of training plus waiting for capacity (default max_run)
    volume_size: int = DEFAULT_VOLUME_GB
    wait: bool = False  # wait for the job to finish, streaming its log


# ---------------------------------------------------------------------------- what the job gets
def stage_source_dir(target: str | Path) -> Path:
    """Write the job's source_dir: tfdata/*.py, models/*.py and the entry point at its root."""
    root = Path(__file__).resolve().parent.parent
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for package in SOURCE_PACKAGES:
        (target / package).mkdir(exist_ok=True)
        for source in sorted((root / package).glob("*.py")):
            shutil.copy2(source, target / package / source.name)
    (target / ENTRY_POINT).write_text(SHIM)
    return target


def job_hyperparameters(config: TrainConfig, verbose: int = 2) -> dict:
    """The job's hyperparameters: the whole TrainConfig as one JSON text under "config", and "verbose"."""
    hps = {"config": json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":")), "verbose": verbose}
    for name, value in hps.items():
        sent = json.dumps(value)  # what the SDK sends for the value
        if len(sent) > HYPERPARAMETER_LIMIT:
            raise LaunchError(f"hyperparameter {name} is {len(sent)} characters as sent; "
                              f"SageMaker takes at most {HYPERPARAMETER_LIMIT}")
    return hps


def check_local_path(path: str) -> str:
    """A TensorBoard LocalPath CreateTrainingJob accepts (none under its reserved paths)."""
    if any(path.startswith(p) for p in RESERVED_LOCAL_PATHS):  # the check as reported: a plain prefix
        raise LaunchError(f"TensorBoard local path {path} is under a path SageMaker reserves "
                          f"({', '.join(RESERVED_LOCAL_PATHS)})")
    return path


def distribution(instance_count: int) -> dict | None:
    """None on one instance (MirroredStrategy over its GPUs); MultiWorkerMirroredStrategy on several."""
    if instance_count > 1:
        return {"multi_worker_mirrored_strategy": {"enabled": True}}
    return None


def check_s3(url: str, flag: str) -> str:
    if not re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", url or ""):
        raise LaunchError(f"{flag} must be an s3://BUCKET/prefix URL, got {url!r}")
    return url.rstrip("/")


def default_job_name(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{DEFAULT_JOB_PREFIX}-{now:%Y%m%d-%H%M%S}"


def checked(request: JobRequest) -> JobRequest:
    """The request with its S3 URLs normalised and its job name chosen; a LaunchError for what SageMaker
    would refuse or what would not train one model together."""
    records, output = check_s3(request.records, "--records"), check_s3(request.output, "--output")
    if request.instance_count < 1:
        raise LaunchError(f"--instance-count must be ≥ 1, got {request.instance_count}")
    if request.instance_count > 1 and request.config.strategy == "default":  # each instance would train alone
        raise LaunchError(f"--instance-count {request.instance_count} with --strategy default: every instance "
                          "would train its own model; use --strategy auto or mirrored "
                          "(MultiWorkerMirroredStrategy across the instances)")
    name = request.job_name or default_job_name()
    if not NAME_PATTERN.match(name):
        raise LaunchError(f"invalid job name {name!r}: up to 63 letters, digits and hyphens")
    return dataclasses.replace(request, records=records, output=output, job_name=name)


def build_estimator(request: JobRequest, *, session, source_dir: Path):
    """The sagemaker TensorFlow estimator for one checked request (nothing is sent yet)."""
    from sagemaker.debugger import TensorBoardOutputConfig  # the aws extra
    from sagemaker.tensorflow import TensorFlow  # the aws extra

    output, name = request.output, request.job_name
    return TensorFlow(
        entry_point=ENTRY_POINT, source_dir=str(source_dir), role=request.role, instance_type=request.instance_type,
        instance_count=request.instance_count, framework_version=FRAMEWORK_VERSION, py_version=PY_VERSION,
        hyperparameters=job_hyperparameters(request.config), distribution=distribution(request.instance_count),
        model_dir=False, output_path=output, code_location=output,  # the SDK adds NAME/source/sourcedir.tar.gz
        checkpoint_s3_uri=f"{output}/{name}/checkpoints", checkpoint_local_path=CHECKPOINT_DIR,
        tensorboard_output_config=TensorBoardOutputConfig(
            s3_output_path=f"{output}/{name}/tensorboard",
            container_local_output_path=check_local_path(TENSORBOARD_DIR)),
        debugger_hook_config=False, disable_profiler=True, metric_definitions=METRIC_DEFINITIONS,
        use_spot_instances=request.spot, max_run=request.max_run,
        max_wait=(request.max_wait or request.max_run) if request.spot else None,
        volume_size=request.volume_size, sagemaker_session=session, base_job_name=DEFAULT_JOB_PREFIX,
        tags=[{"Key": "us8k:job", "Value": "launch-training"}])


def quiet_session(sm_session):
    """The sagemaker Session with the SDK's telemetry off: it would call an AWS-owned S3 URL
    outside AWS_ENDPOINT_URL on every fit()."""
    config = dict(sm_session.sagemaker_config or {})
    config.setdefault("SchemaVersion", "1.0")
    config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})["TelemetryOptOut"] = True
    sm_session.sagemaker_config = config
    return sm_session


def launch(request: JobRequest, session, log: Callable[[str], None] = print) -> str:
    """Create the training job of a checked request with the boto3 `session` (and wait for it when the
    request says so); `log` gets the progress lines. Returns the job's name."""
    from sagemaker.inputs import TrainingInput  # the aws extra

    name, config = request.job_name, request.config
    bucket = request.output[len("s3://"):].split("/", 1)[0]
    with tempfile.TemporaryDirectory(prefix="us8k-launch-") as scratch:
        source_dir = stage_source_dir(Path(scratch) / "source")
        files = sorted(str(p.relative_to(source_dir)) for p in source_dir.rglob("*.py"))
        log(f"source_dir {len(files)} files ({', '.join(SOURCE_PACKAGES)}, {ENTRY_POINT}); "
            f"TensorFlow {FRAMEWORK_VERSION} {PY_VERSION} image")
        estimator = build_estimator(request, session=quiet_session(sagemaker_session(session, bucket)),
                                    source_dir=source_dir)
        channel = TrainingInput(request.records, input_mode=request.input_mode, distribution="FullyReplicated")
        log(f"creating job {name}: {request.instance_count} × {request.instance_type}"
            f"{', spot' if request.spot else ''}, records {request.records} ({request.input_mode}), models "
            f"{','.join(config.models)}, {config.epochs} epochs")
        estimator.fit({CHANNEL: channel}, job_name=name, wait=request.wait, logs="All" if request.wait else "None")
    log(f"job {name} created; image {estimator.training_image_uri()}")
    return name


# ---------------------------------------------------------------------------- status
def job_status(client, name: str) -> dict:
    """DescribeTrainingJob, reduced to what `--status` prints."""
    import botocore.exceptions  # the aws extra

    try:
        job = client.describe_training_job(TrainingJobName=name)
    except botocore.exceptions.ClientError as exc:
        raise LaunchError(f"describing training job {name!r} failed: "
                          f"{exc.response.get('Error', {}).get('Message', exc)}") from None
    return {
        "name": job["TrainingJobName"],
        "status": job.get("TrainingJobStatus"),
        "secondary_status": job.get("SecondaryStatus"),
        "failure_reason": job.get("FailureReason"),
        "transitions": [{"status": t.get("Status"), "message": t.get("StatusMessage"),
                         "start": str(t.get("StartTime"))} for t in job.get("SecondaryStatusTransitions", [])],
        "metrics": {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])},
        "model_artifacts": job.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "checkpoint_s3_uri": job.get("CheckpointConfig", {}).get("S3Uri"),
        "instance_type": job.get("ResourceConfig", {}).get("InstanceType"),
        "instance_count": job.get("ResourceConfig", {}).get("InstanceCount"),
        "spot": job.get("EnableManagedSpotTraining", False),
        "billable_seconds": job.get("BillableTimeInSeconds"),
    }


def status_lines(status: dict) -> list[str]:
    """What `--status` prints of a `job_status`: the first line without its command prefix."""
    lines = [f"job {status['name']}: {status['status']} ({status['secondary_status']}); "
             f"{status['instance_count']} × {status['instance_type']}{', spot' if status['spot'] else ''}"]
    if status["failure_reason"]:
        lines.append(f"  failure: {status['failure_reason']}")
    lines += [f"  {t['start']}  {t['status']}: {t['message']}" for t in status["transitions"][-5:]]
    if status["metrics"]:
        lines.append("  final metrics: " + ", ".join(f"{k} {v:g}" for k, v in status["metrics"].items()))
    else:
        lines.append("  final metrics: none yet")
    lines += [f"  model: {status['model_artifacts']}", f"  checkpoints: {status['checkpoint_s3_uri']}"]
    return lines
