"""The side effects decide() asks for; the shell executes each as an idempotent ensure.

Actions are data: the shell may repeat them after a crash without harm.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Union

from .observations import Role
from .status import MirrorTarget, RolloutStatus, VersionWeight


@dataclass(frozen=True)
class EnsureVersion:
    """Deployment + Service `<rollout>-<version>` exist with this many replicas, running `image`
    (spec.server.image or the operator's default, decided by parse_spec: the shell runs exactly it)."""

    version: str
    uri: str
    replicas: int
    role: Role
    image: str


@dataclass(frozen=True)
class EnsureRouter:
    """The built-in router Deployment + Service `<rollout>` exist (only for trafficRouting.router),
    running `image` (the spec's router image or the operator's default, already resolved)."""

    image: str
    replicas: int
    sticky_header: str | None = None
    network_policies: bool = True  # apply `<rollout>.router` / `<rollout>.model-servers` with it


@dataclass(frozen=True)
class RemoveNetworkPolicies:
    """`<rollout>.router` and `<rollout>.model-servers` are gone (no built-in router, or the
    operator runs with --network-policies=false): a policy left behind would block the traffic
    of whatever routes instead (a gateway). Only policies this rollout controls are deleted."""


@dataclass(frozen=True)
class SetTraffic:
    """The split the traffic provider must carry. For the built-in router the status write
    is the switch (it watches status.traffic); for Gateway API the shell patches the HTTPRoute."""

    stable: VersionWeight | None
    candidate: VersionWeight | None = None
    mirror: MirrorTarget | None = None


@dataclass(frozen=True)
class EnsurePreviewService:
    """Service `<rollout>-preview` selects this version's pods (blue-green preview)."""

    version: str


@dataclass(frozen=True)
class RemovePreviewService:
    """Service `<rollout>-preview` is gone."""


@dataclass(frozen=True)
class ScaleDownVersion:
    """Scale the version's Deployment to 0 and keep it (quick retry). Never emitted for a
    version the persisted status.traffic still routes to."""

    version: str


@dataclass(frozen=True)
class DeleteVersion:
    """Delete the version's Deployment and Service (superseded; nothing routes to it)."""

    version: str


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes event on the ModelRollout; the message carries the numbers behind it."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str


Action = Union[EnsureVersion, EnsureRouter, RemoveNetworkPolicies, SetTraffic, EnsurePreviewService,
               RemovePreviewService, ScaleDownVersion, DeleteVersion, EmitEvent]


@dataclass(frozen=True)
class Decision:
    """decide()'s answer: the whole next status, the actions, and when to look again."""

    status: RolloutStatus
    actions: tuple[Action, ...]
    requeue_after: timedelta

    @property
    def requeue_seconds(self) -> float:
        return self.requeue_after.total_seconds()

    @property
    def events(self) -> tuple[EmitEvent, ...]:
        return tuple(a for a in self.actions if isinstance(a, EmitEvent))
