"""The local endpoint (serving.server) for the tests: one way to serve a model on a free loopback
port, talk to it over HTTP and read its /metrics.

A test module gets its module-scoped endpoint with
    server = endpoint_servers.server_fixture(max_batch=32)   # tiny_export served with these options
    from endpoint_servers import http                          # noqa: F401 (the client fixture)
and an ad hoc one with `with endpoint(model, threshold=0.9) as (handle, client): ...`."""
from __future__ import annotations

import contextlib
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.server import EndpointOptions, ServerHandle, start_server

CLIENT_TIMEOUT_S = 60


def server_fixture(**options):
    """A module-scoped `server` fixture: `tiny_export` served on a free port with EndpointOptions(**options)."""
    @pytest.fixture(scope="module")
    def server(tiny_export):
        with start_server(tiny_export, EndpointOptions(**options), port=0) as handle:
            yield handle

    return server


@pytest.fixture(scope="module")
def http(server):
    """An httpx client on the module's `server`."""
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as client:
        yield client


@contextlib.contextmanager
def endpoint(model_path, **options) -> Iterator[tuple[ServerHandle, httpx.Client]]:
    """`model_path` served with `options` for the block, and a client on it; both closed after."""
    with start_server(model_path, EndpointOptions(**options), port=0) as handle, \
            httpx.Client(base_url=handle.url, timeout=CLIENT_TIMEOUT_S) as client:
        yield handle, client


def post(client: httpx.Client, content: bytes, content_type: str, params=None, headers=None) -> httpx.Response:
    """POST /invocations with this body and content type."""
    return client.post("/invocations", content=content, params=params,
                       headers={"Content-Type": content_type, **(headers or {})})


def scrape(client: httpx.Client) -> dict:
    """GET /metrics, parsed: {(sample name, ((label, value), ...)): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict, name: str, **labels) -> float:
    """One sample of `scrape`'s result (0 when absent, as Prometheus counters start)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
