"""`us8k deploy model.tar.gz --bucket B --role ARN`: a SageMaker real-time endpoint for a package.

Uploads the archive (from `us8k package`) to s3://B/<prefix>/<name>/model.tar.gz, then creates the
model, endpoint config and endpoint with the sagemaker 2.x SDK's `TensorFlowModel(...).deploy()`:
the SageMaker TensorFlow Serving image of --framework-version (2.19, the newest the SDK knows),
which runs code/inference.py from the archive. One name is used for all three resources.
`--no-wait` (the default) returns once the endpoint is being created; `--wait` polls until it is
InService. `us8k undeploy --name N` (serving.undeploy) deletes endpoint, config and model.

Every AWS call goes through clients built from one boto3 session, so AWS_ENDPOINT_URL,
AWS_DEFAULT_REGION / AWS_REGION, AWS_PROFILE and the credential variables all apply (the tests
drive a moto server that way); nothing names an endpoint URL here.
"""
from __future__ import annotations

import datetime
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

from serving.inference import THRESHOLD_ENV  # noqa: E402

INSTANCE_TYPE = "ml.m5.large"
FRAMEWORK_VERSION = "2.19"  # newest TF Serving image the sagemaker 2.x SDK knows
S3_PREFIX = "us8k"
WAIT_DELAY_S, WAIT_ATTEMPTS = 15, 120  # --wait: poll every 15 s, give up after 30 min
NAME_PREFIX = "us8k"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's rule for these names


class DeployError(RuntimeError):
    """A deploy or undeploy step failed; the message says which and why."""


@dataclass
class Deployment:
    name: str  # endpoint, endpoint config and model
    model_data: str  # s3:// URL of model.tar.gz
    image_uri: str
    instance_type: str
    status: str


def default_name() -> str:
    return f"{NAME_PREFIX}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"


def boto_session(region: str | None = None):
    """A boto3 session with a region (from --region or the environment / profile)."""
    import boto3

    session = boto3.Session(region_name=region) if region else boto3.Session()
    if not session.region_name:
        raise DeployError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    return session


def sagemaker_session(session, bucket: str):
    """A sagemaker.Session whose clients come from `session` (so AWS_ENDPOINT_URL applies).

    Its default bucket is ours: otherwise the SDK derives one from STS, through a client it
    builds with an explicit regional STS URL that ignores AWS_ENDPOINT_URL."""
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    import sagemaker

    return sagemaker.Session(boto_session=session, sagemaker_client=session.client("sagemaker"),
                             sagemaker_runtime_client=session.client("sagemaker-runtime"),
                             default_bucket=bucket)


def upload(session, archive: Path, bucket: str, key: str) -> str:
    import botocore.exceptions

    try:
        session.client("s3").upload_file(str(archive), bucket, key)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise DeployError(f"uploading {archive} to s3://{bucket}/{key} failed: {exc}") from None
    except Exception as exc:  # boto3's transfer manager wraps errors in its own type
        raise DeployError(f"uploading {archive} to s3://{bucket}/{key} failed: {exc}") from None
    return f"s3://{bucket}/{key}"


def deploy(archive: str | Path, *, bucket: str, role: str, name: str | None = None,
           instance_type: str = INSTANCE_TYPE, framework_version: str = FRAMEWORK_VERSION,
           region: str | None = None, wait: bool = False, instance_count: int = 1,
           threshold: float | None = None, s3_prefix: str = S3_PREFIX) -> Deployment:
    """Upload `archive` and create model + endpoint config + endpoint named `name`."""
    import botocore.exceptions

    archive = Path(archive)
    if not archive.is_file():
        raise DeployError(f"model archive not found: {archive}")
    name = name or default_name()
    if not NAME_PATTERN.match(name):
        raise DeployError(f"invalid name {name!r}: up to 63 letters, digits and hyphens, starting alphanumeric")
    session = boto_session(region)
    sm_session = sagemaker_session(session, bucket)
    model_data = upload(session, archive, bucket, f"{s3_prefix}/{name}/model.tar.gz")

    from sagemaker.tensorflow import TensorFlowModel

    env = {THRESHOLD_ENV: f"{threshold:g}"} if threshold is not None else None
    model = TensorFlowModel(model_data=model_data, role=role, framework_version=framework_version,
                            sagemaker_session=sm_session, name=name, env=env)
    try:
        model.deploy(initial_instance_count=instance_count, instance_type=instance_type,
                     endpoint_name=name, wait=False)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise DeployError(f"creating endpoint {name!r} failed: {exc}") from None
    client = session.client("sagemaker")
    if wait:  # boto3's waiter looks at once, then every WAIT_DELAY_S (the SDK's own wait sleeps 30 s first)
        try:
            client.get_waiter("endpoint_in_service").wait(
                EndpointName=name, WaiterConfig={"Delay": WAIT_DELAY_S, "MaxAttempts": WAIT_ATTEMPTS})
        except botocore.exceptions.WaiterError as exc:
            reason = client.describe_endpoint(EndpointName=name).get("FailureReason", exc)
            raise DeployError(f"endpoint {name!r} did not come into service: {reason}") from None
    status = client.describe_endpoint(EndpointName=name)["EndpointStatus"]
    image_uri = client.describe_model(ModelName=name)["PrimaryContainer"]["Image"]
    return Deployment(name, model_data, image_uri, instance_type, status)


def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("archive", metavar="MODEL_TAR_GZ", help="the archive from `us8k package`")
    parser.add_argument("--bucket", required=True, help="S3 bucket for the model archive")
    parser.add_argument("--role", required=True, help="IAM role ARN SageMaker assumes for the model")
    parser.add_argument("--name", default=None, help="endpoint / config / model name (default us8k-<UTC time>)")
    parser.add_argument("--instance-type", default=INSTANCE_TYPE, help=f"default {INSTANCE_TYPE}")
    parser.add_argument("--instance-count", type=int, default=1, help="default 1")
    parser.add_argument("--framework-version", default=FRAMEWORK_VERSION,
                        help=f"TensorFlow Serving image version (default {FRAMEWORK_VERSION})")
    parser.add_argument("--threshold", type=float, default=None,
                        help="endpoint-wide 'undetermined' threshold (default: the model's, else 0.6)")
    parser.add_argument("--s3-prefix", default=S3_PREFIX, help=f"key prefix in the bucket (default {S3_PREFIX})")
    parser.add_argument("--region", default=None, help="AWS region (default: the environment's)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=False,
                        help="wait until the endpoint is InService (default: no)")


def run(args) -> int:
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit("us8k deploy: error: --threshold must be in [0, 1]")
    print(f"us8k deploy: uploading {args.archive} to s3://{args.bucket}/{args.s3_prefix}/ and creating the endpoint",
          flush=True)
    try:
        result = deploy(args.archive, bucket=args.bucket, role=args.role, name=args.name,
                        instance_type=args.instance_type, framework_version=args.framework_version,
                        region=args.region, wait=args.wait, instance_count=args.instance_count,
                        threshold=args.threshold, s3_prefix=args.s3_prefix)
    except DeployError as exc:
        raise SystemExit(f"us8k deploy: error: {exc}") from None
    print(f"us8k deploy: endpoint {result.name} is {result.status}\n"
          f"  model data : {result.model_data}\n"
          f"  image      : {result.image_uri}\n"
          f"  instances  : {args.instance_count} × {result.instance_type}\n"
          f"  try it     : us8k predict clip.wav --endpoint-name {result.name}\n"
          f"  remove it  : us8k undeploy --name {result.name}", flush=True)
    return 0
