"""Adaptive batching: clips queue while a pipeline batch runs on a worker thread, then go together.

At low load every batch is one request (no added wait); under load a batch is whatever queued meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from speech_serving.pipeline import ClipResult, StageTimes

_Item = tuple[list[np.ndarray], asyncio.Future]


class BatchPipeline(Protocol):
    """What the batcher runs: a SpeechPipeline (or a test's stand-in with the same method)."""

    def run_batch(self, clips: list[np.ndarray]) -> tuple[list[ClipResult], StageTimes]: ...


class BatcherClosed(RuntimeError):
    """The batcher was closed: it runs no more batches (the model is stopping or stopped)."""


class AdaptiveBatcher:
    """Runs submitted clips through one SpeechPipeline on up to `threads` worker threads."""

    def __init__(
        self,
        pipeline: BatchPipeline,
        max_batch: int = 16,
        threads: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._pipeline = pipeline
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="speech-pipeline")
        self._pending: list[_Item] = []
        self._running = 0
        self.closed = False

    async def submit(self, clips: list[np.ndarray]) -> tuple[list[ClipResult], StageTimes, int]:
        """Results for `clips`, the stage times of the batch they ran in and that batch's size."""
        if self.closed:
            raise BatcherClosed("the pipeline workers are stopped")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((clips, future))
        if self._running < self._threads:
            self._start_batch()
        return await future

    def _start_batch(self) -> None:
        items: list[_Item] = []
        size = 0
        # A request is never split: one bigger than max_batch runs alone.
        while self._pending and (not items or size + len(self._pending[0][0]) <= self._max_batch):
            item = self._pending.pop(0)
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
        if self._pending and self._running < self._threads:
            self._start_batch()

    @staticmethod
    def _fail_all(items: list[_Item], error: BaseException) -> None:
        for _, future in items:
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        pending, self._pending = self._pending, []
        self._fail_all(pending, BatcherClosed("the pipeline workers are stopped"))
