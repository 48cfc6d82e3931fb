"""The kopf handlers: startup configuration, a level-based timer per ModelRollout, a delete watcher
and the Deployment watch (workloads.py).

No change handlers on purpose: kopf then keeps no diff-base or progress annotations on the object.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ..runtime import Runtime, build_runtime, run_in_executor
from ..settings import Settings
from .workloads import configure_workload_watch, register_workload_watch

RESOURCE = ("modelrollout.dev", "v1alpha1", "modelrollouts")
FINALIZER = "modelrollout.dev/finalizer"


# The API server ends each watch after this long and kopf starts a new one; the client gives
# up on a watch request that outlives it by more than one call's deadline. An int: kopf sends
# it as `timeoutSeconds=str(value)`, and the API server refuses "300.0" (400, ParseInt).
WATCH_SERVER_TIMEOUT = 300


def configure_kopf_timeouts(settings: kopf.OperatorSettings, kube_timeout: float) -> None:
    """Bounds kopf's own API calls (its patches, lists and watches) like ours: kopf's defaults
    are 5 minutes per request and no bound on a watch stream or its connect."""
    settings.networking.request_timeout = kube_timeout  # aiohttp's total: connect to last byte
    settings.networking.connect_timeout = kube_timeout
    settings.watching.connect_timeout = kube_timeout
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT + kube_timeout


def register(registry: kopf.OperatorRegistry, config: Settings, runtime: Runtime | None = None) -> None:
    """Attaches the handlers; `runtime` lets tests inject adapters."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER  # timers need one; ours is named after us
        settings.posting.level = logging.WARNING  # our own events explain decisions
        settings.peering.standalone = True
        settings.execution.max_workers = config.max_workers
        configure_kopf_timeouts(settings, config.kube_timeout)
        memo.runtime = runtime or build_runtime(config)
        memo.executor = settings.execution.executor  # kopf's, sized by max_workers: the reconcile threads
        configure_workload_watch(settings, memo)

    @kopf.on.login(registry=registry)  # a custom registry does not get kopf's default login
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    # Async, so the "not yet" answer (most ticks) costs no thread hop: a sync handler goes through
    # kopf's executor, where at 1,000 rollouts a tick a second each queues behind the due reconciles.
    @kopf.timer(*RESOURCE, interval=config.tick_interval, registry=registry)
    async def tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if memo.runtime.is_due(body):
            await run_in_executor(memo.executor, memo.runtime.tick, body)

    @kopf.on.event(*RESOURCE, registry=registry)  # async: runs on every event, a dict lookup unless DELETED
    async def forget(type: str, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any) -> None:
        if type == "DELETED":
            assert namespace is not None, "ModelRollout is a namespaced resource"
            memo.runtime.forget(namespace, name, uid)

    register_workload_watch(registry, RESOURCE)  # readiness changes tick at once; the timer stays
