"""Webhook delivery of notifications: a bounded in-memory queue, a few worker threads, retries.

`notify` never blocks and never raises: a full queue drops its oldest entry (counted), and a dead,
slow or hung receiver costs a worker at most one attempt's total deadline; a retry waits in the
queue (not in a worker) until its backoff has passed. Delivery is at most once: the queue lives in
this process only (a restart or a lost leadership drops what it holds).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3

from ..domain.notifications import Receiver
from .deadline import Deadline, install_on_pool_manager

log = logging.getLogger(__name__)

# Named defaults (settings.py passes the operator's flags).
QUEUE_SIZE = 1000  # notifications waiting or between attempts, over all receivers
WORKERS = 2
MAX_ATTEMPTS = 5
BACKOFF_BASE = 1.0  # seconds before the 2nd attempt; doubled per attempt
BACKOFF_MAX = 60.0
# Only the status line matters; a receiver's answer body is read this far for the log, no further.
MAX_ANSWER_BYTES = 4096
# Retried: the receiver may take it later. Any other 4xx is the request's fault (URL, token):
# sending the same bytes again cannot help. 3xx is not followed (a redirect could take the POST
# to an address the configuration never named) and not retried.
RETRIED_STATUSES = frozenset({408, 429})

ResultHook = Callable[[str, str], None]  # (receiver, delivered | failed | dropped)
DepthHook = Callable[[int], None]


def compute_backoff(attempt: int, base: float, cap: float, draw: float) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): base·2^(attempt-1) capped, then
    "equal jitter" (half fixed, half drawn; `draw` in [0, 1)) so receivers that fail together do
    not all get their retries at the same instant, and no retry comes sooner than half the step."""
    step = min(cap, base * 2 ** (attempt - 1))
    return step / 2 + step / 2 * draw


def compute_retry_delay(attempt: int, base: float, cap: float, draw: float, retry_after: float | None) -> float:
    """The backoff, or longer when the receiver said when to come back (Retry-After on a 429 or
    503), but never beyond the cap: a receiver cannot park a notification for an hour."""
    delay = compute_backoff(attempt, base, cap, draw)
    return delay if retry_after is None else max(delay, min(retry_after, cap))


def read_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delay-seconds form; an HTTP date is ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


@dataclass(order=True)
class _Entry:
    due: float  # monotonic time of the next attempt
    seq: int  # arrival order: the oldest entry is dropped first
    receiver: Receiver = field(compare=False)
    body: bytes = field(compare=False)
    what: str = field(compare=False)  # for the logs, e.g. "team-a/speech Promoted"
    attempt: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: delivered, or failed and whether to try again."""

    delivered: bool
    retry: bool
    detail: str
    retry_after: float | None = None  # seconds the receiver asked for (Retry-After)


class WebhookNotifier:
    """Queue + workers; the threads start with the first notification (a standby replica never
    reaches one: only the leader reconciles, see docs/operator.md)."""

    def __init__(
        self,
        *,
        queue_size: int = QUEUE_SIZE,
        workers: int = WORKERS,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        on_result: ResultHook | None = None,
        on_depth: DepthHook | None = None,
        draw: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue_size, self._workers, self._max_attempts = queue_size, workers, max_attempts
        self._backoff = (backoff_base, backoff_max)
        self._on_result = on_result or (lambda receiver, result: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._draw, self._monotonic = draw, monotonic
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._pool = urllib3.PoolManager(num_pools=16, maxsize=workers, retries=False)
        install_on_pool_manager(self._pool)

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._heap)

    def notify(self, receiver: Receiver, payload: Mapping[str, Any], what: str = "") -> None:
        """Queues one delivery and returns at once."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        dropped: _Entry | None = None
        with self._cond:
            if self._closed:
                return
            self._start_workers()
            if len(self._heap) >= self._queue_size:
                dropped = min(self._heap, key=lambda e: e.seq)
                self._heap.remove(dropped)
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, _Entry(self._monotonic(), next(self._seq), receiver, body, what))
            depth = len(self._heap)
            self._cond.notify()
        if dropped is not None:
            log.warning(
                "notification queue full (%d): dropped the oldest, %s to %s",
                self._queue_size,
                dropped.what,
                dropped.receiver.name,
            )
            self._on_result(dropped.receiver.name, "dropped")
        self._on_depth(depth)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the workers (an attempt in flight ends at its deadline); drops what is queued."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._pool.clear()
        self._on_depth(0)

    def _start_workers(self) -> None:
        if self._threads:
            return
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"webhook-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _next(self) -> _Entry | None:
        """The next entry whose time has come, waiting for it; None once closed."""
        with self._cond:
            while not self._closed:
                if self._heap:
                    wait = self._heap[0].due - self._monotonic()
                    if wait <= 0:
                        entry = heapq.heappop(self._heap)
                        self._on_depth(len(self._heap))
                        return entry
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (entry := self._next()) is not None:
            try:
                outcome = self.deliver(entry.receiver, entry.body)
            except Exception as err:  # noqa: BLE001 - a worker must outlive any bug in one delivery
                log.exception("webhook worker: delivering %s to %s crashed", entry.what, entry.receiver.name)
                outcome = Outcome(False, False, f"crashed: {type(err).__name__}")
            self._settle(entry, outcome)

    def _settle(self, entry: _Entry, outcome: Outcome) -> None:
        name = entry.receiver.name
        if outcome.delivered:
            self._on_result(name, "delivered")
            return
        if outcome.retry and entry.attempt < self._max_attempts:
            delay = compute_retry_delay(entry.attempt, *self._backoff, self._draw(), outcome.retry_after)
            log.info(
                "notification %s to %s: attempt %d failed (%s); retrying in %.1fs",
                entry.what,
                name,
                entry.attempt,
                outcome.detail,
                delay,
            )
            entry.attempt += 1
            entry.due = self._monotonic() + delay
            with self._cond:
                if not self._closed and len(self._heap) < self._queue_size:
                    heapq.heappush(self._heap, entry)
                    self._cond.notify()
                    self._on_depth(len(self._heap))
                    return
            self._on_result(name, "dropped")  # the queue filled up meanwhile: newer ones go first
            return
        log.warning(
            "notification %s to %s failed after %d attempt(s): %s", entry.what, name, entry.attempt, outcome.detail
        )
        self._on_result(name, "failed")

    def deliver(self, receiver: Receiver, body: bytes) -> Outcome:
        """One POST under the receiver's total deadline (connect, send, status line and the
        bounded read of the answer); never raises for the receiver's behaviour."""
        headers = {**receiver.headers, "Content-Type": "application/json", "User-Agent": "modelrollout-operator"}
        timeout = urllib3.Timeout(connect=receiver.timeout_seconds, read=receiver.timeout_seconds)
        with Deadline(receiver.timeout_seconds) as deadline:
            try:
                answer = self._pool.request(
                    "POST",
                    receiver.url,
                    body=body,
                    headers=headers,
                    timeout=timeout,
                    retries=False,
                    redirect=False,
                    preload_content=False,
                )
                try:
                    text = answer.read(MAX_ANSWER_BYTES)
                finally:
                    answer.close()  # an unread rest of the answer never returns to the pool
            except urllib3.exceptions.HTTPError as err:
                if deadline.expired:
                    return Outcome(False, True, str(deadline.error()))
                return Outcome(False, True, f"{type(err).__name__}: {str(err)[:200]}")
        if deadline.expired:
            return Outcome(False, True, str(deadline.error()))
        return compute_outcome(answer.status, text, read_retry_after(answer.headers.get("Retry-After")))


def compute_outcome(status: int, body: bytes, retry_after: float | None = None) -> Outcome:
    """2xx delivered; 5xx, 408 and 429 retried; other statuses failed for good."""
    if 200 <= status < 300:
        return Outcome(True, False, f"HTTP {status}")
    detail = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    return Outcome(False, status >= 500 or status in RETRIED_STATUSES, detail, retry_after)
