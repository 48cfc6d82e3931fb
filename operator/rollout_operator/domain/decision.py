"""decide()'s contract with the shell: the Tick every phase handler takes and returns, the
actions the shell executes (each an idempotent ensure), and the Decision that carries them.

Actions are data: the shell may repeat them after a crash without harm, and does exactly what
they say (it never re-reads the spec to second-guess one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeAlias

from .observations import Observations, WorkloadState
from .spec import RolloutSpec
from .status import MirrorTarget, RolloutStatus, VersionWeight


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes event on the ModelRollout; the message carries the numbers behind it."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str


def normal(reason: str, message: str) -> EmitEvent:
    return EmitEvent("Normal", reason, message)


def warning(reason: str, message: str) -> EmitEvent:
    return EmitEvent("Warning", reason, message)


@dataclass(frozen=True)
class Tick:
    """The one input of every phase handler, and its result: what the tick reads (spec,
    observations, now, the persisted status) and what it has worked out so far (status, events,
    requests acted on). A handler returns `tick.then(next_status, *events)`."""

    spec: RolloutSpec
    status: RolloutStatus  # the next status as worked out so far (starts as the persisted one)
    observations: Observations
    now: datetime
    persisted: RolloutStatus  # the status as read, before this tick's changes
    pending: frozenset[str] = frozenset()  # request kinds bumped since the last tick
    events: tuple[EmitEvent, ...] = ()  # what explains the changes so far
    used: frozenset[str] = frozenset()  # pending requests a handler acted on

    @property
    def by(self) -> str:
        return self.spec.requests.by or "someone"

    def workload(self, version: str | None) -> WorkloadState:
        return self.observations.workload(version)

    def then(self, status: RolloutStatus, *events: EmitEvent, used: str = "") -> Tick:
        """This tick with `status` as the next status, `events` added, `used` acted on."""
        extra = frozenset({used}) if used else frozenset()
        return replace(self, status=status, events=self.events + events, used=self.used | extra)


@dataclass(frozen=True)
class EnsureVersion:
    """Deployment + Service `<rollout>-<version>` exist with this many replicas, running `image`
    (spec.server.image or the operator's default, decided by parse_spec: the shell runs exactly it)."""

    version: str
    uri: str
    replicas: int
    image: str


@dataclass(frozen=True)
class EnsureRouter:
    """The built-in router Deployment + Service `<rollout>` exist (only for trafficRouting.router),
    running `image` (the spec's router image or the operator's default, already resolved)."""

    image: str
    replicas: int
    network_policies: bool = True  # apply `<rollout>.router` / `<rollout>.model-servers` with it


@dataclass(frozen=True)
class RemoveNetworkPolicies:
    """`<rollout>.router` and `<rollout>.model-servers` are gone (no built-in router, or the
    operator runs with --network-policies=false): a policy left behind would block the traffic
    of whatever routes instead (a gateway). Only policies this rollout controls are deleted."""


@dataclass(frozen=True)
class SetTraffic:
    """The split the traffic provider must carry. For the built-in router the status write
    is the switch (it watches status.traffic, sticky header included); for Gateway API the
    shell patches the HTTPRoute."""

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


Action: TypeAlias = (
    EnsureVersion
    | EnsureRouter
    | RemoveNetworkPolicies
    | SetTraffic
    | EnsurePreviewService
    | RemovePreviewService
    | ScaleDownVersion
    | DeleteVersion
    | EmitEvent
)


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
