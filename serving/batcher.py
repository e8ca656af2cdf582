"""Dynamic batching for the local endpoint: concurrent requests → one zero-padded model call.

A request waits up to the batch timeout for others that are still being read or parsed (a lone
request does not wait), then they run as one batch of at most `max_batch` rows with the
signature's `lengths` input, so each answer equals the one the request gets alone. One model
call runs at a time, in its own thread; requests that arrive meanwhile form the next batch. A
model call is also capped at max_batch × 4 s of padded samples (`max_padded_samples`): requests
that would exceed it go to the next batch, and the rows of one request that exceed it (64 rows,
one of them 10 minutes long) are split over several calls, so a model call's input is at most
max(max_padded_samples, the longest row) samples and one long clip never pads thirty short ones
to its length. `observer` (serving.metrics) is told each model call's rows and seconds.
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
from tfdata.batching import pad_batch
from tfdata.contract import CLIP_SAMPLES

MAX_BATCH = 32  # rows per model call
BATCH_TIMEOUT_MS = 5.0  # how long the first request of a batch waits for others

log = logging.getLogger("us8k.serve.batcher")

ModelCall = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]  # (batch, lengths) → outputs
CallObserver = Callable[[int, float], None]  # (rows, seconds) of one model call


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

    def __init__(self, run: ModelCall, *, max_batch: int = MAX_BATCH, timeout_ms: float = BATCH_TIMEOUT_MS,
                 observer: CallObserver | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self._observer = observer
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

    @property
    def queue_depth(self) -> int:
        """Requests parsed and waiting for a model call."""
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

    def _calls(self, waveforms: list[np.ndarray]) -> list[list[int]]:
        """Row indices per model call, in order: ≤ max_batch rows and ≤ max_padded_samples padded
        samples each (a row longer than that alone)."""
        calls, current, longest = [], [], 0
        for index, waveform in enumerate(waveforms):
            width = max(longest, waveform.shape[0])
            if current and (len(current) + 1 > self.max_batch or (len(current) + 1) * width > self.max_padded_samples):
                calls.append(current)
                current, width = [], waveform.shape[0]
            current.append(index)
            longest = width
        if current:
            calls.append(current)
        return calls

    async def _run_batch(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # a client that gave up
        if not jobs:
            return
        waveforms = [w for job in jobs for w in job.waveforms]
        loop = asyncio.get_running_loop()
        parts = []
        try:
            for rows in self._calls(waveforms):
                batch, lengths = pad_batch([waveforms[i] for i in rows])
                started = time.perf_counter()
                parts.append(await loop.run_in_executor(self._executor, self._run, batch, lengths))
                self.stats.record(int(batch.shape[0]))
                if self._observer is not None:
                    self._observer(int(batch.shape[0]), time.perf_counter() - started)
        except Exception as exc:  # the model failed: fail this batch, keep serving
            log.exception("model call failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        outputs = _concatenate(parts)
        start = 0
        for job in jobs:
            end = start + job.rows
            if not job.future.done():
                job.future.set_result({name: value[start:end] for name, value in outputs.items()})
            start = end


def _concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Outputs of consecutive model calls → one set of rows; per-window outputs ([n, windows, …])
    are zero padded to the most windows of any call (zeros past a row's own windows, as the graph)."""
    if len(parts) == 1:
        return parts[0]
    joined = {}
    for name in parts[0]:
        values = [part[name] for part in parts]
        if values[0].ndim >= 2 and len({v.shape[1] for v in values}) > 1:
            width = max(v.shape[1] for v in values)
            values = [np.pad(v, [(0, 0), (0, width - v.shape[1])] + [(0, 0)] * (v.ndim - 2)) for v in values]
        joined[name] = np.concatenate(values)
    return joined
