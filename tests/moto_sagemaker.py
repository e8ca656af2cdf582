"""The AWS emulator the deploy tests talk to: moto 5.2.5's server plus the one SageMaker action it lacks.

moto 5.2.5 implements CreateEndpoint, DescribeEndpoint, the endpoint config and model calls and
tags, but not UpdateEndpoint (its server answers NotImplementedError), and `us8k deploy` updates
a live endpoint and rolls it back with UpdateEndpoint. So before the server starts, `start()` adds
an `update_endpoint` action to moto's SageMaker backend and response classes, written the way
moto writes its other actions (responses.py parses the request, models.py changes the state). It
does what AWS has done once an update completes: it checks that the endpoint and the new config
exist, points the endpoint at the config (its variants follow), and leaves it InService. Nothing
else is changed: boto3 and our code run unmodified, over HTTP, against this server.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse


def _backend_update_endpoint(self: SageMakerModelBackend, endpoint_name: str,
                             endpoint_config_name: str) -> FakeEndpoint:
    endpoint = self.endpoints.get(endpoint_name)
    if endpoint is None:
        arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    config = self.describe_endpoint_config(endpoint_config_name)  # ValidationError when it does not exist
    endpoint.endpoint_config_name = endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
    endpoint.data_capture_config = config.get("DataCaptureConfig")
    endpoint.last_modified_time = utcnow()
    endpoint.endpoint_status = "InService"  # the update has completed
    return endpoint


def _response_update_endpoint(self: SageMakerResponse) -> ActionResult:
    endpoint = self.sagemaker_backend.update_endpoint(
        endpoint_name=self._get_param("EndpointName"),
        endpoint_config_name=self._get_param("EndpointConfigName"),
    )
    return ActionResult({"EndpointArn": endpoint.arn})


def add_update_endpoint() -> None:
    """Give moto's SageMaker UpdateEndpoint (idempotent; only where moto has none of its own)."""
    if not hasattr(SageMakerModelBackend, "update_endpoint"):
        SageMakerModelBackend.update_endpoint = _backend_update_endpoint
    if not hasattr(SageMakerResponse, "update_endpoint"):
        SageMakerResponse.update_endpoint = _response_update_endpoint


def start(ip_address: str = "127.0.0.1") -> tuple[Any, str]:
    """A running ThreadedMotoServer on a free loopback port with UpdateEndpoint, and its URL."""
    from moto.server import ThreadedMotoServer

    add_update_endpoint()
    server = ThreadedMotoServer(ip_address=ip_address, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@contextlib.contextmanager
def emulated_aws(region: str, bucket: str) -> Iterator[str]:
    """A moto server (with UpdateEndpoint) as the AWS of this block: AWS_ENDPOINT_URL, test
    credentials and `region` in the environment (restored after), `bucket` created; yields the URL."""
    import boto3

    server, url = start()
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
             "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION")
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in names:
            os.environ.pop(name, None)
        os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": region})
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield url
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
