"""Prometheus metrics of the local endpoint (`GET /metrics`, text exposition format).

Each app has its own `CollectorRegistry`, so several servers in one process (tests, benchmarks)
keep separate counts. What is measured:

  us8k_requests_total{status}                 invocations answered, by HTTP status
  us8k_request_duration_seconds               invocation latency, body read to answer (histogram)
  us8k_model_call_duration_seconds            one model call (histogram)
  us8k_model_call_rows                        rows (clips) per model call (histogram)
  us8k_queue_depth                            parsed requests waiting for a model call
  us8k_requests_in_flight                     invocations being read, parsed, batched or answered
  us8k_requests_parsing                       requests being decoded / parsed now (≤ PARSE_WORKERS)
  us8k_requests_waiting_to_parse              requests read and waiting for a parse worker
  us8k_decode_failures_total{reason}          requests refused before the model, by reason class
                                              (serving.inference.RequestError.reason)
  us8k_auth_failures_total                    requests refused for a missing or wrong token
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServingMetrics:
    """The endpoint's metrics in a registry of their own; `render()` is the /metrics body."""

    def __init__(self, queue_depth: Callable[[], float] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("us8k_requests", "Invocations answered, by HTTP status", ["status"], registry=r)
        self.request_seconds = Histogram("us8k_request_duration_seconds", "Invocation latency (seconds)",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.model_seconds = Histogram("us8k_model_call_duration_seconds", "Model call latency (seconds)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.model_rows = Histogram("us8k_model_call_rows", "Rows (clips) per model call",
                                    buckets=ROW_BUCKETS, registry=r)
        self.queue_depth = Gauge("us8k_queue_depth", "Parsed requests waiting for a model call", registry=r)
        if queue_depth is not None:
            self.queue_depth.set_function(queue_depth)
        self.in_flight = Gauge("us8k_requests_in_flight", "Invocations in progress", registry=r)
        self.parsing = Gauge("us8k_requests_parsing", "Requests being decoded or parsed now", registry=r)
        self.parse_waiting = Gauge("us8k_requests_waiting_to_parse", "Requests read and waiting for a parse worker",
                                   registry=r)
        self.decode_failures = Counter("us8k_decode_failures", "Requests refused before the model, by reason class",
                                       ["reason"], registry=r)
        self.auth_failures = Counter("us8k_auth_failures", "Requests refused for a missing or wrong token",
                                     registry=r)

    def observe_model_call(self, rows: int, seconds: float) -> None:
        self.model_rows.observe(rows)
        self.model_seconds.observe(seconds)

    def observe_request(self, status: int, seconds: float) -> None:
        self.requests.labels(str(status)).inc()
        self.request_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
