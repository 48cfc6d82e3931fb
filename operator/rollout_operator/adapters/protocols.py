"""One small interface per outside system the operator talks to (STYLE §5).

Providers live one per module (`prometheus`, `kube_workloads`, `router`, `gateway_api`,
`kube_events`); `fakes` holds in-memory doubles behind the same interfaces for unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..domain.analysis import Measurement
from ..domain.notifications import Receiver
from ..domain.observations import QueryRequest, WorkloadState
from ..domain.status import TrafficSplit
from .manifests import Owner, ServerTemplate


class MetricsProvider(Protocol):
    """Runs one rendered query; never raises for bad answers, returns an error Measurement instead.
    `timeout` (seconds, None: the provider's own) is what is left of the check round's deadline."""

    def fetch_measurement(self, address: str, request: QueryRequest, timeout: float | None = None) -> Measurement: ...


class Workloads(Protocol):
    """Model-server Deployments/Services per version, the router, and a blue-green preview Service."""

    def fetch_workloads(self, namespace: str, rollout: str) -> Mapping[str, WorkloadState]: ...

    def ensure_version(self, owner: Owner, version: str, replicas: int, server: ServerTemplate) -> None: ...

    def scale_version(self, namespace: str, rollout: str, version: str, replicas: int) -> None: ...

    def delete_version(self, namespace: str, rollout: str, version: str) -> None: ...

    def ensure_router(self, owner: Owner, image: str, replicas: int = 1, network_policies: bool = True) -> None: ...

    def delete_network_policies(self, owner: Owner) -> None: ...

    def ensure_preview(self, owner: Owner, version: str) -> None: ...

    def delete_preview(self, namespace: str, rollout: str) -> None: ...


class TrafficRouter(Protocol):
    """Carries the desired split; `config` is the provider's part of spec.trafficRouting."""

    name: str

    def ensure_traffic(self, namespace: str, rollout: str, split: TrafficSplit, config: Any) -> bool: ...


class EventRecorder(Protocol):
    """Kubernetes Events on the ModelRollout (what `kubectl describe` shows)."""

    def emit(self, owner: Owner, type_: str, reason: str, message: str) -> None: ...


class Notifier(Protocol):
    """Webhook notifications of decisions (webhooks.py): queues one and returns at once; never
    raises, never blocks on the receiver."""

    def notify(self, receiver: Receiver, payload: Mapping[str, Any], what: str = "") -> None: ...


class StatusWriter(Protocol):
    """Writes the ModelRollout's .status as a merge patch, only if the object is still at
    `resource_version` (so a decision made on a stale read is never persisted)."""

    def patch_status(self, namespace: str, name: str, resource_version: str, patch: Mapping[str, Any]) -> bool: ...
