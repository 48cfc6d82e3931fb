"""The phases a ModelRollout moves through and the transitions allowed between them.

decide() only ever produces a transition listed in TRANSITIONS; a unit test checks that.
"""

from __future__ import annotations

from enum import Enum


class Phase(str, Enum):
    """Where a ModelRollout stands; written to status.phase. Each member carries a one-line doc."""

    def __new__(cls, value: str, doc: str) -> Phase:
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    INITIALIZING = ("Initializing", "The first version is coming up; no traffic is routed until it is Ready.")
    HEALTHY = ("Healthy", "The stable version serves 100% of traffic and no rollout is in flight.")
    PROGRESSING = ("Progressing", "A candidate version is moving through the strategy's steps under analysis.")
    PAUSED = ("Paused", "A rollout waits for a person (pause step, blue-green approval or spec.paused).")
    PROMOTING = ("Promoting", "All traffic is on the candidate; the next tick makes it the stable version.")
    ROLLING_BACK = ("RollingBack", "Traffic is back on stable (already written); the candidate is being scaled down.")
    ROLLED_BACK = (
        "RolledBack",
        "The candidate was rejected or aborted; stable serves 100%; retry or a new version moves on.",
    )
    STOPPED = ("Stopped", "A shadow run with `then: stop` finished and reported; the candidate was not promoted.")
    FAILED = ("Failed", "The first version never became Ready in time; there is no stable version to fall back to.")
    INVALID = ("Invalid", "The spec cannot be acted on; status.message says which field; nothing else changes.")


P = Phase

# from-phase -> phases it may move to (staying in the same phase is always allowed).
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.INITIALIZING: frozenset({P.HEALTHY, P.FAILED, P.INVALID}),
    # RollingBack: spec.monitoring.rollbackWithin, a breach soon after a promotion.
    P.HEALTHY: frozenset({P.PROGRESSING, P.ROLLING_BACK, P.INVALID}),
    P.PROGRESSING: frozenset({P.PAUSED, P.PROMOTING, P.ROLLING_BACK, P.STOPPED, P.INVALID}),
    # Stopped: resuming (or approving) a shadow whose next step is its final stop.
    P.PAUSED: frozenset({P.PROGRESSING, P.PROMOTING, P.ROLLING_BACK, P.STOPPED, P.INVALID}),
    P.PROMOTING: frozenset({P.HEALTHY, P.ROLLING_BACK, P.INVALID}),
    P.ROLLING_BACK: frozenset({P.ROLLED_BACK, P.HEALTHY, P.PROGRESSING, P.INVALID}),
    P.ROLLED_BACK: frozenset({P.PROGRESSING, P.HEALTHY, P.INVALID}),
    P.STOPPED: frozenset({P.PROGRESSING, P.HEALTHY, P.INVALID}),
    P.FAILED: frozenset({P.INITIALIZING, P.INVALID}),
    # Leaving Invalid restores the phase the rollout was in (status.suspendedPhase).
    P.INVALID: frozenset(set(Phase) - {P.INVALID}),
}


def is_rollout_in_flight(phase: Phase | None) -> bool:
    """True while a candidate may carry traffic: Progressing, Paused or Promoting."""
    return phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)


def is_allowed_transition(old: Phase | None, new: Phase) -> bool:
    """A fresh object (no phase yet) may only start Initializing or be found Invalid."""
    if old is None:
        return new in (Phase.INITIALIZING, Phase.INVALID)
    return old == new or new in TRANSITIONS[old]
