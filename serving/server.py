"""`us8k serve`: a local endpoint with the SageMaker container's contract, on Starlette + uvicorn.

    us8k serve EXPORT|model.tar.gz [--port 8080] [--host 127.0.0.1] [--threshold T]
                                   [--max-batch 32] [--batch-timeout-ms 5] [--max-seconds 600]
                                   [--auth-token-file FILE | --no-auth] [--quiet]

`GET /ping` answers 200 once the model is loaded; `POST /invocations` takes what the SageMaker
handlers take (`serving.inference`: the same pure functions parse requests and build answers)
and runs the SavedModel in-process (`tf.saved_model.load`; no Docker, no TF Serving). Concurrent
requests share model calls through `serving.batcher` (--max-batch 4 s windows at most, waiting up to
--batch-timeout-ms for company); the model is found by `serving.model_files`.

Bad input (see serving.inference for the limits) gets a 4xx with {"error": "..."}; the server
keeps serving; a 500 means a server fault (the model failed). `GET /metrics` is Prometheus's
text format (serving.metrics). Off loopback, `--auth-token-file` (Bearer token on every request
but /ping, serving.auth) or an explicit `--no-auth` is required. One line per request on stdout
(status, body bytes, clips, ms) unless --quiet. At most PARSE_WORKERS requests are decoded at
once, so the memory of parsing is bounded by that many requests, whatever the concurrency. SIGTERM / Ctrl-C stop it gracefully: in-flight requests finish, the batcher drains.
For tests and benchmarks `start_server(...)` runs the same app in a background thread.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import tarfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.auth import AuthConfigError, BearerToken, is_loopback, read_token_file
from serving.batcher import BATCH_TIMEOUT_MS, MAX_BATCH, DynamicBatcher, ModelCall
from serving.inference import (ANSWER_OUTPUTS, CUSTOM_ATTRIBUTES_HEADER, JSON_TYPE, MAX_BODY_BYTES, MAX_SECONDS,
                               RequestError, ServingConfig, check_body_size, load_config, parse_options,
                               parse_request, predictions_from_signature, response_json)
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import ServingMetrics
from serving.model_files import ModelFiles, locate_model
from serving.page import PAGE_ROUTES
from tfdata.contract import SAMPLE_RATE
from tfdata.layout import (LOG_MEL_SIGNATURE, OUTPUT_LOG_MEL, OUTPUT_WINDOW_COUNT, SERVING_SIGNATURE, log_mel_inputs,
                           serving_inputs)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long after SIGTERM
DISCARD_LIMIT = 64 * 1024 * 1024  # an oversized body is read (and dropped) up to this, then cut off
PARSE_WORKERS = 2  # requests decoded / parsed at once (the machine's cores); the others wait their turn

log = logging.getLogger("us8k.serve")


# ---------------------------------------------------------------- the model


class ModelRunner:
    """The SavedModel's serving signature as a numpy function (waveform [n, L], lengths [n])."""

    def __init__(self, saved_model_dir: str | Path):
        import tensorflow as tf  # only here: the handlers and the client import no TensorFlow

        self._tf = tf
        self._loaded = tf.saved_model.load(str(saved_model_dir))
        self._signature = self._loaded.signatures[SERVING_SIGNATURE]
        self(np.zeros((1, 1), np.float32), np.ones((1,), np.int32))  # warm up, and fail early

    def __call__(self, batch: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._signature(**serving_inputs(self._tf.constant(batch, self._tf.float32),
                                                   self._tf.constant(lengths, self._tf.int32)))
        return {name: outputs[name].numpy() for name in ANSWER_OUTPUTS}

    def log_mel(self, waveform: np.ndarray) -> tuple[np.ndarray, int]:
        """The `log_mel` signature on one clip (float32 [samples]) → features [windows, frames, mels], windows."""
        outputs = self._loaded.signatures[LOG_MEL_SIGNATURE](**log_mel_inputs(
            self._tf.constant(waveform[None], self._tf.float32)))
        return outputs[OUTPUT_LOG_MEL].numpy()[0], int(outputs[OUTPUT_WINDOW_COUNT].numpy()[0])


# ---------------------------------------------------------------- the HTTP app


def error_response(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def ping(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _unauthorized(request: Request) -> Response | None:
    """A 401 when the app checks tokens and the request has no valid `Authorization: Bearer`."""
    auth: BearerToken | None = request.app.state.auth
    if auth is None or auth.allows(request.headers.get("authorization")):
        return None
    request.app.state.metrics.auth_failures.inc()
    response = error_response(401, "missing or wrong token: send Authorization: Bearer <token>")
    response.headers["WWW-Authenticate"] = 'Bearer realm="us8k"'
    return response


async def metrics(request: Request) -> Response:
    refused = _unauthorized(request)
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
        response = _unauthorized(request)
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
        return error_response(400, "client disconnected before sending the whole body")
    except Exception as exc:  # a bug or a model failure: say so, keep serving
        log.exception("invocation failed")
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        return error_response(500, f"internal error: {type(exc).__name__}: {first_line}")


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
        body = await _read_body(request, size)
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
async def parse_slot(state):
    """One of the PARSE_WORKERS slots a request holds while it is decoded / parsed; /metrics counts
    the requests waiting for one (us8k_requests_waiting_to_parse) and holding one (us8k_requests_parsing)."""
    state.metrics.parse_waiting.inc()
    try:
        await state.parsing.acquire()
    finally:
        state.metrics.parse_waiting.dec()
    state.metrics.parsing.inc()
    try:
        yield
    finally:
        state.metrics.parsing.dec()
        state.parsing.release()


async def _read_body(request: Request, seen: list[int] | None = None) -> bytes:
    """The body, refusing (413) past MAX_BODY_BYTES without keeping more than that in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DISCARD_LIMIT:
        check_body_size(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if seen is not None:
            seen[0] = size
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        elif size > DISCARD_LIMIT:
            break
    check_body_size(size)
    return b"".join(chunks)


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


def create_app(run: ModelCall, config: ServingConfig, *, max_batch: int = MAX_BATCH,
               batch_timeout_ms: float = BATCH_TIMEOUT_MS, on_ready: Callable[[], None] | None = None,
               max_seconds: float = MAX_SECONDS, auth_token: str | None = None,
               access_log: Callable[[str], None] | None = None) -> Starlette:
    """The Starlette app; `app.state.batcher` holds the batcher (its `.stats` say how it batched),
    `app.state.metrics` the Prometheus metrics. `auth_token`: every route but /ping needs it."""
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.metrics = ServingMetrics()
    app.state.batcher = DynamicBatcher(run, max_batch=max_batch, timeout_ms=batch_timeout_ms,
                                       observer=app.state.metrics.observe_model_call)
    app.state.metrics.queue_depth.set_function(lambda: app.state.batcher.queue_depth)
    app.state.config = config
    app.state.on_ready = on_ready
    app.state.max_seconds = float(max_seconds)
    app.state.auth = BearerToken(auth_token) if auth_token is not None else None
    app.state.access_log = access_log
    app.state.parsing = asyncio.Semaphore(PARSE_WORKERS)
    app.state.log_mel = getattr(run, "log_mel", None)  # POST /log_mel (serving.page); None: 501
    return app


# ---------------------------------------------------------------- running it


@dataclass
class ServedModel:
    files: ModelFiles
    runner: ModelRunner
    config: ServingConfig


def load_served_model(path: str | Path, threshold: float | None = None) -> ServedModel:
    files = locate_model(path)
    try:
        config = load_config(files.metadata_path, threshold)
        runner = ModelRunner(files.saved_model_dir)
    except Exception:
        files.cleanup()
        raise
    return ServedModel(files, runner, config)


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


def http_url(host: str, port: int) -> str:
    """The endpoint's base URL (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app: Starlette):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                         timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))


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


def start_server(model_path: str | Path, host: str = DEFAULT_HOST, port: int = 0, *,
                 threshold: float | None = None, max_batch: int = MAX_BATCH,
                 batch_timeout_ms: float = BATCH_TIMEOUT_MS, startup_timeout: float = 120.0,
                 max_seconds: float = MAX_SECONDS, auth_token: str | None = None) -> ServerHandle:
    """Load the model and serve it from a background thread; returns once /ping would answer."""
    model = load_served_model(model_path, threshold)
    sock = bind_socket(host, port)
    app = create_app(model.runner, model.config, max_batch=max_batch, batch_timeout_ms=batch_timeout_ms,
                     max_seconds=max_seconds, auth_token=auth_token)
    server = _uvicorn_server(app)
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


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="EXPORT|MODEL_TAR_GZ",
                        help="an export directory (from `us8k export`) or a model.tar.gz (from `us8k package`)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}, the SageMaker container's; 0 picks a free one)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="endpoint-wide 'undetermined' threshold (default: the model's, else 0.6)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                        help=f"most 4 s windows per model call; 1 turns batching off (default {MAX_BATCH})")
    parser.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS,
                        help=f"how long a request waits for others to batch with (default {BATCH_TIMEOUT_MS:g})")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help=f"most audio per request, all rows together, after decoding (default {MAX_SECONDS:g}; "
                             "a 6 MB body limits it too)")
    parser.add_argument("--auth-token-file", default=None, metavar="FILE",
                        help="require `Authorization: Bearer <token>` (the file's first line) on every request "
                             "but GET /ping; needed with a --host other than loopback, unless --no-auth")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve a non-loopback --host without a token (anyone who reaches the port may use it)")
    parser.add_argument("--quiet", action="store_true", help="no line per request on stdout")


def _auth_token(args) -> str | None:
    """The token to require, or None; refuses a non-loopback host with neither a token nor --no-auth."""
    if args.auth_token_file and args.no_auth:
        raise SystemExit("us8k serve: error: give --auth-token-file or --no-auth, not both")
    if args.auth_token_file:
        try:
            return read_token_file(args.auth_token_file)
        except AuthConfigError as exc:
            raise SystemExit(f"us8k serve: error: {exc}") from None
    if not args.no_auth and not is_loopback(args.host):
        raise SystemExit(f"us8k serve: error: --host {args.host} is not loopback: give --auth-token-file FILE "
                         "(clients send Authorization: Bearer <token>) or --no-auth")
    return None


def run(args) -> int:
    if args.max_batch < 1:
        raise SystemExit("us8k serve: error: --max-batch must be at least 1")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit("us8k serve: error: --threshold must be in [0, 1]")
    if not 0.0 < args.max_seconds < float("inf"):
        raise SystemExit("us8k serve: error: --max-seconds must be a positive number")
    token = _auth_token(args)
    print(f"us8k serve: loading {args.model}", flush=True)
    try:
        model = load_served_model(args.model, args.threshold)
    except (FileNotFoundError, ValueError, tarfile.TarError) as exc:
        raise SystemExit(f"us8k serve: error: {exc}") from None
    try:
        try:
            sock = bind_socket(args.host, args.port)
        except OSError as exc:
            raise SystemExit(f"us8k serve: error: cannot bind {args.host}:{args.port}: {exc.strerror or exc}") from None
        url = http_url(*sock.getsockname()[:2])

        def ready():
            print(f"us8k serve: serving {args.model} at {url} (GET /ping, POST /invocations, GET /metrics, "
                  f"listening page at {url}/; threshold {model.config.threshold:g}, max batch {args.max_batch}, "
                  f"batch timeout {args.batch_timeout_ms:g} ms, max {args.max_seconds:g} s per request, "
                  f"{'token required' if token else 'no token'})", flush=True)

        app = create_app(model.runner, model.config, max_batch=args.max_batch,
                         batch_timeout_ms=args.batch_timeout_ms, on_ready=ready, max_seconds=args.max_seconds,
                         auth_token=token, access_log=None if args.quiet else lambda line: print(line, flush=True))
        # uvicorn catches SIGINT/SIGTERM, shuts down gracefully, then re-raises the signal to the
        # handler that was there before: make that one a no-op so we clean up and exit 0.
        stopped_by = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stopped_by.append(signum))
        _uvicorn_server(app).run(sockets=[sock])
        stats = app.state.batcher.stats
        print(f"us8k serve: stopped ({stats.clips} clips in {stats.batches} model calls)", flush=True)
        return 0
    finally:
        model.files.cleanup()


if __name__ == "__main__":  # pragma: no cover
    import argparse

    _parser = argparse.ArgumentParser(prog="us8k serve")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
