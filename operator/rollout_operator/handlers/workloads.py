"""The Deployment watch: a change to a rollout's model-server Deployment that matters (readiness,
availability, generation) ticks that rollout now instead of at its next requeue (workload_watch.py).

Read-only: no handler here writes anything, so kopf keeps no state on the Deployments.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..adapters.manifests import NAME_LABEL, ROLLOUT_LABEL
from ..runtime import compute_snapshot
from ..workload_watch import WATCH_LABEL_SELECTOR, WorkloadWatch, apply_workload_event

DEPLOYMENTS = ("apps", "v1", "deployments")


def configure_workload_watch(settings: kopf.OperatorSettings, memo: kopf.Memo) -> None:
    """At startup: the API server sends only model-server Deployments of rollouts (server-side
    label selector), and the watch's memory of their readiness starts empty."""
    settings.watching.label_selectors[DEPLOYMENTS] = WATCH_LABEL_SELECTOR
    memo.workload_watch = WorkloadWatch()


def register_workload_watch(registry: kopf.OperatorRegistry, rollouts: tuple[str, str, str]) -> None:
    """Attaches the watch; `rollouts` is the ModelRollout resource (group, version, plural)."""

    # The id is the keyword the index arrives under (kopf's default id is the qualified name).
    @kopf.index(*rollouts, id="rollouts_by_uid", registry=registry)
    def rollouts_by_uid(uid: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
        return {uid: compute_snapshot(body)}  # the latest body, for ticking it from a Deployment event

    # kopf passes type=None for the initial listing and hands indices over as extra keyword arguments;
    # its WatchingFn protocol declares neither (type: str, no required `rollouts_by_uid`), hence the ignore.
    @kopf.on.event(  # type: ignore[arg-type]
        *DEPLOYMENTS,
        labels={ROLLOUT_LABEL: kopf.PRESENT, NAME_LABEL: "model-server"},
        registry=registry,
    )
    def workload_changed(
        type: str | None, body: kopf.Body, memo: kopf.Memo, rollouts_by_uid: kopf.Index[str, Any], **_: Any
    ) -> None:
        apply_workload_event(memo.workload_watch, memo.runtime, type, body, rollouts_by_uid)
