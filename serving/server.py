"""`us8k serve`: a local endpoint with the SageMaker container's contract, on Starlette + uvicorn.

    us8k serve EXPORT|model.tar.gz [--port 8080] [--host 127.0.0.1] [--threshold T]
                                   [--max-batch 32] [--batch-timeout-ms 5]

`GET /ping` answers 200 once the model is loaded; `POST /invocations` takes what the SageMaker
handlers take (`serving.inference`: the same pure functions parse requests and build answers)
and runs the SavedModel in-process (`tf.saved_model.load`; no Docker, no TF Serving).

Dynamic batching: a request waits up to --batch-timeout-ms for others that are still being read
or parsed (a lone request does not wait), then they run as one zero-padded batch of at most
--max-batch rows with the signature's `lengths` input, so each answer equals the one the request
gets alone. One model call runs at a time (in its own thread); requests that arrive meanwhile
form the next batch. A batch is also capped at
max-batch × 4 s of padded samples, so one long clip does not pad thirty short ones to its length.

Bad input (see serving.inference for the limits) gets a 4xx with {"error": "..."}; the server
keeps serving. SIGTERM / Ctrl-C stop it gracefully: in-flight requests finish, the batcher drains.
For tests and benchmarks `start_server(...)` runs the same app in a background thread.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import shutil
import signal
import socket
import sys
import tarfile
import tempfile
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from serving.inference import (CUSTOM_ATTRIBUTES_HEADER, JSON_TYPE, MAX_BODY_BYTES, METADATA_FILE,
                               RequestError, ServingConfig, check_body_size, load_config, pad_batch,
                               parse_options, parse_request, predictions_from_outputs, response_json)
from tfdata.contract import CLIP_SAMPLES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MAX_BATCH = 32  # rows per model call
BATCH_TIMEOUT_MS = 5.0  # how long the first request of a batch waits for others
GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long after SIGTERM
DISCARD_LIMIT = 64 * 1024 * 1024  # an oversized body is read (and dropped) up to this, then cut off
MODEL_OUTPUTS = ("probabilities", "window_probabilities", "window_count")

log = logging.getLogger("us8k.serve")


# ---------------------------------------------------------------- the model


@dataclass
class ModelFiles:
    """Where a servable lives: the SavedModel version directory and metadata.json."""
    saved_model_dir: Path
    metadata_path: Path | None
    temp_dir: Path | None = None  # an unpacked model.tar.gz, removed by cleanup()

    def cleanup(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def locate_model(path: str | Path) -> ModelFiles:
    """An export dir (model/<v>/ + metadata.json), an unpacked package (<v>/ + code/), a SavedModel
    dir, or a model.tar.gz (unpacked safely into a temp dir)."""
    path = Path(path)
    if path.is_file() and tarfile.is_tarfile(path):
        temp_dir = Path(tempfile.mkdtemp(prefix="us8k-serve-"))
        try:
            with tarfile.open(path, "r:*") as archive:
                archive.extractall(temp_dir, filter="data")  # no absolute paths, no .., no devices
            files = locate_model(temp_dir)
        except Exception:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        files.temp_dir = temp_dir
        return files
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither an export directory nor a model.tar.gz")
    if (path / "saved_model.pb").is_file():
        metadata = path / METADATA_FILE
        return ModelFiles(path, metadata if metadata.is_file() else None)
    metadata = path / METADATA_FILE
    for parent in (path / "model", path):
        version = latest_version_dir(parent)
        if version is not None:
            return ModelFiles(version, metadata if metadata.is_file() else None)
    raise FileNotFoundError(f"no SavedModel under {path} (expected model/<version>/saved_model.pb "
                            "or <version>/saved_model.pb)")


def latest_version_dir(parent: Path) -> Path | None:
    """The highest numbered `<parent>/<n>/` holding a saved_model.pb (TF Serving's layout)."""
    if not parent.is_dir():
        return None
    versions = [p for p in parent.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


class ModelRunner:
    """The SavedModel's serving signature as a numpy function (waveform [n, L], lengths [n])."""

    def __init__(self, saved_model_dir: str | Path):
        import tensorflow as tf  # only here: the handlers and the client import no TensorFlow

        self._tf = tf
        self._loaded = tf.saved_model.load(str(saved_model_dir))
        self._signature = self._loaded.signatures["serving_default"]
        self(np.zeros((1, 1), np.float32), np.ones((1,), np.int32))  # warm up, and fail early

    def __call__(self, batch: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._signature(waveform=self._tf.constant(batch, self._tf.float32),
                                  lengths=self._tf.constant(lengths, self._tf.int32))
        return {name: outputs[name].numpy() for name in MODEL_OUTPUTS}


# ---------------------------------------------------------------- dynamic batching


@dataclass
class _Job:
    waveforms: list[np.ndarray]
    future: asyncio.Future
    rows: int = field(init=False)
    longest: int = field(init=False)

    def __post_init__(self):
        self.rows = len(self.waveforms)
        self.longest = max(w.shape[0] for w in self.waveforms)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0  # most rows in one model call

    def record(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        self.largest = max(self.largest, rows)


class DynamicBatcher:
    """Gathers concurrent requests into padded batches and runs them in one model thread.

    From the event loop: `with batcher.incoming():` around reading and parsing a request, then
    `await batcher.submit(waveforms)` for the model's outputs on those rows only. A batch waits
    up to the timeout for company only while other requests are being read or parsed: a lone
    request runs at once, so batching costs no latency when there is nothing to batch with.
    """

    def __init__(self, run: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]], *,
                 max_batch: int = MAX_BATCH, timeout_ms: float = BATCH_TIMEOUT_MS):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.max_batch = max_batch
        self.timeout_s = max(0.0, timeout_ms) / 1000.0
        self.max_padded_samples = max_batch * CLIP_SAMPLES
        self.stats = BatchStats()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._arriving = 0  # requests being read or parsed: worth waiting for
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="us8k-model")

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work())

    @contextmanager
    def incoming(self):
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            if self._wakeup is not None:
                self._wakeup.set()

    async def submit(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        if self._closing or self._task is None:
            raise RequestError(503, "the server is shutting down")
        job = _Job(waveforms, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._wakeup.set()
        return await job.future

    async def close(self) -> None:
        """Stop taking requests, answer every queued one, stop the model thread."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._executor.shutdown(wait=True)

    async def _wait(self, deadline: float | None) -> bool:
        """Sleep until something changes (a job, an arrival ending, closing) or `deadline` passes."""
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if remaining is not None and remaining <= 0:
            return False
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), remaining)
        except TimeoutError:
            return False
        return True

    def _fits(self, job: _Job, rows: int, longest: int) -> bool:
        rows, longest = rows + job.rows, max(longest, job.longest)
        return rows <= self.max_batch and rows * longest <= self.max_padded_samples

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                if self._closing:
                    return
                await self._wait(None)
            first = self._jobs.popleft()
            jobs, rows, longest = [first], first.rows, first.longest
            deadline = loop.time() + self.timeout_s
            while rows < self.max_batch:
                if not self._jobs:
                    if self._closing or not self._arriving or not await self._wait(deadline):
                        break
                    continue
                if not self._fits(self._jobs[0], rows, longest):
                    break  # it starts the next batch
                job = self._jobs.popleft()
                jobs.append(job)
                rows, longest = rows + job.rows, max(longest, job.longest)
            await self._run_batch(jobs)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # a client that gave up
        if not jobs:
            return
        batch, lengths = pad_batch([w for job in jobs for w in job.waveforms])
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch, lengths)
        except Exception as exc:  # the model failed: fail this batch, keep serving
            log.exception("model call failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.stats.record(int(batch.shape[0]))
        start = 0
        for job in jobs:
            end = start + job.rows
            if not job.future.done():
                job.future.set_result({name: value[start:end] for name, value in outputs.items()})
            start = end


# ---------------------------------------------------------------- the HTTP app


def create_app(run: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]], config: ServingConfig, *,
               max_batch: int = MAX_BATCH, batch_timeout_ms: float = BATCH_TIMEOUT_MS,
               on_ready: Callable[[], None] | None = None):
    """The Starlette app; `app.state.batcher` holds the batcher (its `.stats` say how it batched)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    batcher = DynamicBatcher(run, max_batch=max_batch, timeout_ms=batch_timeout_ms)

    def error(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def ping(request):
        return JSONResponse({"status": "ok"})

    async def invocations(request):
        try:
            with batcher.incoming():
                body = await _read_body(request)
                options = parse_options(request.headers.get(CUSTOM_ATTRIBUTES_HEADER), dict(request.query_params))
                waveforms = await run_in_threadpool(parse_request, body, request.headers.get("content-type"))
            outputs = await batcher.submit(waveforms)
            predictions = predictions_from_outputs(outputs["probabilities"], outputs["window_probabilities"],
                                                   outputs["window_count"], config=config, options=options)
            return Response(response_json(predictions), media_type=JSON_TYPE)
        except RequestError as exc:
            return error(exc.status, exc.message)
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            return error(400, "client disconnected before sending the whole body")
        except Exception as exc:  # a bug or a model failure: say so, keep serving
            log.exception("invocation failed")
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            return error(500, f"internal error: {type(exc).__name__}: {first_line}")

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, exc.detail)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await batcher.close()

    app = Starlette(routes=[Route("/ping", ping, methods=["GET"]),
                            Route("/invocations", invocations, methods=["POST"])],
                    exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.batcher = batcher
    return app


async def _read_body(request) -> bytes:
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


def _uvicorn_server(app, **config):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                         timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **config))


class ServerHandle:
    """A server running in a background thread (tests, benchmarks, the demo). `stop()` ends it."""

    def __init__(self, server, thread: threading.Thread, sock: socket.socket, model: ServedModel, app):
        self._server, self._thread, self._model = server, thread, model
        self.host, self.port = sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}" if ":" not in self.host else f"http://[{self.host}]:{self.port}"
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
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

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
        batcher = app.state.batcher
        print(f"us8k serve: stopped ({batcher.stats.rows} clips in {batcher.stats.batches} model calls)",
              flush=True)
        return 0
    finally:
        model.files.cleanup()


if __name__ == "__main__":  # pragma: no cover
    import argparse

    _parser = argparse.ArgumentParser(prog="us8k serve")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
