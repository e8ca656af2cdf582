"""Deploy a model.tar.gz to a SageMaker endpoint (`deploy`: create or update it), and point an endpoint
back at the model it served before (`rollback`); the command line is cli/deploy.py.

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

What a deploy makes is one `DeployConfig`, passed whole. The container's environment belongs to the
model, so each deploy sets it anew (from the config's fields, which are `us8k deploy`'s flags):
  SAGEMAKER_TFS_ENABLE_BATCHING        "true" (max_batch > 0) / "false" (max_batch 0)
  SAGEMAKER_TFS_MAX_BATCH_SIZE         max_batch: 4 s windows per TF Serving batch (default: the
                                       most a valid request holds, so none is refused)
  SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS   batch_timeout_ms × 1000 (default 5 ms)
  SAGEMAKER_GUNICORN_WORKERS           workers (default 2: decode two requests at once)
  SAGEMAKER_GUNICORN_TIMEOUT_SECONDS   60, SageMaker's own limit per invocation (gunicorn's default: 30)
  US8K_THRESHOLD                       threshold, when given
Without `wait` (the default) a deploy returns once the endpoint is being created or updated; with
it, it polls until the endpoint is InService. Failures raise `DeployError` (a cloud.aws.AwsError)
with the reason.

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

import botocore.exceptions

from cloud.aws import AwsError, boto_session, is_missing, sagemaker_session, upload
from serving.inference import MAX_REQUEST_WINDOWS, THRESHOLD_ENV
from tfdata.layout import (
    GUNICORN_TIMEOUT_ENV,
    GUNICORN_WORKERS_ENV,
    TFS_BATCH_TIMEOUT_ENV,
    TFS_ENABLE_BATCHING_ENV,
    TFS_MAX_BATCH_SIZE_ENV,
)

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


@dataclass(frozen=True)
class DeployConfig:
    """One deploy: where the archive goes, the endpoint, its instances and its container's environment."""
    bucket: str  # S3 bucket for the model archive
    role: str  # IAM role ARN SageMaker assumes for the model
    name: str = DEFAULT_NAME  # the endpoint; an existing one is updated in place
    instance_type: str = INSTANCE_TYPE
    instance_count: int = 1
    framework_version: str = FRAMEWORK_VERSION  # of the TensorFlow Serving image
    threshold: float | None = None  # endpoint-wide 'undetermined' threshold (None: the model's)
    max_batch: int = MAX_REQUEST_WINDOWS  # 4 s windows per TF Serving batch; 0 turns batching off
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS  # how long TF Serving waits to fill a batch
    workers: int = DEFAULT_WORKERS  # gunicorn workers running the handler
    s3_prefix: str = S3_PREFIX  # key prefix in the bucket
    region: str | None = None  # AWS region (None: the environment's)
    wait: bool = False  # return only once the endpoint is InService


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


def container_environment(config: DeployConfig) -> dict[str, str]:
    """The model container's environment (the container's own variable names; see the module doc)."""
    if config.max_batch < 0:
        raise DeployError(f"--max-batch must be ≥ 0 (0 turns batching off), got {config.max_batch}")
    if config.batch_timeout_ms < 0:
        raise DeployError(f"--batch-timeout-ms must be ≥ 0, got {config.batch_timeout_ms:g}")
    if config.workers < 1:
        raise DeployError(f"--workers must be ≥ 1, got {config.workers}")
    env = {TFS_ENABLE_BATCHING_ENV: "true" if config.max_batch else "false"}
    if config.max_batch:
        env[TFS_MAX_BATCH_SIZE_ENV] = str(int(config.max_batch))
        env[TFS_BATCH_TIMEOUT_ENV] = str(int(round(config.batch_timeout_ms * 1000)))
    env[GUNICORN_WORKERS_ENV] = str(int(config.workers))
    env[GUNICORN_TIMEOUT_ENV] = str(GUNICORN_TIMEOUT_S)
    if config.threshold is not None:
        env[THRESHOLD_ENV] = f"{config.threshold:g}"
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
    try:
        return client.describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError as exc:
        if is_missing(exc):
            return None
        raise DeployError(f"describing endpoint {name!r} failed: {exc}") from None


def _wait_in_service(client, name: str) -> None:
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
def deploy(archive: str | Path, config: DeployConfig, log: Callable[[str], None] | None = None) -> Deployment:
    """Upload `archive`, create model + endpoint config N-<stamp>, then create endpoint N (config.name)
    on it or update the existing one to it (the previous config and model are kept)."""
    log = log or (lambda message: None)
    archive, name = Path(archive), config.name
    if not archive.is_file():
        raise DeployError(f"model archive not found: {archive}")
    check_name(name)
    container_environment(config)  # refuse bad knobs before any AWS call
    _check_python(archive, config.framework_version, log)
    session = boto_session(config.region)
    client = session.client("sagemaker")
    existing = _describe_endpoint(client, name)
    if existing and existing["EndpointStatus"] in IN_PROGRESS:
        raise DeployError(f"endpoint {name!r} is {existing['EndpointStatus']}: wait until it is InService, then deploy")
    version = version_name(name)
    sm_session = sagemaker_session(session, config.bucket)
    key = f"{config.s3_prefix}/{name}/{version[len(name) + 1:]}/model.tar.gz"
    log(f"uploading {archive} to s3://{config.bucket}/{key}")
    model_data = upload(session, archive, config.bucket, key)
    created: list[tuple[str, str]] = []
    try:
        _create_version(client, sm_session, config, version, model_data, created)
        log(f"created model and endpoint config {version}")
        if existing:
            log(f"updating endpoint {name} from {existing['EndpointConfigName']} to {version} "
                f"(the old config and model are kept)")
            client.update_endpoint(EndpointName=name, EndpointConfigName=version)
        else:
            log(f"creating endpoint {name} on {version}")
            client.create_endpoint(EndpointName=name, EndpointConfigName=version, Tags=_tags(name))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ValueError) as exc:
        _remove(client, created)
        step = "updating" if existing else "creating"
        raise DeployError(f"{step} endpoint {name!r} failed: {exc}") from None
    if config.wait:
        _wait_in_service(client, name)
    return _summary(client, name, "updated" if existing else "created", version,
                    existing["EndpointConfigName"] if existing else None)


def _check_python(archive: Path, framework_version: str, log: Callable[[str], None]) -> None:
    """Refuse an archive whose vendored wheels are built for another CPython than the image's."""
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


def _tags(name: str) -> list[dict[str, str]]:
    return [{"Key": ENDPOINT_TAG, "Value": name}]


def _create_version(client, sm_session, config: DeployConfig, version: str, model_data: str,
                    created: list[tuple[str, str]]) -> None:
    """Model and endpoint config `version`, tagged for the endpoint; each is added to `created` once made."""
    from sagemaker.tensorflow import TensorFlowModel  # the aws extra; slow to import

    TensorFlowModel(model_data=model_data, role=config.role, framework_version=config.framework_version,
                    sagemaker_session=sm_session, name=version, env=container_environment(config)).create(
        instance_type=config.instance_type, tags=_tags(config.name))
    created.append(("model", version))
    client.create_endpoint_config(
        EndpointConfigName=version, Tags=_tags(config.name),
        ProductionVariants=[{"VariantName": VARIANT_NAME, "ModelName": version, "InstanceType": config.instance_type,
                             "InitialInstanceCount": config.instance_count, "InitialVariantWeight": 1.0}])
    created.append(("config", version))


def rollback(name: str, region: str | None = None, wait: bool = False,
             log: Callable[[str], None] | None = None) -> Deployment:
    """Update endpoint `name` to the config `us8k deploy` made for it before its current one."""
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
