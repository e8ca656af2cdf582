"""`us8k deploy`: deploy a model.tar.gz to a SageMaker endpoint, or roll it back (serving.deploy).

    us8k deploy MODEL_TAR_GZ --bucket B --role ARN [--name N] [--instance-type T] [--instance-count C]
                [--framework-version V] [--threshold T] [--max-batch M] [--batch-timeout-ms MS]
                [--workers W] [--s3-prefix P] [--region R] [--wait | --no-wait]
    us8k deploy --rollback N [--region R] [--wait]

Prints what the endpoint now runs, and the commands to try it, roll it back and remove it.
"""
from __future__ import annotations

import argparse

from cli import CommandError
from cli.output import progress
from cloud.aws import AwsError

ERRORS = (AwsError,)  # DeployError, or cloud.aws's own (region, upload)


def add_arguments(parser) -> None:
    from serving.deploy import (
        DEFAULT_BATCH_TIMEOUT_MS,
        DEFAULT_NAME,
        DEFAULT_WORKERS,
        FRAMEWORK_VERSION,
        INSTANCE_TYPE,
        S3_PREFIX,
    )
    from serving.inference import MAX_REQUEST_WINDOWS

    parser.add_argument("archive", metavar="MODEL_TAR_GZ", nargs="?", help="the archive from `us8k package`")
    parser.add_argument("--bucket", default=None, help="S3 bucket for the model archive (required to deploy)")
    parser.add_argument("--role", default=None,
                        help="IAM role ARN SageMaker assumes for the model (required to deploy)")
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


def _deploy_config(args):
    """The DeployConfig of the flags; refuses a deploy without an archive, bucket and role."""
    from serving.deploy import DeployConfig

    missing = [what for what, value in (("MODEL_TAR_GZ", args.archive), ("--bucket", args.bucket),
                                        ("--role", args.role)) if not value]
    if missing:
        raise CommandError(f"deploying needs {', '.join(missing)} (or --rollback NAME)")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CommandError("--threshold must be in [0, 1]")
    if args.instance_count < 1:
        raise CommandError("--instance-count must be at least 1")
    return DeployConfig(bucket=args.bucket, role=args.role, name=args.name, instance_type=args.instance_type,
                        instance_count=args.instance_count, framework_version=args.framework_version,
                        threshold=args.threshold, max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms,
                        workers=args.workers, s3_prefix=args.s3_prefix, region=args.region, wait=args.wait)


def run(args) -> int:
    from serving.deploy import deploy, rollback

    log = progress("deploy")
    if args.rollback:
        if args.archive:
            raise CommandError("--rollback NAME takes no MODEL_TAR_GZ")
        result = rollback(args.rollback, args.region, args.wait, log)
    else:
        result = deploy(args.archive, _deploy_config(args), log)
    previous = f" (was {result.previous_config}, kept)" if result.previous_config else ""
    environment = " ".join(f"{key}={value}" for key, value in sorted(result.environment.items()))
    log(f"endpoint {result.name} {result.action}: {result.status} on {result.config_name}{previous}\n"
        f"  model      : {result.model_name}\n"
        f"  model data : {result.model_data}\n"
        f"  image      : {result.image_uri}\n"
        f"  environment: {environment}\n"
        f"  instances  : {result.instance_count} × {result.instance_type}\n"
        f"  try it     : us8k predict clip.wav --endpoint-name {result.name}\n"
        f"  roll back  : us8k deploy --rollback {result.name}\n"
        f"  remove it  : us8k undeploy --name {result.name}")
    return 0
