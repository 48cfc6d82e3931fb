"""The operator process's long-lived state and the tick driver the kopf timer calls.

Holds adapters, settings and the scheduling hint; turns exceptions into logs and metrics so a
transport error retries on the next tick instead of entering kopf's long error backoff.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import metrics as m
from .adapters import Adapters, KubeError, Owner, build_adapters
from .adapters.gateway_api import RouteError
from .adapters.kube import load_api_client
from .adapters.webhooks import WebhookNotifier
from .reconcile import Schedule, reconcile
from .settings import Settings

log = logging.getLogger(__name__)
ERROR_RETRY_SECONDS = 5.0
# How long ticks on a body older than our own last status write wait for the newer one (the
# watch delivers it within milliseconds unless it is reconnecting); then they run as before.
SUPERSEDED_GRACE_SECONDS = 5.0


@dataclass
class Runtime:
    settings: Settings
    adapters: Adapters
    schedule: Schedule = field(default_factory=Schedule)
    # uid -> the last error reported as an event; so a persisting failure is one event, not one per retry
    reported: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    # uid -> the lock serialising that rollout's ticks: its timer and the Deployment watch both tick it
    tick_locks: dict[str, threading.Lock] = field(default_factory=dict)
    tick_locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def tick(self, live_body: Mapping[str, Any]) -> None:
        """Reconciles when due (the object changed, the requeue time passed or a workload change
        woke it); never raises."""
        if not self.is_due(live_body):
            return
        body = compute_snapshot(live_body)  # kopf's body is live: freeze one consistent read
        uid = body["metadata"]["uid"]
        with self.tick_locks_guard:
            lock = self.tick_locks.setdefault(uid, threading.Lock())
        with lock:
            self._tick(body)

    def is_due(self, live_body: Mapping[str, Any]) -> bool:
        """Whether a tick now would reconcile. Most ticks are "not yet" (a timer per rollout fires
        every --tick-interval): this answers from uid and resourceVersion alone, without copying
        the body or any I/O, cheap enough for the event loop. _tick claims the tick again."""
        meta = live_body["metadata"]
        return self.schedule.is_due(meta["uid"], str(meta.get("resourceVersion", "")), self.monotonic())

    def wake(self, live_body: Mapping[str, Any]) -> None:
        """One of this rollout's workloads changed in a way that matters: tick now instead of at
        the next requeue time (the timer stays the level-based safety net)."""
        self.schedule.wake(live_body["metadata"]["uid"])
        self.tick(live_body)

    def _tick(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        uid, rv = meta["uid"], str(meta.get("resourceVersion", ""))
        if not self.schedule.claim(uid, rv, self.monotonic()):
            return
        try:
            outcome = reconcile(body, self.adapters, self.settings, self.clock())
        except (KubeError, RouteError) as err:
            self._failed(uid, rv, meta, "api", err)
            return
        except Exception as err:  # noqa: BLE001 - log with traceback, keep the operator alive
            log.exception("reconcile of %s/%s crashed", meta["namespace"], meta["name"])
            self._failed(uid, rv, meta, "crash", err)
            return
        self.reported.pop(uid, None)
        # After our own write the object has a new resourceVersion, so the next tick runs at once
        # and re-reads; otherwise sleep until decide() wants to look again.
        now = self.monotonic()
        if outcome.written:
            self.schedule.supersede(uid, rv, now + SUPERSEDED_GRACE_SECONDS)
        self.schedule.set(uid, rv, now + (0.0 if outcome.conflict else outcome.requeue_after))

    def _failed(self, uid: str, rv: str, meta: Mapping[str, Any], kind: str, err: Exception) -> None:
        m.RECONCILE_ERRORS.labels(kind).inc()
        log.warning(
            "reconcile of %s/%s failed (%s), retrying in %.0fs: %s",
            meta["namespace"],
            meta["name"],
            kind,
            ERROR_RETRY_SECONDS,
            err,
        )
        self.schedule.set(uid, rv, self.monotonic() + ERROR_RETRY_SECONDS)
        message = f"{err}; retrying every {ERROR_RETRY_SECONDS:.0f}s"
        if self.reported.get(uid) != message:  # status may not move at all: say why in an event
            self.reported[uid] = message
            owner = Owner(meta["name"], meta["namespace"], uid)
            self.adapters.events.emit(owner, "Warning", "ReconcileError", message)

    def forget(self, namespace: str, name: str, uid: str) -> None:
        self.schedule.forget(uid)
        with self.tick_locks_guard:
            self.tick_locks.pop(uid, None)
        self.reported.pop(uid, None)
        m.ROLLOUTS.forget(namespace, name)


async def run_in_executor(executor: Executor | None, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on a thread of `executor`, as kopf runs a sync handler: a cancellation (the
    rollout deleted, the operator stopping) waits for the thread to finish before it goes on, so
    kopf never releases a finalizer while that rollout's tick still runs."""
    context = contextvars.copy_context()
    future = asyncio.get_running_loop().run_in_executor(executor, context.run, fn, *args)
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as err:
            cancelled = err
    if cancelled is not None:
        raise cancelled
    return future.result()


def compute_snapshot(value: Any) -> Any:
    """A plain deep copy of kopf's (live, view-based) body."""
    if isinstance(value, Mapping):
        return {k: compute_snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [compute_snapshot(v) for v in value]
    return value


def build_runtime(settings: Settings) -> Runtime:
    adapters = build_adapters(
        load_api_client(connections=settings.max_workers),  # each reconcile thread keeps its connection
        prometheus_timeout=settings.prometheus_timeout,
        kube_timeout=settings.kube_timeout,
        field_manager=settings.field_manager,
        router_endpoints_source=settings.router_endpoints_source,
        pods=settings.pod_settings(),
        on_call=m.record_api_call,
        on_query=m.record_query,
        notifier=build_notifier(settings),
    )
    return Runtime(settings=settings, adapters=adapters)


def build_notifier(settings: Settings) -> WebhookNotifier:
    """Built with the runtime, i.e. in kopf's startup, which only the leader reaches (main.py);
    its threads start with the first notification."""
    return WebhookNotifier(
        queue_size=settings.notification_queue_size,
        workers=settings.notification_workers,
        max_attempts=settings.notification_max_attempts,
        on_result=m.record_notification,
        on_depth=m.record_notification_queue,
    )
