"""The local endpoint (`us8k serve`): the SageMaker container's contract, on Starlette + uvicorn.

`GET /ping` answers 200 once the model is loaded; `POST /invocations` takes what the SageMaker
handlers take (`serving.inference`: the same pure functions parse requests and build answers)
and runs the SavedModel in-process (`serving.model_runner`; no Docker, no TF Serving). Concurrent
requests share model calls through `serving.batcher` (`max_batch` 4 s windows at most, waiting up to
`batch_timeout_ms` for company); the model is found by `serving.model_files`.

Bad input (see serving.inference for the limits) gets a 4xx with {"error": "..."}; the server
keeps serving; a 500 means a server fault (the model failed). `GET /metrics` is Prometheus's
text format (serving.metrics). With an auth token, every request but /ping needs it (serving.auth).
An access-log callback gets one line per request (status, body bytes, clips, ms). At most
PARSE_WORKERS requests are decoded at once (serving.http_helpers), so the memory of parsing is
bounded by that many requests, whatever the concurrency. The listening page's routes are
serving.page's. `serve_until_stopped` runs the app in the foreground until SIGTERM / Ctrl-C
(in-flight requests finish, the batcher drains); `start_server(...)` runs it in a background
thread, for tests, benchmarks and the page's screenshot.
"""
from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.address import DEFAULT_HOST, http_url
from serving.auth import BearerToken
from serving.batcher import BATCH_TIMEOUT_MS, MAX_BATCH, BatchStats, DynamicBatcher, ModelCall
from serving.http_helpers import (
    DISCONNECTED,
    PARSE_WORKERS,
    error_response,
    internal_error,
    parse_slot,
    read_body,
    unauthorized,
)
from serving.inference import (
    CUSTOM_ATTRIBUTES_HEADER,
    JSON_TYPE,
    MAX_SECONDS,
    RequestError,
    ServingConfig,
    parse_options,
    parse_request,
    predictions_from_signature,
    response_json,
)
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import ServingMetrics
from serving.model_runner import ServedModel, load_served_model
from serving.page import PAGE_ROUTES
from tfdata.contract import SAMPLE_RATE

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long after SIGTERM
STARTUP_TIMEOUT_S = 120.0  # start_server: the model's loading and the server's start


@dataclass(frozen=True)
class EndpointOptions:
    """How the endpoint serves (`us8k serve`'s flags, start_server's options), passed whole."""
    threshold: float | None = None  # endpoint-wide 'undetermined' threshold (None: the model's)
    max_batch: int = MAX_BATCH  # most 4 s windows per model call (1: no batching)
    batch_timeout_ms: float = BATCH_TIMEOUT_MS  # how long a request waits for others to batch with
    max_seconds: float = MAX_SECONDS  # most audio per request, all rows together
    auth_token: str | None = None  # every route but /ping needs it (None: no token)


# ---------------------------------------------------------------- the HTTP app


async def ping(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    refused = unauthorized(request)
    if refused is not None:
        return refused
    return Response(request.app.state.metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def invocations(request: Request) -> Response:
    """Predictions for one request; every failure is a JSON error with its status, and the server goes on."""
    state = request.app.state
    started = time.perf_counter()
    state.metrics.in_flight.inc()
    clips, size = [0], [0]
    try:
        response = unauthorized(request)
        if response is None:
            response = await _answer(request, clips, size)
    finally:
        state.metrics.in_flight.dec()
    seconds = time.perf_counter() - started
    state.metrics.observe_request(response.status_code, seconds)
    if state.access_log is not None:
        state.access_log(f"us8k serve: POST /invocations {response.status_code} {size[0]} B "
                         f"{clips[0]} clips {seconds * 1e3:.1f} ms")
    return response


async def _answer(request: Request, clips: list[int], size: list[int]) -> Response:
    try:
        predictions = await _predict(request, clips, size)
        return Response(response_json(predictions), media_type=JSON_TYPE)
    except RequestError as exc:
        if 400 <= exc.status < 500:
            request.app.state.metrics.decode_failures.labels(exc.reason).inc()
        return error_response(exc.status, exc.message)
    except ClientDisconnect:  # the client went away mid-body: nobody to answer
        return error_response(400, DISCONNECTED)
    except Exception as exc:  # a bug or a model failure: say so, keep serving
        return internal_error(exc, "invocation")


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own errors (404 unknown path, 405 wrong method) in the same JSON shape."""
    return error_response(exc.status_code, exc.detail)


ROUTES = [Route("/ping", ping, methods=["GET"]),
          Route("/invocations", invocations, methods=["POST"]),
          Route("/metrics", metrics, methods=["GET"]),
          *PAGE_ROUTES]  # GET / (the listening page), /static/*, GET /metadata, POST /log_mel


async def _predict(request: Request, clips: list[int], size: list[int]) -> list[dict]:
    """Read and parse the request (the batcher counts it as arriving meanwhile), then batch it."""
    state = request.app.state
    batcher: DynamicBatcher = state.batcher
    with batcher.incoming():
        body = await read_body(request, size)
        options = parse_options(request.headers.get(CUSTOM_ATTRIBUTES_HEADER), dict(request.query_params))
        async with parse_slot(state):
            waveforms = await run_in_threadpool(parse_request, body, request.headers.get("content-type"),
                                                max_seconds=state.max_seconds)
        del body
    clips[0] = len(waveforms)
    durations = [w.shape[0] / SAMPLE_RATE for w in waveforms]
    outputs = await batcher.submit(waveforms)
    return predictions_from_signature(outputs, config=state.config, options=options, durations=durations)


@asynccontextmanager
async def lifespan(app: Starlette):
    """Start the batcher before the first request, say so, and drain it after the last one."""
    await app.state.batcher.start()
    if app.state.on_ready is not None:
        app.state.on_ready()
    try:
        yield
    finally:
        await app.state.batcher.close()


def create_app(run: ModelCall, config: ServingConfig, options: EndpointOptions = EndpointOptions(), *,
               on_ready: Callable[[], None] | None = None,
               access_log: Callable[[str], None] | None = None) -> Starlette:
    """The Starlette app; `app.state.batcher` holds the batcher (its `.stats` say how it batched),
    `app.state.metrics` the Prometheus metrics. `on_ready` is called once it serves, `access_log`
    with one line per request. (`options.threshold` is already in `config`.)"""
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.metrics = ServingMetrics()
    app.state.batcher = DynamicBatcher(run, max_batch=options.max_batch, timeout_ms=options.batch_timeout_ms,
                                       observer=app.state.metrics.observe_model_call)
    app.state.metrics.queue_depth.set_function(lambda: app.state.batcher.queue_depth)
    app.state.config = config
    app.state.on_ready = on_ready
    app.state.max_seconds = float(options.max_seconds)
    app.state.auth = BearerToken(options.auth_token) if options.auth_token is not None else None
    app.state.access_log = access_log
    app.state.parsing = asyncio.Semaphore(PARSE_WORKERS)
    app.state.log_mel = getattr(run, "log_mel", None)  # POST /log_mel (serving.page); None: 501
    return app


# ---------------------------------------------------------------- running it


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket. proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted
    connections only then (socket.create_server's proto=0 left Nagle on: +40 ms per keep-alive reply)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app: Starlette) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                         timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))


def serve_until_stopped(app: Starlette, sock: socket.socket) -> BatchStats:
    """Serve `app` on `sock` in this thread until SIGINT / SIGTERM; how the batcher batched."""
    # uvicorn catches SIGINT/SIGTERM, shuts down gracefully, then re-raises the signal to the
    # handler that was there before: make that one a no-op so the caller cleans up and exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn_server(app).run(sockets=[sock])
    return app.state.batcher.stats


class ServerHandle:
    """A server running in a background thread (tests, benchmarks, the demo). `stop()` ends it."""

    def __init__(self, server, thread: threading.Thread, sock: socket.socket, model: ServedModel, app: Starlette):
        self._server, self._thread, self._model = server, thread, model
        self.host, self.port = sock.getsockname()[:2]
        self.url = http_url(self.host, self.port)
        self.batcher: DynamicBatcher = app.state.batcher
        self.metrics: ServingMetrics = app.state.metrics
        self.config = model.config

    def stop(self, timeout: float = 60.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._model.files.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(model_path: str | Path, options: EndpointOptions = EndpointOptions(), *, host: str = DEFAULT_HOST,
                 port: int = 0, startup_timeout: float = STARTUP_TIMEOUT_S) -> ServerHandle:
    """Load the model and serve it from a background thread; returns once /ping would answer."""
    model = load_served_model(model_path, options.threshold)
    sock = bind_socket(host, port)
    app = create_app(model.runner, model.config, options)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="us8k-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            model.files.cleanup()
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    return ServerHandle(server, thread, sock, model, app)
