"""Dynamic batching for the local endpoint: concurrent requests → model calls of 4 s windows.

Every clip of a request is cut into the model's 4 s windows every 2 s (`tfdata.windowing`, the
graph's own arithmetic: the last window zero padded), and model calls take up to `max_batch`
windows, each a full-length row of the serving signature; each clip's answer is its windows'
mean (`tfdata.windowing.average_windows`), which is what the signature answers for the whole clip
(to float rounding: tested to 2e-6). So a model call's input is at most max_batch × 88200 samples
whatever the requests hold: a 10-minute clip runs as ten calls of ≤ 32 windows and costs the
server its waveform plus one call's working set, not the graph's copies of the whole clip; and
concurrent requests share calls (a long one does not hold the model for its whole length: after
each call, a request with windows left goes to the back of the queue).

A call waits up to the batch timeout for windows of requests that are still being read or parsed
(a lone request does not wait). One model call runs at a time, in its own thread; requests that
arrive meanwhile join the next one. `observer` (serving.metrics) is told each call's rows
(windows) and seconds.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from serving.inference import RequestError
from tfdata.contract import CLIP_SAMPLES
from tfdata.layout import OUTPUT_PROBABILITIES, OUTPUT_WINDOW_COUNT, OUTPUT_WINDOW_PROBABILITIES
from tfdata.windowing import average_windows, fill_windows, window_index

MAX_BATCH = 32  # windows per model call (models/export.py's WINDOW_BATCH: one network call in the graph)
BATCH_TIMEOUT_MS = 5.0  # how long the first request of a batch waits for others

log = logging.getLogger("us8k.serve.batcher")

ModelCall = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]  # (batch, lengths) → outputs
CallObserver = Callable[[int, float], None]  # (rows, seconds) of one model call


@dataclass
class _Job:
    """One request's clips as windows; `next` windows handed out, `probabilities` filled as calls return."""
    waveforms: list[np.ndarray]
    future: asyncio.Future
    clip_of: np.ndarray = field(init=False)  # [windows] the window's clip
    start_of: np.ndarray = field(init=False)  # [windows] its first sample in that clip
    next: int = 0
    done: int = 0
    probabilities: np.ndarray | None = None  # [windows, classes]

    def __post_init__(self):
        self.clip_of, self.start_of = window_index([w.shape[0] for w in self.waveforms])

    @property
    def windows(self) -> int:
        return int(self.clip_of.shape[0])

    @property
    def remaining(self) -> int:
        return self.windows - self.next

    def fill(self, out: np.ndarray, first: int) -> None:
        """Windows first..first+len(out) into `out` (zero past each clip's end)."""
        last = first + out.shape[0]
        fill_windows(out, self.waveforms, self.clip_of[first:last], self.start_of[first:last])

    def outputs(self) -> dict[str, np.ndarray]:
        """The serving signature's answer outputs for this request's clips, from its windows."""
        mean, windows, counts = average_windows(self.probabilities, self.clip_of, len(self.waveforms))
        return {OUTPUT_PROBABILITIES: mean, OUTPUT_WINDOW_PROBABILITIES: windows, OUTPUT_WINDOW_COUNT: counts}


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0  # windows through the model
    largest: int = 0  # most windows in one model call
    clips: int = 0  # clips answered

    def record(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        self.largest = max(self.largest, rows)


class DynamicBatcher:
    """Gathers concurrent requests' windows into model calls and runs them in one model thread.

    From the event loop: `with batcher.incoming():` around reading and parsing a request, then
    `await batcher.submit(waveforms)` for the serving signature's outputs on those clips
    (probabilities [n, C], window_probabilities [n, K, C], window_count [n]). A call waits up to
    the timeout for company only while other requests are being read or parsed: a lone request
    runs at once, so batching costs no latency when there is nothing to batch with.
    """

    def __init__(self, run: ModelCall, *, max_batch: int = MAX_BATCH, timeout_ms: float = BATCH_TIMEOUT_MS,
                 observer: CallObserver | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self._observer = observer
        self.max_batch = max_batch
        self.timeout_s = max(0.0, timeout_ms) / 1000.0
        self.stats = BatchStats()
        self._jobs: collections.deque[_Job] = collections.deque()  # with windows not yet handed out
        self._arriving = 0  # requests being read or parsed: worth waiting for
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="us8k-model")

    @property
    def queue_depth(self) -> int:
        """Requests parsed and waiting for (more of) their model calls."""
        return len(self._jobs)

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

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                if self._closing:
                    return
                await self._wait(None)
            pieces, rows = [], 0  # (job, first window, count)
            deadline = loop.time() + self.timeout_s
            while rows < self.max_batch:
                if not self._jobs:
                    if self._closing or not self._arriving or not await self._wait(deadline):
                        break
                    continue
                job = self._jobs.popleft()
                if job.future.done():  # a client that gave up
                    continue
                take = min(job.remaining, self.max_batch - rows)
                pieces.append((job, job.next, take))
                job.next += take
                rows += take
            if pieces:
                await self._run_batch(pieces, rows)

    async def _run_batch(self, pieces: list[tuple[_Job, int, int]], rows: int) -> None:
        batch = np.empty((rows, CLIP_SAMPLES), np.float32)
        row = 0
        for job, first, count in pieces:
            job.fill(batch[row:row + count], first)
            row += count
        lengths = np.full((rows,), CLIP_SAMPLES, np.int32)
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch, lengths)
            probabilities = np.asarray(outputs[OUTPUT_PROBABILITIES])
        except Exception as exc:  # the model failed: fail these requests, keep serving
            log.exception("model call failed")
            for job, _, _ in pieces:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        del batch
        self.stats.record(rows)
        if self._observer is not None:
            self._observer(rows, time.perf_counter() - started)
        row = 0
        for job, first, count in pieces:
            if job.probabilities is None:
                job.probabilities = np.zeros((job.windows, probabilities.shape[1]), np.float32)
            job.probabilities[first:first + count] = probabilities[row:row + count]
            row += count
            job.done += count
            if job.future.done():
                continue
            if job.done == job.windows:
                self.stats.clips += len(job.waveforms)
                job.future.set_result(job.outputs())
            elif job.next < job.windows:
                self._jobs.append(job)  # its next windows, after the requests that came meanwhile
