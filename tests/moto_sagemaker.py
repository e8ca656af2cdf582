"""The AWS emulator the deploy and launch tests talk to: moto 5.2.5's server, one per test process,
plus the SageMaker behaviour it lacks.

What is added, before the server starts (`add_sagemaker_behaviour`), each written the way moto
writes its own actions (responses.py parses the request, models.py changes the state):
  - UpdateEndpoint, which moto lacks (its server answers NotImplementedError) and `us8k deploy`
    uses to update a live endpoint and roll it back. It does what AWS has done once an update
    completes: it checks that the endpoint and the new config exist, points the endpoint at the
    config (its variants follow), and leaves it InService.
  - CreateEndpoint refuses a name in use, as AWS does (ValidationException "Cannot create already
    existing endpoint"); moto's replaces the endpoint silently.
  - An endpoint whose model data is not in S3 fails, as SageMaker's does when it cannot download
    model.tar.gz: CreateEndpoint leaves it Failed with AWS's FailureReason (moto's would say
    InService without looking).
And one control the tests use where AWS's state changes on its own schedule: `set_endpoint_status`
puts an endpoint in the state SageMaker reports while it works on it (e.g. "Updating" while another
update runs). Nothing else is changed: boto3 and our code run unmodified, over HTTP, against this
server.

One server per test process (`server_url`), shared by every `emulated_aws` block: each block
starts from an empty AWS (moto's /moto-api/reset) and leaves one, so blocks must not overlap (they
are module fixtures, and pytest finishes one module's before it sets up the next one's).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import urllib.request
from typing import Any, Iterator

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse

ENV_NAMES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
             "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION")
_moto_create_endpoint = SageMakerModelBackend.create_endpoint  # moto's own, before add_sagemaker_behaviour


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
    endpoint.failure_reason = None
    return endpoint


def _response_update_endpoint(self: SageMakerResponse) -> ActionResult:
    endpoint = self.sagemaker_backend.update_endpoint(
        endpoint_name=self._get_param("EndpointName"),
        endpoint_config_name=self._get_param("EndpointConfigName"),
    )
    return ActionResult({"EndpointArn": endpoint.arn})


def _missing_model_data(backend: SageMakerModelBackend, config: dict) -> str | None:
    """The first s3:// ModelDataUrl of the config's models that S3 (this moto) does not hold."""
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    s3 = s3_backends[backend.account_id][get_partition(backend.region_name)]
    for variant in config["ProductionVariants"]:
        model = backend._models.get(variant["ModelName"])
        url = (model.primary_container or {}).get("ModelDataUrl", "") if model else ""
        if not url.startswith("s3://"):
            continue
        bucket, _, key = url[len("s3://"):].partition("/")
        try:
            found = s3.get_object(bucket, key)
        except Exception:  # noqa: BLE001  (moto raises MissingBucket for a bucket that does not exist)
            found = None
        if found is None:
            return url
    return None


def _backend_create_endpoint(self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str,
                             tags: list[dict[str, str]]) -> FakeEndpoint:
    if endpoint_name in self.endpoints:
        arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
        raise ValidationError(message=f'Cannot create already existing endpoint "{arn}".')
    endpoint = _moto_create_endpoint(self, endpoint_name, endpoint_config_name, tags)
    missing = _missing_model_data(self, self.describe_endpoint_config(endpoint_config_name))
    if missing:
        endpoint.endpoint_status = "Failed"
        endpoint.failure_reason = (f'Failed to download model data for container "container_1" from URL: '
                                   f'"{missing}". Please ensure that there is an object located at the URL '
                                   "and that the role passed to CreateModel has permissions to download "
                                   "the object.")
    return endpoint


def add_sagemaker_behaviour() -> None:
    """Give moto's SageMaker what the module doc lists (idempotent; UpdateEndpoint only where moto has none)."""
    if not hasattr(SageMakerModelBackend, "update_endpoint"):
        SageMakerModelBackend.update_endpoint = _backend_update_endpoint
    if not hasattr(SageMakerResponse, "update_endpoint"):
        SageMakerResponse.update_endpoint = _response_update_endpoint
    SageMakerModelBackend.create_endpoint = _backend_create_endpoint


add_update_endpoint = add_sagemaker_behaviour  # the name it had when UpdateEndpoint was the only addition


def start(ip_address: str = "127.0.0.1") -> tuple[Any, str]:
    """A new running ThreadedMotoServer on a free loopback port with the additions, and its URL."""
    from moto.server import ThreadedMotoServer

    add_sagemaker_behaviour()
    server = ThreadedMotoServer(ip_address=ip_address, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


_shared: tuple[Any, str] | None = None


def server_url() -> str:
    """The URL of this process's emulator, started on first use and stopped when the process exits."""
    global _shared
    if _shared is None:
        _shared = start()
        atexit.register(_shared[0].stop)
    return _shared[1]


def reset(url: str) -> None:
    """Every moto backend back to empty (moto's own /moto-api/reset)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def set_endpoint_status(region: str, name: str, status: str, failure_reason: str | None = None) -> None:
    """Put endpoint `name` in `status` (as SageMaker reports it while it works on the endpoint)."""
    endpoint = sagemaker_backends[DEFAULT_ACCOUNT_ID][region].endpoints[name]
    endpoint.endpoint_status = status
    endpoint.failure_reason = failure_reason


@contextlib.contextmanager
def emulated_aws(region: str, bucket: str) -> Iterator[str]:
    """This process's emulator as the AWS of this block, emptied: AWS_ENDPOINT_URL, test credentials
    and `region` in the environment (restored after), `bucket` created; yields the URL."""
    import boto3

    url = server_url()
    reset(url)
    saved = {name: os.environ.get(name) for name in ENV_NAMES}
    try:
        for name in ENV_NAMES:
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
        reset(url)
