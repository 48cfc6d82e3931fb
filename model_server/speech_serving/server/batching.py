"""Adaptive batching: clips queue while a pipeline batch runs on a worker thread, then go together.

At low load every batch is one request (no added wait); under load a batch is whatever queued meanwhile,
and a free worker waits up to BUSY_WAIT_S for more before starting a batch beside a running one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from speech_serving.pipeline import ClipResult, SpeechPipeline, StageTimes

_Item = tuple[list[np.ndarray], asyncio.Future]
# How long a free worker waits for more clips while another batch runs. Under load, answers leave in groups
# (a batch) and their next requests come back one by one; starting on the first one made batches of ~1.8
# clips at concurrency 8, each paying the per-batch costs (thread hand-off, recognizer call) alone. Only
# while batches hold several requests: an idle server, or clients that never overlap, never wait.
BUSY_WAIT_S = 0.003


class BatcherClosed(RuntimeError):
    """The batcher was closed: it runs no more batches (the model is stopping or stopped)."""


class AdaptiveBatcher:
    """Runs submitted clips through one SpeechPipeline on up to `threads` worker threads."""

    def __init__(
        self, pipeline: SpeechPipeline, max_batch: int = 16, threads: int = 1,
        on_batch: Callable[[int], None] | None = None, busy_wait_s: float = BUSY_WAIT_S,
    ):
        self._pipeline = pipeline
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="speech-pipeline")
        self._pending: list[_Item] = []
        self._pending_clips = 0
        self._running = 0
        self._busy_wait_s = busy_wait_s
        self._timer: asyncio.TimerHandle | None = None
        self._grouping = False  # the last finished batch held more than one request
        self.closed = False

    async def submit(self, clips: list[np.ndarray]) -> tuple[list[ClipResult], StageTimes, int]:
        """Results for `clips`, the stage times of the batch they ran in and that batch's size."""
        if self.closed:
            raise BatcherClosed("the pipeline workers are stopped")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((clips, future))
        self._pending_clips += len(clips)
        if self._running == 0 or not self._grouping or self._pending_clips >= self._max_batch:
            self._start_batch()
        elif self._running < self._threads and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._busy_wait_s, self._on_busy_wait_over)
        return await future

    def _on_busy_wait_over(self) -> None:
        self._timer = None
        if not self.closed:
            self._start_batch()

    def _start_batch(self) -> None:
        """Run what is pending (up to max_batch clips) on a free worker; nothing when none is free."""
        if self._running >= self._threads:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items: list[_Item] = []
        size = 0
        # A request is never split: one bigger than max_batch runs alone.
        while self._pending and (not items or size + len(self._pending[0][0]) <= self._max_batch):
            item = self._pending.pop(0)
            self._pending_clips -= len(item[0])
            if item[1].cancelled():
                continue
            items.append(item)
            size += len(item[0])
        if not items:
            return
        clips = [clip for item in items for clip in item[0]]
        try:
            task = asyncio.get_running_loop().run_in_executor(self._executor, self._pipeline.run_batch, clips)
        except RuntimeError:  # the executor was shut down: fail these requests instead of queueing forever
            self._fail_all(items, BatcherClosed("the pipeline workers are stopped"))
            return
        self._running += 1
        task.add_done_callback(lambda done: self._finish(items, len(clips), done))

    def _finish(self, items: list[_Item], size: int, done: asyncio.Future) -> None:
        self._running -= 1
        self._grouping = len(items) > 1 and self._busy_wait_s > 0
        if self._on_batch is not None:
            self._on_batch(size)
        # A batch cancelled by close() must still release its slot and fail its requests; before, the
        # slot leaked and every later request queued behind it forever.
        error = BatcherClosed("the pipeline workers are stopped") if done.cancelled() else done.exception()
        if error is None:
            results, times = done.result()
            pos = 0
            for clips, future in items:
                if not future.done():
                    future.set_result((results[pos : pos + len(clips)], times, size))
                pos += len(clips)
        else:
            self._fail_all(items, error)
        if self._pending:  # they waited for this worker already: no busy wait
            self._start_batch()

    @staticmethod
    def _fail_all(items: list[_Item], error: BaseException) -> None:
        for _, future in items:
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        pending, self._pending, self._pending_clips = self._pending, [], 0
        self._fail_all(pending, BatcherClosed("the pipeline workers are stopped"))
