"""`us8k launch-training`: the training of `us8k train`, as a SageMaker training job (TensorFlow estimator).

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
artifacts (DescribeTrainingJob). Every AWS call goes through one boto3 session, so
AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and the credential variables apply (serving.deploy).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

from models.config import ConfigError, TrainConfig, read_run_config  # noqa: E402
from models.job_entry import CHECKPOINT_DIR, RESERVED_LOCAL_PATHS, TENSORBOARD_DIR  # noqa: E402

FRAMEWORK_VERSION = "2.19.0"  # newest TensorFlow training image the sagemaker 2.x SDK knows
PY_VERSION = "py312"
CHANNEL = "records"
INPUT_MODES = ("File", "FastFile")
ENTRY_POINT = "job_entry.py"
SOURCE_PACKAGES = ("tfdata", "models")
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
    {"Name": "test_accuracy", "Regex": r"us8k job: test_accuracy: ([0-9.]+)"},
]
SHIM = '''"""SageMaker entry point of `us8k launch-training`: models.job_entry, shipped beside it."""
import sys

from models.job_entry import main

sys.exit(main())
'''


class LaunchError(RuntimeError):
    """A launch or status request that cannot be done; the message says why."""


def _fail(reason: str):
    raise SystemExit(f"us8k launch-training: error: {reason}")


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


def build_estimator(*, session, source_dir: Path, role: str, instance_type: str, instance_count: int,
                    output: str, job_name: str, config: TrainConfig, spot: bool, max_run: int,
                    max_wait: int | None, volume_size: int):
    """The sagemaker TensorFlow estimator for one job (nothing is sent yet)."""
    from sagemaker.debugger import TensorBoardOutputConfig
    from sagemaker.tensorflow import TensorFlow

    return TensorFlow(
        entry_point=ENTRY_POINT, source_dir=str(source_dir), role=role, instance_type=instance_type,
        instance_count=instance_count, framework_version=FRAMEWORK_VERSION, py_version=PY_VERSION,
        hyperparameters=job_hyperparameters(config), distribution=distribution(instance_count),
        model_dir=False, output_path=output, code_location=output,  # the SDK adds NAME/source/sourcedir.tar.gz
        checkpoint_s3_uri=f"{output}/{job_name}/checkpoints", checkpoint_local_path=CHECKPOINT_DIR,
        tensorboard_output_config=TensorBoardOutputConfig(
            s3_output_path=f"{output}/{job_name}/tensorboard",
            container_local_output_path=check_local_path(TENSORBOARD_DIR)),
        debugger_hook_config=False, disable_profiler=True, metric_definitions=METRIC_DEFINITIONS,
        use_spot_instances=spot, max_run=max_run, max_wait=(max_wait or max_run) if spot else None,
        volume_size=volume_size, sagemaker_session=session, base_job_name=DEFAULT_JOB_PREFIX,
        tags=[{"Key": "us8k:job", "Value": "launch-training"}])


def quiet_session(sm_session):
    """The sagemaker Session with the SDK's telemetry off: it would call an AWS-owned S3 URL
    outside AWS_ENDPOINT_URL on every fit()."""
    config = dict(sm_session.sagemaker_config or {})
    config.setdefault("SchemaVersion", "1.0")
    config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})["TelemetryOptOut"] = True
    sm_session.sagemaker_config = config
    return sm_session


# ---------------------------------------------------------------------------- status
def job_status(client, name: str) -> dict:
    """DescribeTrainingJob, reduced to what `--status` prints."""
    import botocore.exceptions

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


def print_status(status: dict) -> None:
    print(f"us8k launch-training: job {status['name']}: {status['status']} ({status['secondary_status']}); "
          f"{status['instance_count']} × {status['instance_type']}{', spot' if status['spot'] else ''}")
    if status["failure_reason"]:
        print(f"  failure: {status['failure_reason']}")
    for t in status["transitions"][-5:]:
        print(f"  {t['start']}  {t['status']}: {t['message']}")
    if status["metrics"]:
        print("  final metrics: " + ", ".join(f"{k} {v:g}" for k, v in status["metrics"].items()))
    else:
        print("  final metrics: none yet")
    print(f"  model: {status['model_artifacts']}")
    print(f"  checkpoints: {status['checkpoint_s3_uri']}", flush=True)


# ---------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from models.train import add_config_arguments

    job = parser.add_argument_group("the job (required unless --status)")
    job.add_argument("--records", metavar="s3://BUCKET/records", help="the ingested records (fold1..fold10/)")
    job.add_argument("--output", metavar="s3://BUCKET/runs",
                     help="the job's prefix: NAME/output/model.tar.gz, NAME/checkpoints/, NAME/tensorboard/")
    job.add_argument("--role", metavar="ARN", help="the SageMaker execution role")
    job.add_argument("--instance-type", default="ml.g5.12xlarge", help="default ml.g5.12xlarge (4 GPUs)")
    job.add_argument("--instance-count", type=int, default=1,
                     help="instances; > 1 runs MultiWorkerMirroredStrategy across them (default 1)")
    job.add_argument("--job-name", help=f"default {DEFAULT_JOB_PREFIX}-<UTC time>")
    job.add_argument("--input-mode", choices=INPUT_MODES, default="File",
                     help="records channel: File copies them to the instance first, FastFile streams them "
                          "(default File)")
    job.add_argument("--spot", action="store_true", help="managed spot training (resumes from checkpoints)")
    job.add_argument("--max-run", type=int, default=MAX_RUN_S, help=f"seconds of training at most ({MAX_RUN_S})")
    job.add_argument("--max-wait", type=int, default=None,
                     help="--spot: seconds of training plus waiting for spot capacity (default --max-run)")
    job.add_argument("--volume-size", type=int, default=30, help="GB of instance storage (default 30)")
    job.add_argument("--region", help="AWS region (default: the environment's)")
    job.add_argument("--wait", action="store_true", help="wait for the job to finish, streaming its log")
    job.add_argument("--config", metavar="RUN/config.json",
                     help="train a run's configuration; training flags given beside it override its values")
    job.add_argument("--status", metavar="NAME", help="report job NAME's state and last metrics, launch nothing")
    add_config_arguments(parser)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """--config's TrainConfig (else the defaults) with every training flag given over it."""
    config = read_run_config(args.config)[0] if args.config else TrainConfig()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(config, **given)


def run(args: argparse.Namespace) -> int:
    from cloud.aws import AwsError, boto_session, sagemaker_session

    try:
        session = boto_session(args.region)
        if args.status:
            print_status(job_status(session.client("sagemaker"), args.status))
            return 0
        missing = [flag for flag in ("records", "output", "role") if not getattr(args, flag)]
        if missing:
            raise LaunchError(f"--{', --'.join(missing)} required (or --status NAME)")
        records, output = check_s3(args.records, "--records"), check_s3(args.output, "--output")
        if args.instance_count < 1:
            raise LaunchError(f"--instance-count must be ≥ 1, got {args.instance_count}")
        config = build_config(args)
        if args.instance_count > 1 and config.strategy == "default":  # each instance would train alone
            raise LaunchError(f"--instance-count {args.instance_count} with --strategy default: every instance "
                              "would train its own model; use --strategy auto or mirrored "
                              "(MultiWorkerMirroredStrategy across the instances)")
        name = args.job_name or default_job_name()
        if not NAME_PATTERN.match(name):
            raise LaunchError(f"invalid job name {name!r}: up to 63 letters, digits and hyphens")
        bucket = output[len("s3://"):].split("/", 1)[0]
        with tempfile.TemporaryDirectory(prefix="us8k-launch-") as scratch:
            source_dir = stage_source_dir(Path(scratch) / "source")
            files = sorted(str(p.relative_to(source_dir)) for p in source_dir.rglob("*.py"))
            print(f"us8k launch-training: source_dir {len(files)} files ({', '.join(SOURCE_PACKAGES)}, "
                  f"{ENTRY_POINT}); TensorFlow {FRAMEWORK_VERSION} {PY_VERSION} image", flush=True)
            estimator = build_estimator(
                session=quiet_session(sagemaker_session(session, bucket)), source_dir=source_dir, role=args.role,
                instance_type=args.instance_type, instance_count=args.instance_count, output=output,
                job_name=name, config=config, spot=args.spot, max_run=args.max_run, max_wait=args.max_wait,
                volume_size=args.volume_size)
            from sagemaker.inputs import TrainingInput

            channel = TrainingInput(records, input_mode=args.input_mode, distribution="FullyReplicated")
            print(f"us8k launch-training: creating job {name}: {args.instance_count} × {args.instance_type}"
                  f"{', spot' if args.spot else ''}, records {records} ({args.input_mode}), models "
                  f"{','.join(config.models)}, {config.epochs} epochs", flush=True)
            estimator.fit({CHANNEL: channel}, job_name=name, wait=args.wait, logs="All" if args.wait else "None")
        print(f"us8k launch-training: job {name} created; image {estimator.training_image_uri()}", flush=True)
        print(f"  checkpoints {output}/{name}/checkpoints, TensorBoard {output}/{name}/tensorboard, "
              f"model {output}/{name}/output/model.tar.gz", flush=True)
        if args.wait:
            print_status(job_status(session.client("sagemaker"), name))
        else:
            print(f"  follow it: us8k launch-training --status {name}", flush=True)
    except (LaunchError, AwsError, ConfigError) as error:
        _fail(str(error))
    except Exception as error:  # botocore / SDK errors: one line
        if type(error).__module__.split(".")[0] in ("botocore", "boto3", "sagemaker"):
            _fail(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit("run through the CLI: us8k launch-training --help")
