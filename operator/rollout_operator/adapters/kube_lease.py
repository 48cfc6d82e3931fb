"""The operator's leader election record: one coordination.k8s.io/v1 Lease, read and written with
a resourceVersion precondition so two replicas can never both win the same write.

`fetch_lease` reads it; `apply_lease` creates or replaces it (False when another replica wrote
first). Which replica may take it and when is handlers/leadership.py's decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .kube import KubeApi, KubeError, ResourceRef

LEASES = ResourceRef("/apis/coordination.k8s.io/v1", "leases")
# MicroTime, the format Lease times are written in (RFC 3339 with microseconds).
_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says. `resource_version` None: there is no Lease object yet."""

    holder: str | None  # holderIdentity; None or "" when released
    duration_seconds: int  # leaseDurationSeconds: how long after a renewal the holder may be dead
    renewed_at: str | None  # renewTime as written (for people and `kubectl modelrollout status`)
    acquired_at: str | None
    transitions: int  # leaseTransitions: how many times leadership changed hands
    resource_version: str | None

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        """Changes with every write: a renewal moves renewTime and resourceVersion."""
        return (self.holder, self.renewed_at, self.resource_version)


NO_LEASE = LeaseRecord(None, 0, None, None, 0, None)


def compute_lease_record(obj: Mapping[str, Any] | None) -> LeaseRecord:
    if obj is None:
        return NO_LEASE
    spec = obj.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        renewed_at=spec.get("renewTime"),
        acquired_at=spec.get("acquireTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=(obj.get("metadata") or {}).get("resourceVersion"),
    )


def format_micro_time(at: datetime) -> str:
    return at.strftime(_MICRO)


def compute_lease_object(
    namespace: str, name: str, old: LeaseRecord, holder: str | None, duration_seconds: int, now: datetime
) -> dict[str, Any]:
    """The Lease after `holder` renews (or takes, or with None releases) it at `now`."""
    stamp = format_micro_time(now)
    changed = holder != old.holder
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": "modelrollout-operator", "app.kubernetes.io/component": "leader-election"},
    }
    if old.resource_version is not None:
        metadata["resourceVersion"] = old.resource_version  # the precondition: 409 if someone wrote since
    spec: dict[str, Any] = {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration_seconds,
        "renewTime": stamp,
        "acquireTime": stamp if changed or old.acquired_at is None else old.acquired_at,
        "leaseTransitions": old.transitions + (1 if changed and old.holder and holder else 0),
    }
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


class KubeLeases:
    """The Lease `namespace/name` through the operator's Kubernetes client."""

    def __init__(self, api: KubeApi, namespace: str, name: str) -> None:
        self._api, self.namespace, self.name = api, namespace, name

    def fetch_lease(self) -> LeaseRecord:
        return compute_lease_record(self._api.get(LEASES, self.namespace, self.name))

    def apply_lease(
        self, old: LeaseRecord, holder: str | None, duration_seconds: int, now: datetime
    ) -> LeaseRecord | None:
        """Writes the Lease as `holder` would after reading `old`; None when another replica
        created or changed it since (409 on replace or create): then `old` is no longer true."""
        obj = compute_lease_object(self.namespace, self.name, old, holder, duration_seconds, now)
        try:
            if old.resource_version is None:
                written = self._api.create(LEASES, self.namespace, obj)
            else:
                written = self._api.request("PUT", LEASES.path(self.namespace, self.name), body=obj)
        except KubeError as err:
            if err.conflict:  # someone else wrote first (create: AlreadyExists is a 409 too)
                return None
            raise
        return compute_lease_record(written)
