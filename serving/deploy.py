"""`us8k deploy model.tar.gz --bucket B --role ARN [--name N]`: create or update a SageMaker endpoint;
`us8k deploy --rollback N`: point it back at the model it served before.

Every deploy uploads the archive (from `us8k package`) to s3://B/<prefix>/N/<stamp>/model.tar.gz and
creates a model and an endpoint config both named N-<stamp> (<stamp>: UTC time YYYYmmdd-HHMMSS-ffffff)
and tagged `us8k:endpoint=N`. The model comes from the sagemaker 2.x SDK's `TensorFlowModel`: the
SageMaker TensorFlow Serving image of --framework-version (2.19, the newest the SDK knows; CPython
3.12, which the package's vendored wheels must match), running code/inference.py from the archive.
When no endpoint N exists it is created on that config. When it exists, it is updated to the new
config (UpdateEndpoint: SageMaker starts the new model's instances, moves the traffic, then retires
the old ones, so the endpoint keeps answering); the old config and model stay, for `--rollback`,
which updates N to the config made before its current one (again and again, one step back each
time). `us8k undeploy --name N` (serving.undeploy) deletes the endpoint and every config and model
tagged for it.

The container's environment belongs to the model, so each deploy sets it anew:
  SAGEMAKER_TFS_ENABLE_BATCHING        "true" (--max-batch > 0) / "false" (--max-batch 0)
  SAGEMAKER_TFS_MAX_BATCH_SIZE         --max-batch: 4 s windows per TF Serving batch (default: the
                                       most a valid request holds, so none is refused)
  SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS   --batch-timeout-ms × 1000 (default 5 ms)
  SAGEMAKER_GUNICORN_WORKERS           --workers (default 2: decode two requests at once)
  SAGEMAKER_GUNICORN_TIMEOUT_SECONDS   60, SageMaker's own limit per invocation (gunicorn's default: 30)
  US8K_THRESHOLD                       --threshold, when given
`--no-wait` (the default) returns once the endpoint is being created or updated; `--wait` polls
until it is InService.

Every AWS call goes through clients built from one boto3 session (cloud.aws), so AWS_ENDPOINT_URL,
AWS_DEFAULT_REGION / AWS_REGION, AWS_PROFILE and the credential variables all apply.
"""
from __future__ import annotations

import datetime
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cloud.aws import AwsError, boto_session, is_missing, sagemaker_session, upload
from serving.inference import MAX_REQUEST_WINDOWS, THRESHOLD_ENV
from tfdata.layout import (GUNICORN_TIMEOUT_ENV, GUNICORN_WORKERS_ENV, TFS_BATCH_TIMEOUT_ENV, TFS_ENABLE_BATCHING_ENV,
                           TFS_MAX_BATCH_SIZE_ENV)

INSTANCE_TYPE = "ml.m5.large"
FRAMEWORK_VERSION = "2.19"  # newest TF Serving image the sagemaker 2.x SDK knows
IMAGE_PYTHON = {"2.19": "3.12"}  # CPython of the images whose Dockerfile was read (2.19: 3.12.10)
S3_PREFIX = "us8k"
DEFAULT_NAME = "us8k"
WAIT_DELAY_S, WAIT_ATTEMPTS = 15, 120  # --wait: poll every 15 s, give up after 30 min
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's rule for these names
STAMP_FORMAT = "%Y%m%d-%H%M%S-%f"  # model and endpoint config names: N-<stamp>
STAMP_PATTERN = r"\d{8}-\d{6}-\d{6}"
MAX_NAME_LENGTH = 63 - len("-20250101-000000-000000")  # N-<stamp> must fit SageMaker's 63 characters
ENDPOINT_TAG = "us8k:endpoint"  # on every model, endpoint config and endpoint `us8k deploy` makes
VARIANT_NAME = "AllTraffic"  # the SDK's name for a single variant
DEFAULT_BATCH_TIMEOUT_MS = 5.0
DEFAULT_WORKERS = 2
GUNICORN_TIMEOUT_S = 60  # SageMaker ends a real-time invocation after 60 s anyway
IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


class DeployError(AwsError):
    """A deploy, rollback or undeploy step failed; the message says which and why."""


@dataclass
class Deployment:
    name: str  # the endpoint
    action: str  # "created", "updated" or "rolled back"
    config_name: str  # the endpoint config it now runs (named like its model)
    model_name: str
    previous_config: str | None  # what it ran before an update or rollback
    model_data: str  # s3:// URL of model.tar.gz
    image_uri: str
    instance_type: str
    instance_count: int
    status: str
    environment: dict[str, str] = field(default_factory=dict)


def version_name(name: str, now: datetime.datetime | None = None) -> str:
    """The model and endpoint config name of one deploy of endpoint `name`: name-<UTC stamp>."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{name}-{now:{STAMP_FORMAT}}"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise DeployError(f"invalid name {name!r}: up to {MAX_NAME_LENGTH} letters, digits and hyphens, "
                          "starting alphanumeric (models and configs are named NAME-<UTC stamp>)")
    return name


def container_environment(*, max_batch: int = MAX_REQUEST_WINDOWS, batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
                          workers: int = DEFAULT_WORKERS, threshold: float | None = None) -> dict[str, str]:
    """The model container's environment (the container's own variable names; see the module doc)."""
    if max_batch < 0:
        raise DeployError(f"--max-batch must be ≥ 0 (0 turns batching off), got {max_batch}")
    if batch_timeout_ms < 0:
        raise DeployError(f"--batch-timeout-ms must be ≥ 0, got {batch_timeout_ms:g}")
    if workers < 1:
        raise DeployError(f"--workers must be ≥ 1, got {workers}")
    env = {TFS_ENABLE_BATCHING_ENV: "true" if max_batch else "false"}
    if max_batch:
        env[TFS_MAX_BATCH_SIZE_ENV] = str(int(max_batch))
        env[TFS_BATCH_TIMEOUT_ENV] = str(int(round(batch_timeout_ms * 1000)))
    env[GUNICORN_WORKERS_ENV] = str(int(workers))
    env[GUNICORN_TIMEOUT_ENV] = str(GUNICORN_TIMEOUT_S)
    if threshold is not None:
        env[THRESHOLD_ENV] = f"{threshold:g}"
    return env


def packaged_python(archive: str | Path) -> str | None:
    """The CPython version the archive's vendored extension modules are built for (None: none found)."""
    versions = set()
    with tarfile.open(archive, "r:*") as tar:
        for name in tar.getnames():
            match = re.search(r"^code/lib/.*\.cpython-3(\d+)-x86_64-linux-gnu\.so$", name)
            if match:
                versions.add(f"3.{match.group(1)}")
    return versions.pop() if len(versions) == 1 else None


# ---------------------------------------------------------------------------- what a name owns
def _tagged_for(client, arn: str, name: str) -> bool:
    tags = [tag for page in client.get_paginator("list_tags").paginate(ResourceArn=arn) for tag in page["Tags"]]
    return {"Key": ENDPOINT_TAG, "Value": name} in tags


def owned_versions(client, name: str) -> tuple[list[str], list[str]]:
    """(endpoint config names, model names) `us8k deploy` made for endpoint `name`, oldest first:
    named name-<stamp> and tagged us8k:endpoint=name (the tag tells "a" from "a-b"'s versions)."""
    pattern = re.compile(rf"^{re.escape(name)}-{STAMP_PATTERN}$")
    configs = [(c["EndpointConfigName"], c["EndpointConfigArn"])
               for page in client.get_paginator("list_endpoint_configs").paginate(NameContains=name)
               for c in page["EndpointConfigs"]]
    models = [(m["ModelName"], m["ModelArn"])
              for page in client.get_paginator("list_models").paginate(NameContains=name)
              for m in page["Models"]]

    def mine(resources):
        return sorted(n for n, arn in resources if pattern.match(n) and _tagged_for(client, arn, name))

    return mine(configs), mine(models)


def _describe_endpoint(client, name: str) -> dict | None:
    import botocore.exceptions

    try:
        return client.describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError as exc:
        if is_missing(exc):
            return None
        raise DeployError(f"describing endpoint {name!r} failed: {exc}") from None


def _wait_in_service(client, name: str) -> None:
    import botocore.exceptions

    try:  # boto3's waiter looks at once, then every WAIT_DELAY_S (the SDK's own wait sleeps 30 s first)
        client.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": WAIT_DELAY_S, "MaxAttempts": WAIT_ATTEMPTS})
    except botocore.exceptions.WaiterError as exc:
        reason = client.describe_endpoint(EndpointName=name).get("FailureReason", exc)
        raise DeployError(f"endpoint {name!r} did not come into service: {reason}") from None


def _summary(client, name: str, action: str, config_name: str, previous: str | None) -> Deployment:
    endpoint = client.describe_endpoint(EndpointName=name)
    variant = client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0]
    container = client.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
    return Deployment(name, action, config_name, variant["ModelName"], previous, container.get("ModelDataUrl", ""),
                      container.get("Image", ""), variant.get("InstanceType", ""),
                      int(variant.get("InitialInstanceCount", 0)), endpoint["EndpointStatus"],
                      dict(container.get("Environment", {})))


# ---------------------------------------------------------------------------- deploy, rollback
def deploy(archive: str | Path, *, bucket: str, role: str, name: str = DEFAULT_NAME,
           instance_type: str = INSTANCE_TYPE, framework_version: str = FRAMEWORK_VERSION,
           region: str | None = None, wait: bool = False, instance_count: int = 1,
           threshold: float | None = None, max_batch: int = MAX_REQUEST_WINDOWS,
           batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS, workers: int = DEFAULT_WORKERS,
           s3_prefix: str = S3_PREFIX, log: Callable[[str], None] | None = None) -> Deployment:
    """Upload `archive`, create model + endpoint config N-<stamp>, then create endpoint `name` on it
    or update the existing one to it (the previous config and model are kept)."""
    import botocore.exceptions

    log = log or (lambda message: None)
    archive = Path(archive)
    if not archive.is_file():
        raise DeployError(f"model archive not found: {archive}")
    check_name(name)
    env = container_environment(max_batch=max_batch, batch_timeout_ms=batch_timeout_ms, workers=workers,
                                threshold=threshold)
    try:
        vendored = packaged_python(archive)
    except (tarfile.TarError, OSError) as exc:
        raise DeployError(f"{archive} is not a model.tar.gz from `us8k package`: {exc}") from None
    expected = IMAGE_PYTHON.get(framework_version)
    if vendored and expected and vendored != expected:
        raise DeployError(f"{archive} vendors wheels for CPython {vendored}, the TF Serving {framework_version} image "
                          f"runs {expected}: rebuild it with `us8k package --python-version {expected}`")
    if vendored and not expected:
        log(f"note: the CPython of the TF Serving {framework_version} image is not known here; the archive "
            f"vendors wheels for {vendored}")
    session = boto_session(region)
    client = session.client("sagemaker")
    existing = _describe_endpoint(client, name)
    if existing and existing["EndpointStatus"] in IN_PROGRESS:
        raise DeployError(f"endpoint {name!r} is {existing['EndpointStatus']}: wait until it is InService, then deploy")
    version = version_name(name)
    sm_session = sagemaker_session(session, bucket)
    key = f"{s3_prefix}/{name}/{version[len(name) + 1:]}/model.tar.gz"
    log(f"uploading {archive} to s3://{bucket}/{key}")
    model_data = upload(session, archive, bucket, key)

    from sagemaker.tensorflow import TensorFlowModel

    tags = [{"Key": ENDPOINT_TAG, "Value": name}]
    created: list[tuple[str, str]] = []
    try:
        TensorFlowModel(model_data=model_data, role=role, framework_version=framework_version,
                        sagemaker_session=sm_session, name=version, env=env).create(
            instance_type=instance_type, tags=tags)
        created.append(("model", version))
        client.create_endpoint_config(
            EndpointConfigName=version, Tags=tags,
            ProductionVariants=[{"VariantName": VARIANT_NAME, "ModelName": version, "InstanceType": instance_type,
                                 "InitialInstanceCount": instance_count, "InitialVariantWeight": 1.0}])
        created.append(("config", version))
        log(f"created model and endpoint config {version}")
        if existing:
            log(f"updating endpoint {name} from {existing['EndpointConfigName']} to {version} "
                f"(the old config and model are kept)")
            client.update_endpoint(EndpointName=name, EndpointConfigName=version)
        else:
            log(f"creating endpoint {name} on {version}")
            client.create_endpoint(EndpointName=name, EndpointConfigName=version, Tags=tags)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ValueError) as exc:
        _remove(client, created)
        step = "updating" if existing else "creating"
        raise DeployError(f"{step} endpoint {name!r} failed: {exc}") from None
    if wait:
        _wait_in_service(client, name)
    return _summary(client, name, "updated" if existing else "created", version,
                    existing["EndpointConfigName"] if existing else None)


def rollback(name: str, region: str | None = None, wait: bool = False,
             log: Callable[[str], None] | None = None) -> Deployment:
    """Update endpoint `name` to the config `us8k deploy` made for it before its current one."""
    import botocore.exceptions

    log = log or (lambda message: None)
    client = boto_session(region).client("sagemaker")
    endpoint = _describe_endpoint(client, name)
    if endpoint is None:
        raise DeployError(f"no endpoint named {name!r}")
    if endpoint["EndpointStatus"] in IN_PROGRESS:
        raise DeployError(f"endpoint {name!r} is {endpoint['EndpointStatus']}: wait until it is InService")
    current = endpoint["EndpointConfigName"]
    configs, models = owned_versions(client, name)
    if current not in configs:
        raise DeployError(f"endpoint {name!r} runs config {current!r}, which `us8k deploy` did not make "
                          f"(no {ENDPOINT_TAG}={name} tag): nothing to roll back to")
    earlier = configs[:configs.index(current)]
    if not earlier:
        raise DeployError(f"endpoint {name!r} runs its oldest config {current!r}: nothing to roll back to")
    target = earlier[-1]
    variants = client.describe_endpoint_config(EndpointConfigName=target)["ProductionVariants"]
    gone = [v["ModelName"] for v in variants if v["ModelName"] not in models]
    if gone:
        raise DeployError(f"config {target!r} serves model {gone[0]!r}, which no longer exists")
    log(f"rolling endpoint {name} back from {current} to {target}")
    try:
        client.update_endpoint(EndpointName=name, EndpointConfigName=target)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise DeployError(f"rolling back endpoint {name!r} failed: {exc}") from None
    if wait:
        _wait_in_service(client, name)
    return _summary(client, name, "rolled back", target, current)


def _remove(client, created: list[tuple[str, str]]) -> None:
    """Best effort: delete what a failed deploy made, newest first (so a rollback never finds it)."""
    for kind, resource in reversed(created):
        try:
            if kind == "config":
                client.delete_endpoint_config(EndpointConfigName=resource)
            else:
                client.delete_model(ModelName=resource)
        except Exception:  # noqa: BLE001  (the deploy error is the one to report)
            pass


# ---------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("archive", metavar="MODEL_TAR_GZ", nargs="?", help="the archive from `us8k package`")
    parser.add_argument("--bucket", default=None, help="S3 bucket for the model archive (required to deploy)")
    parser.add_argument("--role", default=None, help="IAM role ARN SageMaker assumes for the model (required to deploy)")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help=f"endpoint name (default {DEFAULT_NAME}); an existing endpoint is updated in place")
    parser.add_argument("--rollback", metavar="NAME", default=None,
                        help="instead of deploying, point endpoint NAME back at its previous model")
    parser.add_argument("--instance-type", default=INSTANCE_TYPE, help=f"default {INSTANCE_TYPE}")
    parser.add_argument("--instance-count", type=int, default=1, help="default 1")
    parser.add_argument("--framework-version", default=FRAMEWORK_VERSION,
                        help=f"TensorFlow Serving image version (default {FRAMEWORK_VERSION})")
    parser.add_argument("--threshold", type=float, default=None,
                        help="endpoint-wide 'undetermined' threshold (default: the model's, else 0.6)")
    parser.add_argument("--max-batch", type=int, default=MAX_REQUEST_WINDOWS,
                        help="most 4 s windows per TF Serving batch; 0 turns batching off (default "
                             f"{MAX_REQUEST_WINDOWS}, the most one valid request holds: a request over it gets 413)")
    parser.add_argument("--batch-timeout-ms", type=float, default=DEFAULT_BATCH_TIMEOUT_MS,
                        help=f"how long TF Serving waits to fill a batch (default {DEFAULT_BATCH_TIMEOUT_MS:g})")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"gunicorn workers running the handler (default {DEFAULT_WORKERS})")
    parser.add_argument("--s3-prefix", default=S3_PREFIX, help=f"key prefix in the bucket (default {S3_PREFIX})")
    parser.add_argument("--region", default=None, help="AWS region (default: the environment's)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=False,
                        help="wait until the endpoint is InService (default: no)")


def _fail(reason: str):
    raise SystemExit(f"us8k deploy: error: {reason}")


def run(args) -> int:
    def log(message):
        print(f"us8k deploy: {message}", flush=True)

    try:
        if args.rollback:
            if args.archive:
                _fail("--rollback NAME takes no MODEL_TAR_GZ")
            result = rollback(args.rollback, args.region, args.wait, log)
        else:
            missing = [what for what, value in (("MODEL_TAR_GZ", args.archive), ("--bucket", args.bucket),
                                                ("--role", args.role)) if not value]
            if missing:
                _fail(f"deploying needs {', '.join(missing)} (or --rollback NAME)")
            if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
                _fail("--threshold must be in [0, 1]")
            if args.instance_count < 1:
                _fail("--instance-count must be at least 1")
            result = deploy(args.archive, bucket=args.bucket, role=args.role, name=args.name,
                            instance_type=args.instance_type, framework_version=args.framework_version,
                            region=args.region, wait=args.wait, instance_count=args.instance_count,
                            threshold=args.threshold, max_batch=args.max_batch,
                            batch_timeout_ms=args.batch_timeout_ms, workers=args.workers,
                            s3_prefix=args.s3_prefix, log=log)
    except AwsError as exc:  # DeployError, or cloud.aws's own (region, upload)
        _fail(str(exc))
    previous = f" (was {result.previous_config}, kept)" if result.previous_config else ""
    environment = " ".join(f"{key}={value}" for key, value in sorted(result.environment.items()))
    print(f"us8k deploy: endpoint {result.name} {result.action}: {result.status} on {result.config_name}{previous}\n"
          f"  model      : {result.model_name}\n"
          f"  model data : {result.model_data}\n"
          f"  image      : {result.image_uri}\n"
          f"  environment: {environment}\n"
          f"  instances  : {result.instance_count} × {result.instance_type}\n"
          f"  try it     : us8k predict clip.wav --endpoint-name {result.name}\n"
          f"  roll back  : us8k deploy --rollback {result.name}\n"
          f"  remove it  : us8k undeploy --name {result.name}", flush=True)
    return 0
