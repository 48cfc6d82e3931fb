"""In-memory fakes of every adapter interface, for the fast unit tier (and for trying reconcile locally).

They keep what was asked of them so tests assert on effects, not on calls to mocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..domain.analysis import Measurement
from ..domain.notifications import Receiver
from ..domain.observations import QueryRequest, WorkloadState
from ..domain.status import TrafficSplit
from .manifests import Owner, ServerTemplate


class FakeMetrics:
    """Answers by (metric, version) or by a function of the request; unknown queries have no data."""

    def __init__(self, answer: Callable[[QueryRequest], Measurement] | None = None) -> None:
        self.values: dict[tuple[str, str], Measurement] = {}
        self._answer = answer
        self.queries: list[QueryRequest] = []

    def set(self, metric: str, version: str, measurement: Measurement) -> None:
        self.values[(metric, version)] = measurement

    def fetch_measurement(self, address: str, request: QueryRequest, timeout: float | None = None) -> Measurement:
        self.queries.append(request)
        if self._answer is not None:
            return self._answer(request)
        return self.values.get((request.metric, request.version), Measurement.no_data())


@dataclass
class FakeDeployment:
    owner: Owner
    version: str
    replicas: int
    server: ServerTemplate | None
    ready: int = 0


class FakeWorkloads:
    """Deployments as records; with auto_ready every pod is Ready on the next fetch."""

    def __init__(self, auto_ready: bool = True) -> None:
        self.auto_ready = auto_ready
        self.deployments: dict[tuple[str, str, str], FakeDeployment] = {}
        self.routers: dict[tuple[str, str], str] = {}
        self.previews: dict[tuple[str, str], str] = {}
        self.policies: set[tuple[str, str]] = set()  # rollouts whose NetworkPolicies exist
        self.deleted: list[str] = []

    def fetch_workloads(self, namespace: str, rollout: str) -> dict[str, WorkloadState]:
        out = {}
        for (ns, name, version), d in self.deployments.items():
            if (ns, name) == (namespace, rollout):
                if self.auto_ready:
                    d.ready = d.replicas
                out[version] = WorkloadState(True, d.replicas, d.ready, True)
        return out

    def ensure_version(self, owner: Owner, version: str, replicas: int, server: ServerTemplate) -> None:
        key = (owner.namespace, owner.name, version)
        current = self.deployments.get(key)
        ready = min(current.ready, replicas) if current else 0
        self.deployments[key] = FakeDeployment(owner, version, replicas, server, ready)

    def scale_version(self, namespace: str, rollout: str, version: str, replicas: int) -> None:
        d = self.deployments[(namespace, rollout, version)]
        d.replicas, d.ready = replicas, min(d.ready, replicas)

    def delete_version(self, namespace: str, rollout: str, version: str) -> None:
        if self.deployments.pop((namespace, rollout, version), None) is not None:
            self.deleted.append(version)

    def ensure_router(self, owner: Owner, image: str, replicas: int = 1, network_policies: bool = True) -> None:
        self.routers[(owner.namespace, owner.name)] = image
        if network_policies:
            self.policies.add((owner.namespace, owner.name))

    def delete_network_policies(self, owner: Owner) -> None:
        self.policies.discard((owner.namespace, owner.name))

    def ensure_preview(self, owner: Owner, version: str) -> None:
        self.previews[(owner.namespace, owner.name)] = version

    def delete_preview(self, namespace: str, rollout: str) -> None:
        self.previews.pop((namespace, rollout), None)

    def replicas(self, namespace: str, rollout: str) -> dict[str, int]:
        return {v: d.replicas for (ns, r, v), d in self.deployments.items() if (ns, r) == (namespace, rollout)}


class FakeTraffic:
    """Remembers the last split per rollout and every change, like a route that never fails."""

    def __init__(self, name: str = "router") -> None:
        self.name = name
        self.splits: dict[tuple[str, str], TrafficSplit] = {}
        self.changes: list[TrafficSplit] = []

    def ensure_traffic(self, namespace: str, rollout: str, split: TrafficSplit, config: Any) -> bool:
        if self.splits.get((namespace, rollout)) == split:
            return False
        self.splits[(namespace, rollout)] = split
        self.changes.append(split)
        return True


@dataclass
class FakeEvents:
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)

    def emit(self, owner: Owner, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@dataclass
class FakeNotifier:
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (receiver name, payload)

    def notify(self, receiver: Receiver, payload: Mapping[str, Any], what: str = "") -> None:
        self.sent.append((receiver.name, dict(payload)))


class FakeStatusWriter:
    """Applies status merge patches to in-memory objects keyed by (namespace, name).

    Each write bumps the object's resourceVersion; a stale one is refused like a 409.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0
        self.conflicts = 0

    def put(self, body: dict[str, Any]) -> None:
        meta = body.setdefault("metadata", {})
        meta.setdefault("resourceVersion", "1")
        self.objects[(meta["namespace"], meta["name"])] = body

    def patch_status(self, namespace: str, name: str, resource_version: str, patch: Mapping[str, Any]) -> bool:
        obj = self.objects.get((namespace, name))
        if obj is None or obj["metadata"]["resourceVersion"] != resource_version:
            self.conflicts += 1
            return False
        obj["status"] = apply_merge_patch(obj.get("status") or {}, patch)
        obj["metadata"]["resourceVersion"] = str(int(resource_version) + 1)
        self.writes += 1
        return True


def apply_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            current = out.get(key)
            out[key] = apply_merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def fake_providers() -> Mapping[str, FakeTraffic]:
    return {"router": FakeTraffic("router"), "gatewayAPI": FakeTraffic("gatewayAPI")}
