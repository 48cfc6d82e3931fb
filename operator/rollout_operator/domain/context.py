"""Shared pieces of decide(): the tick's inputs, the handler result, and small status helpers.

Kept apart from the phase handlers so each handler module stays short.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .actions import EmitEvent
from .observations import Observations, WorkloadState
from .spec import BlueGreenStrategy, RolloutSpec
from .status import HistoryEntry, RolloutStatus
from .steps import SetWeight

REQUEST_KINDS = ("promote", "promote_full", "abort", "retry")
REQUEST_NAMES = {"promote": "promote", "promote_full": "promoteFull", "abort": "abort",
                 "retry": "retry"}


@dataclass(frozen=True)
class Tick:
    """Everything a handler may read this tick (the status flows through the handlers)."""

    spec: RolloutSpec
    observations: Observations
    now: datetime
    pending: frozenset[str]  # request kinds bumped since the last tick (see REQUEST_KINDS)
    persisted: RolloutStatus  # the status as read, before this tick's changes

    @property
    def by(self) -> str:
        return self.spec.requests.by or "someone"

    def workload(self, version: str | None) -> WorkloadState:
        return self.observations.workload(version)


@dataclass(frozen=True)
class Outcome:
    """A handler's result: the next status and the events explaining it."""

    status: RolloutStatus
    events: tuple[EmitEvent, ...] = ()
    used: frozenset[str] = frozenset()  # requests this handler acted on

    def then(self, status: RolloutStatus, *events: EmitEvent, used: str = "") -> "Outcome":
        extra = frozenset({used}) if used else frozenset()
        return Outcome(status, self.events + events, self.used | extra)


def normal(reason: str, message: str) -> EmitEvent:
    return EmitEvent("Normal", reason, message)


def warning(reason: str, message: str) -> EmitEvent:
    return EmitEvent("Warning", reason, message)


def compute_pending_requests(spec: RolloutSpec, status: RolloutStatus) -> frozenset[str]:
    """A request is pending when its spec counter moved past the handled one (a reset to a
    lower number is just recorded, not acted on)."""
    handled = status.handled_requests
    return frozenset(k for k in REQUEST_KINDS
                     if getattr(spec.requests, k) > getattr(handled, k))


def compute_replicas(spec: RolloutSpec, index: int | None) -> int:
    """Candidate size at a step: blue-green may preview smaller until its 0->100 switch."""
    strategy = spec.strategy
    if isinstance(strategy, BlueGreenStrategy) and strategy.preview_replicas is not None:
        switch = next((i for i, s in enumerate(spec.steps)
                       if isinstance(s, SetWeight) and s.weight == 100), len(spec.steps))
        if index is not None and index < switch:
            return strategy.preview_replicas
    return spec.server.replicas


def compute_with_history(spec: RolloutSpec, status: RolloutStatus,
                         entry: HistoryEntry) -> RolloutStatus:
    """History is bounded by spec.historyLimit; the oldest entries go first."""
    history = (*status.history, entry)[-spec.history_limit:]
    return replace(status, history=history)


def compute_history_entry(status: RolloutStatus, now: datetime, outcome: str, reason: str,
                          message: str, by: str = "") -> HistoryEntry:
    return HistoryEntry(version=status.candidate_version or status.stable_version or "",
                        outcome=outcome, reason=reason, message=message,
                        started_at=status.rollout_started_at, finished_at=now, by=by)


def seconds_until(moment: datetime | None, now: datetime) -> timedelta | None:
    if moment is None:
        return None
    return moment - now
