"""GET /metrics after real requests: counts by status, latency buckets, rows per model call,
refusals by reason class; each server has its own registry."""
import numpy as np
import pytest
from endpoint_servers import endpoint, scrape
from endpoint_servers import metric as value
from wav_files import encode

from tfdata.contract import SAMPLE_RATE

pytestmark = pytest.mark.timeout(300)


def wav(seconds):
    return encode(0.1 * np.sin(np.arange(int(seconds * SAMPLE_RATE)) / 7.0).astype(np.float32), SAMPLE_RATE)


def test_metrics_count_requests_latency_and_refusals(tiny_export):
    with endpoint(tiny_export) as (server, client), endpoint(tiny_export) as (other, other_client):
        for seconds in (1.0, 2.0, 9.0):
            answered = client.post("/invocations", content=wav(seconds), headers={"Content-Type": "audio/wav"})
            assert answered.status_code == 200
        assert client.post("/invocations", json={"instances": [[0.1] * 100, [0.2] * 50]}).status_code == 200
        assert client.post("/invocations", content=b"{",
                           headers={"Content-Type": "application/json"}).status_code == 400
        assert client.post("/invocations", content=b"not audio",
                           headers={"Content-Type": "audio/wav"}).status_code == 400
        assert client.post("/invocations", content=b"a", headers={"Content-Type": "text/csv"}).status_code == 415
        samples = scrape(client)
        assert value(samples, "us8k_requests_total", status="200") == 4
        assert value(samples, "us8k_requests_total", status="400") == 2
        assert value(samples, "us8k_requests_total", status="415") == 1
        assert value(samples, "us8k_request_duration_seconds_count") == 7
        assert value(samples, "us8k_request_duration_seconds_bucket", le="+Inf") == 7
        assert 0 < value(samples, "us8k_request_duration_seconds_bucket", le="1.0") <= 7
        assert value(samples, "us8k_request_duration_seconds_sum") > 0
        assert value(samples, "us8k_model_call_duration_seconds_count") == 4
        assert value(samples, "us8k_model_call_rows_count") == 4
        assert value(samples, "us8k_model_call_rows_sum") == 8  # windows: 1 + 1 + 4 (9 s) + 2 clips of 1
        assert value(samples, "us8k_model_call_rows_bucket", le="1.0") == 2
        assert value(samples, "us8k_decode_failures_total", reason="json") == 1
        assert value(samples, "us8k_decode_failures_total", reason="undecodable") == 1
        assert value(samples, "us8k_decode_failures_total", reason="unsupported_type") == 1
        assert value(samples, "us8k_queue_depth") == 0
        assert value(samples, "us8k_requests_in_flight") == 0
        assert value(samples, "us8k_requests_parsing") == value(samples, "us8k_requests_waiting_to_parse") == 0
        # another server in the same process counts only its own requests
        assert value(scrape(other_client), "us8k_requests_total", status="200") == 0
