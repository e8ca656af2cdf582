"""A moto S3 server over HTTP on a free loopback port, for the tests that read and write s3:// for
real (ingest, label): the AWS environment cleared so no real account or profile can be reached."""
from __future__ import annotations

import contextlib
import os

import boto3
import pytest

REGION = "us-east-1"
# Variables that could point boto3 or Beam at a real account, endpoint or profile.
CLEAN_AWS_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@contextlib.contextmanager
def s3_server(bucket: str):
    """Yield (url, client) for a running moto server with `bucket` created; stopped on exit."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as env:
            for name in CLEAN_AWS_ENV:
                env.delenv(name, raising=False)
            env.setenv("AWS_CONFIG_FILE", os.devnull)
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            env.setenv("AWS_EC2_METADATA_DISABLED", "true")
            client = boto3.client("s3", endpoint_url=url, region_name=REGION,
                                  aws_access_key_id="testing", aws_secret_access_key="testing")
            client.create_bucket(Bucket=bucket)
            yield url, client
    finally:
        server.stop()


def upload_tree(client, bucket: str, local_dir, prefix: str) -> None:
    """Every file under `local_dir` to s3://bucket/prefix/<its relative path>."""
    for directory, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(directory, name)
            client.upload_file(path, bucket, prefix + "/" + os.path.relpath(path, local_dir).replace(os.sep, "/"))
