"""boto3 and SageMaker sessions, S3 uploads and the "does not exist" test for AWS errors.

Every AWS call goes through clients built from one boto3 session, so AWS_ENDPOINT_URL,
AWS_DEFAULT_REGION / AWS_REGION, AWS_PROFILE and the credential variables all apply (the tests
drive a moto server that way); nothing here names an endpoint URL. boto3 and sagemaker are the
`aws` extra: imported inside the functions that need them, so the commands' --help needs neither.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")


class AwsError(RuntimeError):
    """An AWS set-up or transfer problem, as one line for the user."""


def boto_session(region: str | None = None):
    """A boto3 session with a region (from --region or the environment / profile)."""
    import boto3  # the aws extra

    session = boto3.Session(region_name=region) if region else boto3.Session()
    if not session.region_name:
        raise AwsError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    return session


def sagemaker_session(session, bucket: str):
    """A sagemaker.Session whose clients come from `session` (so AWS_ENDPOINT_URL applies).

    Its default bucket is ours: otherwise the SDK derives one from STS, through a client it
    builds with an explicit regional STS URL that ignores AWS_ENDPOINT_URL."""
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    import sagemaker  # the aws extra; slow to import

    return sagemaker.Session(boto_session=session, sagemaker_client=session.client("sagemaker"),
                             sagemaker_runtime_client=session.client("sagemaker-runtime"),
                             default_bucket=bucket)


def upload(session, path: Path, bucket: str, key: str) -> str:
    """Upload the file `path` to s3://bucket/key; returns that URI."""
    import botocore.exceptions  # the aws extra

    try:
        session.client("s3").upload_file(str(path), bucket, key)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise AwsError(f"uploading {path} to s3://{bucket}/{key} failed: {exc}") from None
    except Exception as exc:  # boto3's transfer manager wraps errors in its own type
        raise AwsError(f"uploading {path} to s3://{bucket}/{key} failed: {exc}") from None
    return f"s3://{bucket}/{key}"


def is_missing(exc) -> bool:
    """A ClientError that says the resource does not exist."""
    error = exc.response.get("Error", {})
    message = error.get("Message", "").lower()
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "not find" in message or "not exist" in message or "not found" in message)
