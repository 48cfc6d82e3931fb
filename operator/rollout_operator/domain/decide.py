"""decide(spec, status, observations, now) -> Decision: the rollout state machine's entry point.

Pure: the shell observes, calls this, executes the actions and writes decision.status once.
"""

from __future__ import annotations

from datetime import datetime

from .actions import Decision
from .observations import Observations
from .spec import RolloutSpec, SpecError
from .status import RolloutStatus


def decide(spec: RolloutSpec, status: RolloutStatus, observations: Observations,
           now: datetime) -> Decision:
    """The whole next status, the actions to take, and when to look again."""
    raise NotImplementedError("decide() is being written; boundary types are final")


def decide_invalid(status: RolloutStatus, error: SpecError, generation: int,
                   now: datetime) -> Decision:
    """Phase Invalid with the field-named message; traffic and workloads stay as they are."""
    raise NotImplementedError("decide_invalid() is being written; boundary types are final")
