"""Dynamic batching for the local endpoint: concurrent requests → one zero-padded model call.

A request waits up to the batch timeout for others that are still being read or parsed (a lone
request does not wait), then they run as one batch of at most `max_batch` rows with the
signature's `lengths` input, so each answer equals the one the request gets alone. One model
call runs at a time, in its own thread; requests that arrive meanwhile form the next batch. A
batch is also capped at max_batch × 4 s of padded samples, so one long clip does not pad thirty
short ones to its length.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
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

    def __init__(self, run: ModelCall, *, max_batch: int = MAX_BATCH, timeout_ms: float = BATCH_TIMEOUT_MS):
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
