"""The kopf handlers: startup configuration, a level-based timer per ModelRollout, a delete watcher.

No change handlers on purpose: kopf then keeps no diff-base or progress annotations on the object.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ..runtime import Runtime, build_runtime
from ..settings import Settings

RESOURCE = ("modelrollout.dev", "v1alpha1", "modelrollouts")
FINALIZER = "modelrollout.dev/finalizer"


def register(registry: kopf.OperatorRegistry, config: Settings, runtime: Runtime | None = None) -> None:
    """Attaches the handlers; `runtime` lets tests inject adapters."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER  # timers need one; ours is named after us
        settings.posting.level = logging.WARNING  # our own events explain decisions
        settings.peering.standalone = True
        settings.execution.max_workers = config.max_workers
        memo.runtime = runtime or build_runtime(config)

    @kopf.on.login(registry=registry)  # a custom registry does not get kopf's default login
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.timer(*RESOURCE, interval=config.tick_interval, registry=registry)
    def tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        memo.runtime.tick(body)

    @kopf.on.event(*RESOURCE, registry=registry)
    def forget(type: str, name: str, namespace: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
        if type == "DELETED":
            memo.runtime.forget(namespace, name, uid)

