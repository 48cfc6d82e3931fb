"""decide(spec, status, observations, now) -> Decision: the rollout state machine's entry point.

Pure: the shell observes, calls this, executes the actions and writes decision.status once.
One handler per phase (lifecycle.py, steps.py) works out the next status; this module then
finishes it (conditions, requests handled), derives the standing actions from it (level-based:
repeated every tick, idempotent) and the requeue delay (the next interesting moment, bounded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from .decision import (
    Action,
    Decision,
    DeleteVersion,
    EmitEvent,
    EnsurePreviewService,
    EnsureRouter,
    EnsureVersion,
    RemoveNetworkPolicies,
    RemovePreviewService,
    ScaleDownVersion,
    SetTraffic,
    Tick,
    normal,
    warning,
)
from .durations import truncate_to_second
from .gates import is_candidate_exposed
from .lifecycle import (
    decide_after_rollout,
    decide_failed,
    decide_healthy,
    decide_initializing,
    decide_promoting,
    decide_rolling_back,
    decide_start_initializing,
)
from .observations import Observations
from .phases import Phase, is_rollout_in_flight
from .spec import BlueGreenStrategy, RolloutSpec, SpecError, describe_step
from .status import HandledRequests, RolloutStatus, with_conditions
from .steps import compute_replicas, compute_step_deadline, compute_step_end, decide_in_flight, is_traffic_at_target

MIN_REQUEUE = timedelta(seconds=1)
FOLLOW_UP = timedelta(seconds=1)  # the next step waits only for this tick's status write
WORKLOAD_POLL = timedelta(seconds=5)  # while waiting for pods to become Ready
IDLE_REQUEUE = timedelta(seconds=60)

REQUEST_KINDS = ("promote", "promote_full", "abort", "retry")
REQUEST_NAMES = {"promote": "promote", "promote_full": "promoteFull", "abort": "abort", "retry": "retry"}

_AFTER = (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.STOPPED)

Handler = Callable[[Tick], Tick]
_HANDLERS: dict[Phase | None, Handler] = {
    None: decide_start_initializing,
    Phase.INITIALIZING: decide_initializing,
    Phase.HEALTHY: decide_healthy,
    Phase.PROGRESSING: decide_in_flight,
    Phase.PAUSED: decide_in_flight,
    Phase.PROMOTING: decide_promoting,
    Phase.ROLLING_BACK: decide_rolling_back,
    Phase.ROLLED_BACK: decide_after_rollout,
    Phase.STOPPED: decide_after_rollout,
    Phase.FAILED: decide_failed,
}


def decide(spec: RolloutSpec, status: RolloutStatus, observations: Observations, now: datetime) -> Decision:
    """The whole next status, the actions to take, and when to look again."""
    now = truncate_to_second(now)  # status stores seconds; keep decisions reproducible from it
    working = status
    if status.phase is Phase.INVALID:
        working = replace(status, phase=status.suspended_phase, suspended_phase=None)
    index = working.current_step_index
    if index is not None and index >= len(spec.steps):
        # The strategy was edited mid-rollout to fewer steps: continue from its last one.
        working = replace(working, current_step_index=len(spec.steps) - 1)
    tick = Tick(
        spec=spec,
        status=working,
        observations=observations,
        now=now,
        persisted=status,
        pending=compute_pending_requests(spec, working),
    )
    tick = _HANDLERS[working.phase](tick)
    events = tick.events
    if status.phase is Phase.INVALID:
        resumed = tick.status.phase.value if tick.status.phase else "new"
        events = (normal("SpecValid", f"the spec is valid again; phase {resumed}"), *events)
    ignored = tuple(_ignored_request(tick, kind) for kind in sorted(tick.pending - tick.used))
    new = _finish_status(tick)
    if tick.used:
        # Who asked for what, and when: acted-on requests only (ignored ones are events).
        names = ", ".join(REQUEST_NAMES[k] for k in sorted(tick.used))
        new = replace(new, last_request=f"{names} by {tick.by}", last_request_at=now)
    tick = tick.then(new)
    actions = (*compute_standing_actions(tick), *events, *ignored)
    return Decision(status=new, actions=tuple(actions), requeue_after=compute_requeue(tick))


def decide_invalid(status: RolloutStatus, error: SpecError, generation: int, now: datetime) -> Decision:
    """Phase Invalid with the field-named message; traffic and workloads stay as they are."""
    now = truncate_to_second(now)
    suspended = status.suspended_phase if status.phase is Phase.INVALID else status.phase
    message = f"{error.field}: {error.message}"
    new = replace(
        status,
        phase=Phase.INVALID,
        suspended_phase=suspended,
        reason="InvalidSpec",
        message=message,
        observed_generation=generation,
    )
    new = with_conditions(new, None, generation, now)
    # One event per distinct problem, not one per tick.
    repeat = status.phase is Phase.INVALID and status.message == message
    events = () if repeat else (warning("InvalidSpec", message),)
    return Decision(status=new, actions=events, requeue_after=IDLE_REQUEUE)


def compute_pending_requests(spec: RolloutSpec, status: RolloutStatus) -> frozenset[str]:
    """A request is pending when its spec counter moved past the handled one (a reset to a
    lower number is just recorded, not acted on)."""
    handled = status.handled_requests
    return frozenset(k for k in REQUEST_KINDS if getattr(spec.requests, k) > getattr(handled, k))


def _ignored_request(tick: Tick, kind: str) -> EmitEvent:
    phase = tick.status.phase.value if tick.status.phase else "new"
    return normal(
        "RequestIgnored", f"{REQUEST_NAMES[kind]} by {tick.by} ignored: nothing it applies to in phase {phase}"
    )


def _finish_status(tick: Tick) -> RolloutStatus:
    spec, status = tick.spec, tick.status
    index = status.current_step_index
    current = ""
    if is_rollout_in_flight(status.phase) and index is not None:
        current = f"{index + 1}/{len(spec.steps)} {describe_step(spec.steps[index])}"
    r = spec.requests
    router = spec.traffic_routing.router
    # The router reads its sticky header with the split, so one status write switches both.
    sticky = router.sticky_header if router is not None else None
    status = replace(
        status,
        strategy=spec.strategy.kind,
        current_step=current,
        traffic=replace(status.traffic, sticky_header=sticky),
        observed_generation=tick.observations.generation,
        handled_requests=HandledRequests(r.promote, r.promote_full, r.abort, r.retry),
    )
    return with_conditions(status, spec.model.version, tick.observations.generation, tick.now)


def compute_standing_actions(tick: Tick) -> list[Action]:
    """The ensures for the finished next status (tick.status), in a fixed order."""
    spec, new = tick.spec, tick.status
    actions: list[Action] = []
    router = spec.traffic_routing.router
    if router is not None:
        actions.append(EnsureRouter(router.image, router.replicas, router.network_policies))
    if router is None or not router.network_policies:
        # Before SetTraffic: a gateway taking over reaches the model servers only once they go.
        actions.append(RemoveNetworkPolicies())
    if new.stable_version:
        actions.append(EnsureVersion(new.stable_version, new.stable_uri, spec.server.replicas, spec.server.image))
    if new.candidate_version and is_rollout_in_flight(new.phase):
        replicas = (
            spec.server.replicas if new.phase is Phase.PROMOTING else compute_replicas(spec, new.current_step_index)
        )
        actions.append(EnsureVersion(new.candidate_version, new.candidate_uri, replicas, spec.server.image))
    if new.traffic.stable is not None:
        t = new.traffic
        actions.append(SetTraffic(t.stable, t.candidate, t.mirror))
    actions.extend(_preview_actions(tick))
    actions.extend(_cleanup_actions(tick))
    return actions


def _preview_actions(tick: Tick) -> list[Action]:
    new = tick.status
    if not isinstance(tick.spec.strategy, BlueGreenStrategy):
        return []
    if is_rollout_in_flight(new.phase) and new.candidate_version:
        return [EnsurePreviewService(new.candidate_version)]
    if is_rollout_in_flight(tick.persisted.phase) or tick.persisted.phase is Phase.ROLLING_BACK:
        return [RemovePreviewService()]
    return []


def _cleanup_actions(tick: Tick) -> list[Action]:
    """Scale down or delete versions nothing routes to - judged on the persisted status too,
    because the router may still be acting on it until this tick's write lands."""
    actions: list[Action] = []
    new, persisted = tick.status, tick.persisted
    retained = {new.stable_version, new.candidate_version, new.previous_stable_version}
    # Until this tick's status is written, the persisted one may still be acted on (a crash
    # right now, then an abort): keep what it could route to again.
    protected = {new.stable_version, persisted.stable_version}
    if is_rollout_in_flight(persisted.phase):
        protected.add(persisted.candidate_version)
    for version, w in sorted(tick.observations.workloads.items()):
        if not w.exists or version in protected:
            continue
        if persisted.traffic.routes_to(version) or new.traffic.routes_to(version):
            continue
        if version not in retained:
            actions.append(DeleteVersion(version))
        elif version == new.candidate_version:
            if new.phase in _AFTER and w.desired_replicas > 0:
                actions.append(ScaleDownVersion(version))
        elif w.desired_replicas > 0 and (new.scale_down_at is None or tick.now >= new.scale_down_at):
            actions.append(ScaleDownVersion(version))  # the previous stable, after its delay
    return actions


def compute_requeue(tick: Tick) -> timedelta:
    """Time to the next interesting moment: a due check, a step's end, a deadline, a delayed
    scale-down; short when a follow-up only waits for this tick's status write."""
    new, persisted, spec, now = tick.status, tick.persisted, tick.spec, tick.now
    if (
        new.phase in (Phase.ROLLING_BACK, Phase.PROMOTING)
        or new.phase != persisted.phase
        or new.current_step_index != persisted.current_step_index
    ):
        return FOLLOW_UP
    moments = [compute_step_end(spec, new), compute_step_deadline(spec, new)]
    if is_rollout_in_flight(new.phase) and spec.metrics and is_candidate_exposed(spec, new):
        moments.append(new.next_check_at)
    if new.phase is Phase.HEALTHY and spec.monitoring is not None:
        moments.append(new.monitoring.next_check_at)
    if new.scale_down_at is not None and new.scale_down_at > now:
        moments.append(new.scale_down_at)
    delay = IDLE_REQUEUE
    for moment in moments:
        if moment is not None:
            delay = min(delay, moment - now)
    if _is_waiting_for_pods(tick):
        delay = min(delay, WORKLOAD_POLL)
    return max(delay, MIN_REQUEUE)


def _is_waiting_for_pods(tick: Tick) -> bool:
    new = tick.status
    if new.phase is Phase.INITIALIZING:
        return True
    if not is_rollout_in_flight(new.phase):
        return False
    return new.step_started_at is None or not is_traffic_at_target(tick.spec, new)
