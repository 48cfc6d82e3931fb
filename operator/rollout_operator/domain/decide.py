"""decide(spec, status, observations, now) -> Decision: the rollout state machine's entry point.

Pure: the shell observes, calls this, executes the actions and writes decision.status once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable

from .actions import Decision, EmitEvent
from .conditions import with_conditions
from .context import (REQUEST_NAMES, Outcome, Tick, compute_pending_requests, normal, warning)
from .decide_actions import IDLE_REQUEUE, compute_requeue, compute_standing_actions
from .decide_phases import (decide_after_rollout, decide_failed, decide_fresh, decide_healthy,
                            decide_initializing, decide_promoting, decide_rolling_back)
from .decide_rollout import decide_in_flight
from .durations import truncate_to_second
from .observations import Observations
from .phases import Phase
from .spec import RolloutSpec, SpecError
from .status import HandledRequests, RolloutStatus
from .steps import describe_step

Handler = Callable[[Tick, RolloutStatus], Outcome]
_HANDLERS: dict[Phase | None, Handler] = {
    None: decide_fresh,
    Phase.INITIALIZING: decide_initializing,
    Phase.HEALTHY: decide_healthy,
    Phase.PROGRESSING: decide_in_flight,
    Phase.PAUSED: decide_in_flight,
    Phase.PROMOTING: decide_promoting,
    Phase.ROLLING_BACK: decide_rolling_back,
    Phase.ROLLED_BACK: lambda tick, s: decide_after_rollout(tick, s, Outcome(s)),
    Phase.STOPPED: lambda tick, s: decide_after_rollout(tick, s, Outcome(s)),
    Phase.FAILED: decide_failed,
}


def decide(spec: RolloutSpec, status: RolloutStatus, observations: Observations,
           now: datetime) -> Decision:
    """The whole next status, the actions to take, and when to look again."""
    now = truncate_to_second(now)  # status stores seconds; keep decisions reproducible from it
    working = status
    if status.phase is Phase.INVALID:
        working = replace(status, phase=status.suspended_phase, suspended_phase=None)
    index = working.current_step_index
    if index is not None and index >= len(spec.steps):
        # The strategy was edited mid-rollout to fewer steps: continue from its last one.
        working = replace(working, current_step_index=len(spec.steps) - 1)
    tick = Tick(spec, observations, now, compute_pending_requests(spec, working), status)
    out = _HANDLERS[working.phase](tick, working)
    if status.phase is Phase.INVALID:
        resumed = out.status.phase.value if out.status.phase else "new"
        out = Outcome(out.status, (normal("SpecValid", f"the spec is valid again; phase {resumed}"),
                                   *out.events), out.used)
    ignored = tuple(_ignored_request(tick, out.status, kind)
                    for kind in sorted(tick.pending - out.used))
    new = _finish_status(tick, out.status)
    if out.used:
        # Who asked for what, and when: acted-on requests only (ignored ones are events).
        names = ", ".join(REQUEST_NAMES[k] for k in sorted(out.used))
        new = replace(new, last_request=f"{names} by {tick.by}", last_request_at=now)
    actions = (*compute_standing_actions(tick, new), *out.events, *ignored)
    return Decision(status=new, actions=tuple(actions), requeue_after=compute_requeue(tick, new))


def decide_invalid(status: RolloutStatus, error: SpecError, generation: int,
                   now: datetime) -> Decision:
    """Phase Invalid with the field-named message; traffic and workloads stay as they are."""
    now = truncate_to_second(now)
    suspended = status.suspended_phase if status.phase is Phase.INVALID else status.phase
    message = f"{error.field}: {error.message}"
    new = replace(status, phase=Phase.INVALID, suspended_phase=suspended, reason="InvalidSpec",
                  message=message, observed_generation=generation)
    new = with_conditions(new, None, generation, now)
    # One event per distinct problem, not one per tick.
    repeat = status.phase is Phase.INVALID and status.message == message
    events = () if repeat else (warning("InvalidSpec", message),)
    return Decision(status=new, actions=events, requeue_after=IDLE_REQUEUE)


def _ignored_request(tick: Tick, status: RolloutStatus, kind: str) -> EmitEvent:
    phase = status.phase.value if status.phase else "new"
    return normal("RequestIgnored", f"{REQUEST_NAMES[kind]} by {tick.by} ignored: "
                  f"nothing it applies to in phase {phase}")


def _finish_status(tick: Tick, status: RolloutStatus) -> RolloutStatus:
    spec = tick.spec
    in_flight = status.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)
    index = status.current_step_index
    current = ""
    if in_flight and index is not None:
        current = f"{index + 1}/{len(spec.steps)} {describe_step(spec.steps[index])}"
    r = spec.requests
    status = replace(
        status, strategy=spec.strategy.kind, current_step=current,
        observed_generation=tick.observations.generation,
        handled_requests=HandledRequests(r.promote, r.promote_full, r.abort, r.retry))
    return with_conditions(status, spec.model.version, tick.observations.generation, tick.now)
