"""Which Deployment events bring a rollout's next tick forward: the shell behind handlers/workloads.py.

The domain reads a version's readiness from its Deployment (adapters/kube_workloads.py); when that
changes, the rollout ticks at once instead of at its next requeue time. The timer stays the safety net.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .adapters.manifests import NAME_LABEL, ROLLOUT_LABEL

GROUP = "modelrollout.dev"
# The watch only ever sees model-server Deployments (a server-side label selector): the router's
# readiness is not something the domain reads, and nobody else's Deployments are of interest.
WATCH_LABEL_SELECTOR = f"{ROLLOUT_LABEL},{NAME_LABEL}=model-server"


class Waker(Protocol):
    def wake(self, live_body: Mapping[str, Any]) -> None: ...


def compute_readiness_key(deployment: Mapping[str, Any]) -> tuple[int, ...]:
    """Everything compute_workload_state() reads, plus availability: an event that leaves all
    of it unchanged (an annotation, a condition's heartbeat) cannot change a decision."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    return tuple(
        int(v or 0)
        for v in (
            meta.get("generation"),
            spec.get("replicas", 1),
            status.get("observedGeneration"),
            status.get("replicas"),
            status.get("updatedReplicas"),
            status.get("readyReplicas"),
            status.get("availableReplicas"),
            status.get("unavailableReplicas"),
        )
    )


def compute_rollout_uid(deployment: Mapping[str, Any]) -> str | None:
    """The uid of the ModelRollout controlling this Deployment; None for anyone else's."""
    for ref in (deployment.get("metadata") or {}).get("ownerReferences") or []:
        if (
            isinstance(ref, Mapping)
            and ref.get("controller")
            and ref.get("kind") == "ModelRollout"
            and str(ref.get("apiVersion", "")).startswith(GROUP + "/")
        ):
            return ref.get("uid")
    return None


class WorkloadWatch:
    """Remembers each watched Deployment's readiness key to tell a change that matters from noise.

    One entry per model-server Deployment in the watched namespaces, dropped when it is deleted.
    """

    def __init__(self) -> None:
        self._keys: dict[str, tuple[int, ...]] = {}  # Deployment uid → last readiness key
        self._lock = threading.Lock()

    def compute_woken_rollout(self, event_type: str | None, deployment: Mapping[str, Any]) -> str | None:
        """The uid of the rollout to tick now, or None when this event changes nothing it reads.

        `event_type` is kopf's: None for the initial listing (the startup ticks read that state
        anyway), else ADDED, MODIFIED or DELETED (a version gone is a change too)."""
        rollout = compute_rollout_uid(deployment)
        uid = (deployment.get("metadata") or {}).get("uid")
        if rollout is None or uid is None:
            return None
        key = compute_readiness_key(deployment)
        with self._lock:
            if event_type == "DELETED":
                self._keys.pop(uid, None)
                return rollout
            before = self._keys.get(uid)
            self._keys[uid] = key
        if before is None and event_type is None:
            return None
        return rollout if key != before else None


def apply_workload_event(
    watch: WorkloadWatch,
    waker: Waker,
    event_type: str | None,
    deployment: Mapping[str, Any],
    rollouts: Mapping[str, Iterable[Mapping[str, Any]]],
) -> bool:
    """Ticks the Deployment's rollout now if the event matters; `rollouts` is kopf's index of
    ModelRollout bodies by uid (one each). True when a rollout was woken."""
    uid = watch.compute_woken_rollout(event_type, deployment)
    if uid is None or uid not in rollouts:
        return False  # not ours, nothing changed, or a rollout outside the watched namespaces
    for body in rollouts[uid]:
        waker.wake(body)
    return True
