"""The standing actions derived from the next status (level-based: repeated every tick and
idempotent), and the requeue delay: the time to the next interesting moment, bounded."""

from __future__ import annotations

from datetime import timedelta

from .actions import (Action, DeleteVersion, EnsurePreviewService, EnsureRouter, EnsureVersion,
                      RemoveNetworkPolicies, RemovePreviewService, ScaleDownVersion, SetTraffic)
from .context import Tick, compute_replicas
from .decide_steps import compute_step_deadline, compute_step_end, is_traffic_at_target
from .observations import Role
from .phases import Phase
from .queries import is_candidate_exposed
from .spec import BlueGreenStrategy
from .status import RolloutStatus

MIN_REQUEUE = timedelta(seconds=1)
FOLLOW_UP = timedelta(seconds=1)  # the next step waits only for this tick's status write
WORKLOAD_POLL = timedelta(seconds=5)  # while waiting for pods to become Ready
IDLE_REQUEUE = timedelta(seconds=60)

_IN_FLIGHT = (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)
_AFTER = (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.STOPPED)


def compute_standing_actions(tick: Tick, new: RolloutStatus) -> list[Action]:
    spec = tick.spec
    actions: list[Action] = []
    router = spec.traffic_routing.router
    if router is not None:
        actions.append(EnsureRouter(router.image, router.replicas, router.sticky_header,
                                    router.network_policies))
    if router is None or not router.network_policies:
        # Before SetTraffic: a gateway taking over reaches the model servers only once they go.
        actions.append(RemoveNetworkPolicies())
    if new.stable_version:
        actions.append(EnsureVersion(new.stable_version, new.stable_uri, spec.server.replicas,
                                     Role.STABLE, spec.server.image))
    if new.candidate_version and new.phase in _IN_FLIGHT:
        replicas = (spec.server.replicas if new.phase is Phase.PROMOTING
                    else compute_replicas(spec, new.current_step_index))
        actions.append(EnsureVersion(new.candidate_version, new.candidate_uri, replicas,
                                     Role.CANDIDATE, spec.server.image))
    if new.traffic.stable is not None:
        t = new.traffic
        actions.append(SetTraffic(t.stable, t.candidate, t.mirror))
    actions.extend(_preview_actions(tick, new))
    actions.extend(_cleanup_actions(tick, new))
    return actions


def _preview_actions(tick: Tick, new: RolloutStatus) -> list[Action]:
    if not isinstance(tick.spec.strategy, BlueGreenStrategy):
        return []
    if new.phase in _IN_FLIGHT and new.candidate_version:
        return [EnsurePreviewService(new.candidate_version)]
    if tick.persisted.phase in (*_IN_FLIGHT, Phase.ROLLING_BACK):
        return [RemovePreviewService()]
    return []


def _cleanup_actions(tick: Tick, new: RolloutStatus) -> list[Action]:
    """Scale down or delete versions nothing routes to - judged on the persisted status too,
    because the router may still be acting on it until this tick's write lands."""
    actions: list[Action] = []
    persisted = tick.persisted
    retained = {new.stable_version, new.candidate_version, new.previous_stable_version}
    # Until this tick's status is written, the persisted one may still be acted on (a crash
    # right now, then an abort): keep what it could route to again.
    protected = {new.stable_version, persisted.stable_version}
    if persisted.phase in _IN_FLIGHT:
        protected.add(persisted.candidate_version)
    for version, w in sorted(tick.observations.workloads.items()):
        if not w.exists or version in protected:
            continue
        if tick.persisted.traffic.routes_to(version) or new.traffic.routes_to(version):
            continue
        if version not in retained:
            actions.append(DeleteVersion(version))
        elif version == new.candidate_version:
            if new.phase in _AFTER and w.desired_replicas > 0:
                actions.append(ScaleDownVersion(version))
        elif w.desired_replicas > 0 and (new.scale_down_at is None or tick.now >= new.scale_down_at):
            actions.append(ScaleDownVersion(version))  # the previous stable, after its delay
    return actions


def compute_requeue(tick: Tick, new: RolloutStatus) -> timedelta:
    """Time to the next interesting moment: a due check, a step's end, a deadline, a delayed
    scale-down; short when a follow-up only waits for this tick's status write."""
    persisted, spec, now = tick.persisted, tick.spec, tick.now
    if new.phase in (Phase.ROLLING_BACK, Phase.PROMOTING) or new.phase != persisted.phase or \
            new.current_step_index != persisted.current_step_index:
        return FOLLOW_UP
    moments = [compute_step_end(spec, new), compute_step_deadline(spec, new)]
    if new.phase in _IN_FLIGHT and spec.metrics and is_candidate_exposed(spec, new):
        moments.append(new.next_check_at)
    if new.scale_down_at is not None and new.scale_down_at > now:
        moments.append(new.scale_down_at)
    delay = IDLE_REQUEUE
    for moment in moments:
        if moment is not None:
            delay = min(delay, moment - now)
    if _is_waiting_for_pods(tick, new):
        delay = min(delay, WORKLOAD_POLL)
    return max(delay, MIN_REQUEUE)


def _is_waiting_for_pods(tick: Tick, new: RolloutStatus) -> bool:
    if new.phase is Phase.INITIALIZING:
        return True
    if new.phase not in _IN_FLIGHT:
        return False
    return new.step_started_at is None or not is_traffic_at_target(tick.spec, new)
