"""The adaptive batcher's busy wait: a free worker waits for more clips beside a running batch, only under load.

Orderings only (which clips ran together), no timings: a blocking pipeline decides when each batch may end.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from speech_serving.pipeline import ClipResult, StageTimes
from speech_serving.server.batching import AdaptiveBatcher

pytestmark = pytest.mark.unit
HANG = 60  # seconds: wait_for turns a hang into a failure; it is not a latency bound


class GatedPipeline:
    """run_batch blocks until the test opens the gate named by the batch's first clip length; records batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Semaphore(0)  # one release per batch that began running
        self._gates: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def gate(self, n: int) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(n, threading.Event())

    def open(self, *ns: int) -> None:
        for n in ns:
            self.gate(n).set()

    def run_batch(self, clips):
        self.batches.append([len(c) for c in clips])
        self.started.release()
        self.gate(len(clips[0])).wait(timeout=HANG)
        return [ClipResult(str(len(c)), 0.5, (), len(c) / 16000, 0.0) for c in clips], StageTimes()


def clip(n: int) -> list[np.ndarray]:
    return [np.zeros(n, np.float32)]


async def wait_started(pipe: GatedPipeline, batches: int) -> None:
    for _ in range(batches):
        assert await asyncio.wait_for(asyncio.to_thread(pipe.started.acquire, True, HANG), HANG)


async def make_grouping(batcher: AdaptiveBatcher, pipe: GatedPipeline) -> None:
    """Single-clip batches on both workers while two more requests queue; those two then run as one batch."""
    first = [asyncio.ensure_future(batcher.submit(clip(n))) for n in (1, 2)]
    await wait_started(pipe, 2)
    queued = [asyncio.ensure_future(batcher.submit(clip(n))) for n in (3, 4)]
    await asyncio.sleep(0)
    pipe.open(1, 2)
    await asyncio.wait_for(asyncio.gather(*first), HANG)
    await wait_started(pipe, 1)
    pipe.open(3)
    await asyncio.wait_for(asyncio.gather(*queued), HANG)  # the last batch to finish held two requests
    assert sorted(pipe.batches[:2]) == [[1], [2]] and pipe.batches[2] == [3, 4]


async def test_without_overlapping_requests_a_free_worker_never_waits():
    pipe = GatedPipeline()
    batcher = AdaptiveBatcher(pipe, max_batch=4, threads=2, busy_wait_s=HANG * 10)
    running = asyncio.ensure_future(batcher.submit(clip(1)))
    await wait_started(pipe, 1)
    second = asyncio.ensure_future(batcher.submit(clip(2)))  # beside a running batch, but no groups yet
    await wait_started(pipe, 1)
    assert sorted(pipe.batches) == [[1], [2]]
    pipe.open(1, 2)
    await asyncio.wait_for(asyncio.gather(running, second), HANG)
    batcher.close()


async def test_under_load_a_free_worker_waits_and_takes_what_arrived_meanwhile_up_to_max_batch():
    pipe = GatedPipeline()
    batcher = AdaptiveBatcher(pipe, max_batch=4, threads=2, busy_wait_s=HANG * 10)
    await make_grouping(batcher, pipe)
    running = asyncio.ensure_future(batcher.submit(clip(5)))  # an idle server starts at once
    await wait_started(pipe, 1)
    waiting = [asyncio.ensure_future(batcher.submit(clip(n))) for n in (6, 7, 8)]
    await asyncio.sleep(0.05)
    assert pipe.batches[-1] == [5]  # the free worker is waiting for more, not running [6]
    waiting.append(asyncio.ensure_future(batcher.submit(clip(9))))  # the fourth clip fills max_batch: go
    await wait_started(pipe, 1)
    assert pipe.batches[-1] == [6, 7, 8, 9]
    pipe.open(5, 6)
    answers = await asyncio.wait_for(asyncio.gather(running, *waiting), HANG)
    assert [a[0][0].label for a in answers] == ["5", "6", "7", "8", "9"]
    batcher.close()


async def test_the_busy_wait_ends_by_itself_and_the_waiting_clips_run_beside_the_running_batch():
    pipe = GatedPipeline()
    batcher = AdaptiveBatcher(pipe, max_batch=4, threads=2, busy_wait_s=0.01)
    await make_grouping(batcher, pipe)
    running = asyncio.ensure_future(batcher.submit(clip(5)))
    await wait_started(pipe, 1)
    waiting = asyncio.ensure_future(batcher.submit(clip(6)))
    await wait_started(pipe, 1)  # while [5] still blocks: the second worker started after its wait
    assert pipe.batches[-2:] == [[5], [6]]
    pipe.open(5, 6)
    await asyncio.wait_for(asyncio.gather(running, waiting), HANG)
    batcher.close()


async def test_close_during_a_busy_wait_fails_the_waiting_requests():
    from speech_serving.server.batching import BatcherClosed

    pipe = GatedPipeline()
    batcher = AdaptiveBatcher(pipe, max_batch=4, threads=2, busy_wait_s=HANG * 10)
    await make_grouping(batcher, pipe)
    running = asyncio.ensure_future(batcher.submit(clip(5)))
    await wait_started(pipe, 1)
    waiting = asyncio.ensure_future(batcher.submit(clip(6)))
    await asyncio.sleep(0)
    batcher.close()
    with pytest.raises(BatcherClosed):
        await asyncio.wait_for(waiting, HANG)
    pipe.open(5)
    await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), HANG)
    assert [6] not in pipe.batches
