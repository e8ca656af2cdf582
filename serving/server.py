"""`us8k serve`: a local endpoint with the SageMaker container's contract, on Starlette + uvicorn.

    us8k serve EXPORT|model.tar.gz [--port 8080] [--host 127.0.0.1] [--threshold T]
                                   [--max-batch 32] [--batch-timeout-ms 5]

`GET /ping` answers 200 once the model is loaded; `POST /invocations` takes what the SageMaker
handlers take (`serving.inference`: the same pure functions parse requests and build answers)
and runs the SavedModel in-process (`tf.saved_model.load`; no Docker, no TF Serving). Concurrent
requests share model calls through `serving.batcher` (--max-batch rows at most, waiting up to
--batch-timeout-ms for company); the model is found by `serving.model_files`.

Bad input (see serving.inference for the limits) gets a 4xx with {"error": "..."}; the server
keeps serving. SIGTERM / Ctrl-C stop it gracefully: in-flight requests finish, the batcher drains.
For tests and benchmarks `start_server(...)` runs the same app in a background thread.
"""
from __future__ import annotations

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

from serving.batcher import BATCH_TIMEOUT_MS, MAX_BATCH, DynamicBatcher, ModelCall
from serving.inference import (ANSWER_OUTPUTS, CUSTOM_ATTRIBUTES_HEADER, JSON_TYPE, MAX_BODY_BYTES,
                               RequestError, ServingConfig, check_body_size, load_config, parse_options,
                               parse_request, predictions_from_signature, response_json)
from serving.model_files import ModelFiles, locate_model
from tfdata.layout import SERVING_SIGNATURE, serving_inputs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long after SIGTERM
DISCARD_LIMIT = 64 * 1024 * 1024  # an oversized body is read (and dropped) up to this, then cut off

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


# ---------------------------------------------------------------- the HTTP app


def error_response(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def ping(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def invocations(request: Request) -> Response:
    """Predictions for one request; every failure is a JSON error with its status, and the server goes on."""
    try:
        predictions = await _predict(request, request.app.state.batcher, request.app.state.config)
        return Response(response_json(predictions), media_type=JSON_TYPE)
    except RequestError as exc:
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
          Route("/invocations", invocations, methods=["POST"])]


async def _predict(request: Request, batcher: DynamicBatcher, config: ServingConfig) -> list[dict]:
    """Read and parse the request (the batcher counts it as arriving meanwhile), then batch it."""
    with batcher.incoming():
        body = await _read_body(request)
        options = parse_options(request.headers.get(CUSTOM_ATTRIBUTES_HEADER), dict(request.query_params))
        waveforms = await run_in_threadpool(parse_request, body, request.headers.get("content-type"))
    outputs = await batcher.submit(waveforms)
    return predictions_from_signature(outputs, config=config, options=options)


async def _read_body(request: Request) -> bytes:
    """The body, refusing (413) past MAX_BODY_BYTES without keeping more than that in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DISCARD_LIMIT:
        check_body_size(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
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
               batch_timeout_ms: float = BATCH_TIMEOUT_MS, on_ready: Callable[[], None] | None = None) -> Starlette:
    """The Starlette app; `app.state.batcher` holds the batcher (its `.stats` say how it batched)."""
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.batcher = DynamicBatcher(run, max_batch=max_batch, timeout_ms=batch_timeout_ms)
    app.state.config = config
    app.state.on_ready = on_ready
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
                 batch_timeout_ms: float = BATCH_TIMEOUT_MS, startup_timeout: float = 120.0) -> ServerHandle:
    """Load the model and serve it from a background thread; returns once /ping would answer."""
    model = load_served_model(model_path, threshold)
    sock = bind_socket(host, port)
    app = create_app(model.runner, model.config, max_batch=max_batch, batch_timeout_ms=batch_timeout_ms)
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
                        help=f"most rows per model call; 1 turns batching off (default {MAX_BATCH})")
    parser.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS,
                        help=f"how long a request waits for others to batch with (default {BATCH_TIMEOUT_MS:g})")


def run(args) -> int:
    if args.max_batch < 1:
        raise SystemExit("us8k serve: error: --max-batch must be at least 1")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit("us8k serve: error: --threshold must be in [0, 1]")
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
            print(f"us8k serve: serving {args.model} at {url} (GET /ping, POST /invocations; "
                  f"threshold {model.config.threshold:g}, max batch {args.max_batch}, "
                  f"batch timeout {args.batch_timeout_ms:g} ms)", flush=True)

        app = create_app(model.runner, model.config, max_batch=args.max_batch,
                         batch_timeout_ms=args.batch_timeout_ms, on_ready=ready)
        # uvicorn catches SIGINT/SIGTERM, shuts down gracefully, then re-raises the signal to the
        # handler that was there before: make that one a no-op so we clean up and exit 0.
        stopped_by = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stopped_by.append(signum))
        _uvicorn_server(app).run(sockets=[sock])
        stats = app.state.batcher.stats
        print(f"us8k serve: stopped ({stats.rows} clips in {stats.batches} model calls)", flush=True)
        return 0
    finally:
        model.files.cleanup()


if __name__ == "__main__":  # pragma: no cover
    import argparse

    _parser = argparse.ArgumentParser(prog="us8k serve")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
