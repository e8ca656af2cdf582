"""A moto S3 server over HTTP on a free loopback port, for the tests that read and write s3:// for
real (ingest, label): the AWS environment cleared so no real account or profile can be reached.

While it runs, the boto3 sessions of this process share one botocore data loader. Beam's S3
filesystem makes a new boto3 Session and client for every operation (an open, a match, a rename),
and each new session parses botocore's bundled JSON service descriptions again: about 0.2 s of CPU
each, 60–80 % of an s3:// ingest of 21 clips (98 clients, 38 s; 9 s with the loader shared). The
descriptions are the same files whoever loads them; every client, request and response is as before.
"""
from __future__ import annotations

import contextlib
import functools
import os

import boto3
import botocore.loaders
import botocore.session
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
            env.setattr(botocore.session, "create_loader", _shared_loader)
            client = boto3.client("s3", endpoint_url=url, region_name=REGION,
                                  aws_access_key_id="testing", aws_secret_access_key="testing")
            client.create_bucket(Bucket=bucket)
            yield url, client
    finally:
        server.stop()


@functools.lru_cache(maxsize=None)
def _shared_loader(search_path_string=None):
    """botocore.loaders.create_loader, one Loader per data path for the whole process (its service
    descriptions are parsed once, then served from the Loader's own cache)."""
    return botocore.loaders.create_loader(search_path_string)


def upload_tree(client, bucket: str, local_dir, prefix: str) -> None:
    """Every file under `local_dir` to s3://bucket/prefix/<its relative path>."""
    for directory, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(directory, name)
            client.upload_file(path, bucket, prefix + "/" + os.path.relpath(path, local_dir).replace(os.sep, "/"))
