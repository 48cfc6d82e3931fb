"""Kubernetes-style conditions derived from the next status (Ready, Progressing, Promoted,
RolledBack), so `kubectl wait --for=condition=Promoted` works; transition times are kept."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from .phases import Phase
from .status import Condition, RolloutStatus

CONDITION_TYPES = ("Ready", "Progressing", "Promoted", "RolledBack")
_IN_MOTION = (Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING,
              Phase.ROLLING_BACK)


def compute_conditions(status: RolloutStatus, spec_version: str | None, generation: int,
                       now: datetime) -> tuple[Condition, ...]:
    """The four conditions for `status`; lastTransitionTime moves only when status flips."""
    fresh = (_ready(status), _progressing(status), _promoted(status, spec_version),
             _rolled_back(status))
    old = {c.type: c for c in status.conditions}
    result = []
    for type_, (value, reason, message) in zip(CONDITION_TYPES, fresh):
        prev = old.get(type_)
        since = prev.last_transition_time if prev and prev.status == value else now
        result.append(Condition(type_, value, reason, message, generation, since))
    return tuple(result)


def _ready(s: RolloutStatus) -> tuple[str, str, str]:
    if s.traffic.stable is not None and s.phase not in (Phase.INITIALIZING, Phase.FAILED):
        return "True", "StableServing", f"{s.stable_version} serves user traffic"
    if s.phase is Phase.FAILED:
        return "False", s.reason or "Failed", s.message
    return "False", "Initializing", s.message or "no version is Ready yet"


def _progressing(s: RolloutStatus) -> tuple[str, str, str]:
    if s.phase is Phase.INVALID:
        return "False", "InvalidSpec", s.message
    if s.phase in _IN_MOTION:
        return "True", s.phase.value, s.message
    return "False", s.reason or "Idle", s.message


def _promoted(s: RolloutStatus, spec_version: str | None) -> tuple[str, str, str]:
    if s.phase is Phase.HEALTHY and s.stable_version == spec_version:
        reason = "Promoted" if s.reason == "Promoted" else "StableServing"
        return "True", reason, f"{s.stable_version} serves 100% of traffic"
    if s.phase is Phase.INVALID:
        return "False", "InvalidSpec", s.message
    return "False", (s.phase.value if s.phase else "Unknown"), s.message


def _rolled_back(s: RolloutStatus) -> tuple[str, str, str]:
    if s.phase is Phase.ROLLED_BACK:
        return "True", s.reason or "RolledBack", s.message
    return "False", "NotRolledBack", ""


def with_conditions(status: RolloutStatus, spec_version: str | None, generation: int,
                    now: datetime) -> RolloutStatus:
    return replace(status, conditions=compute_conditions(status, spec_version, generation, now))
