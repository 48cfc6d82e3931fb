"""The step machine: a running rollout (Progressing / Paused) moving its cursor over spec.steps.
User requests, the due analysis round, the traffic each step puts on the candidate (never on a
version without ready pods), when a step is complete, its deadline, and entering the next one.

The step kinds and the strategy presets that expand into them are in spec.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from .decision import Tick, normal
from .gates import decide_analysis_round, describe_gates, is_check_due, is_gate_open
from .lifecycle import compute_history_entry, compute_with_history, decide_rollback
from .phases import Phase
from .spec import (
    Analysis,
    BlueGreenStrategy,
    Pause,
    Promote,
    RolloutSpec,
    SetMirror,
    SetWeight,
    Step,
    Stop,
    describe_step,
)
from .status import MirrorTarget, RolloutStatus, TrafficSplit, VersionWeight


def decide_in_flight(tick: Tick) -> Tick:
    """Abort and superseding first, then the due analysis round, pauses, and the step cursor."""
    spec, status = tick.spec, tick.status
    if "abort" in tick.pending:
        return decide_rollback(
            tick.then(status, used="abort"),
            "Aborted",
            f"aborted by {tick.by} at {describe_position(spec, status)}",
            by=tick.by,
        )
    if spec.model.version != status.candidate_version:
        return decide_superseded(tick)
    if is_check_due(spec, status, tick.now):
        tick, limit = decide_analysis_round(tick)
        if limit is not None:
            return decide_rollback(tick, limit.reason, limit.message)
    if spec.paused:
        return decide_user_paused(tick)
    if tick.status.phase is Phase.PAUSED and tick.status.paused_by == "spec.paused":
        resumed = compute_resumed(tick)
        tick = tick.then(resumed, normal("Resumed", resumed.message))
    if tick.status.step_started_at is None:
        return decide_candidate_start(tick)
    if "promote_full" in tick.pending:
        promoted = decide_promote_full(tick.then(tick.status, used="promote_full"))
        if promoted.status.phase is Phase.PROMOTING:
            return promoted
        tick = promoted
    if "promote" in tick.pending:
        index = tick.status.current_step_index or 0
        tick = tick.then(
            tick.status,
            normal("PromoteRequested", f"{tick.by} skipped {describe_position(spec, tick.status)}"),
            used="promote",
        )
        if not isinstance(spec.steps[index], (Promote, Stop)):
            return decide_enter_step(tick, index + 1)
    return decide_step(tick)


def decide_superseded(tick: Tick) -> Tick:
    """spec.model.version moved on (or back) mid-rollout: abandon the candidate first."""
    version, stable = tick.spec.model.version, tick.status.stable_version
    why = f"spec.model.version is back to {stable}" if version == stable else f"spec.model.version changed to {version}"
    return decide_rollback(
        tick, "Superseded", f"{why} while rolling out {tick.status.candidate_version}", outcome="Superseded"
    )


def compute_resumed(tick: Tick) -> RolloutStatus:
    """Resuming restarts the current step's clock (and the wait for Ready, if still waiting)."""
    status = tick.status
    started = status.step_started_at is not None
    return replace(
        status,
        phase=Phase.PROGRESSING,
        paused_by="",
        reason="Resumed",
        step_started_at=tick.now if started else None,
        rollout_started_at=status.rollout_started_at if started else tick.now,
        message=f"resumed at {describe_position(tick.spec, status)}",
    )


def decide_candidate_start(tick: Tick) -> Tick:
    """Step 0 begins once the candidate is Ready; the progress deadline bounds the wait."""
    spec, status = tick.spec, tick.status
    version = status.candidate_version
    w, replicas = tick.workload(version), compute_replicas(spec, 0)
    if w.is_ready(replicas):
        tick = tick.then(status, normal("CandidateReady", f"{version} is Ready ({w.ready_replicas}/{replicas} pods)"))
        return decide_enter_step(tick, 0)
    started = status.rollout_started_at or tick.now
    if tick.now >= started + spec.progress_deadline:
        return decide_rollback(
            tick,
            "ProgressDeadlineExceeded",
            f"{version} not Ready within progressDeadline ({w.ready_replicas}/{replicas} pods ready)",
        )
    return tick


def decide_user_paused(tick: Tick) -> Tick:
    ignored = tick.pending & {"promote", "promote_full"}
    for kind in sorted(ignored):
        tick = tick.then(
            tick.status,
            normal("RequestIgnored", f"{kind} by {tick.by} ignored: spec.paused is true; resume first"),
            used=kind,
        )
    # Still protect users: the candidate loses traffic if it has no ready pod.
    status = replace(tick.status, traffic=compute_traffic(tick, hold=True))
    if status.phase is not Phase.PAUSED or status.paused_by != "spec.paused":
        status = replace(
            status,
            phase=Phase.PAUSED,
            paused_by="spec.paused",
            reason="PausedByUser",
            message=f"paused (spec.paused) at {describe_position(tick.spec, status)}",
        )
        return tick.then(status, normal("Paused", status.message))
    return tick.then(status)


def decide_promote_full(tick: Tick) -> Tick:
    status = tick.status
    w, full = tick.workload(status.candidate_version), tick.spec.server.replicas
    if not w.is_ready(full):
        return tick.then(
            status,
            normal(
                "RequestIgnored",
                f"promoteFull by {tick.by} ignored: "
                f"{status.candidate_version} has {w.ready_replicas}/{full} "
                "pods ready",
            ),
        )
    return decide_start_promoting(tick, f"promoteFull by {tick.by}")


def decide_start_promoting(tick: Tick, why: str) -> Tick:
    """All traffic to the candidate in this status write; the next tick makes it stable."""
    stable, candidate = tick.status.stable_version or "", tick.status.candidate_version or ""
    status = replace(
        tick.status,
        phase=Phase.PROMOTING,
        reason="Promoting",
        paused_by="",
        message=f"{why}: 100% of traffic to {candidate}",
        next_check_at=None,
        traffic=TrafficSplit(stable=VersionWeight(stable, 0), candidate=VersionWeight(candidate, 100)),
    )
    return tick.then(status, normal("Promoting", f"{status.message} (last check: {describe_gates(status)})"))


def decide_enter_step(tick: Tick, index: int) -> Tick:
    """Move the cursor; the step's traffic applies as soon as the candidate can take it."""
    spec = tick.spec
    index = min(index, len(spec.steps) - 1)
    interval = spec.analysis.interval if spec.analysis else None
    tick = tick.then(
        replace(
            tick.status,
            phase=Phase.PROGRESSING,
            paused_by="",
            current_step_index=index,
            step_started_at=tick.now,
            analysis=replace(tick.status.analysis, step_passes=0),
            next_check_at=tick.now + interval if interval else None,
            reason="StepStarted",
        )
    )
    status = replace(tick.status, traffic=compute_traffic(tick, hold=False))
    status = replace(
        status, message=f"{describe_position(spec, status)} (candidate {status.traffic.candidate_weight}%)"
    )
    tick = tick.then(status, normal("StepStarted", f"{status.message}; last check: {describe_gates(status)}"))
    step = spec.steps[index]
    if isinstance(step, (Promote, Stop)):
        return decide_step(tick)
    if isinstance(step, Pause) and step.duration is None:
        return decide_step(tick)
    return tick


def decide_step(tick: Tick) -> Tick:
    spec, status = tick.spec, tick.status
    index = status.current_step_index or 0
    step = spec.steps[index]
    if isinstance(step, Promote):
        return decide_promote_step(tick)
    if isinstance(step, Stop):
        return decide_stop_step(tick)
    traffic = compute_traffic(tick, hold=False)
    if traffic != status.traffic:
        interval = spec.analysis.interval if spec.analysis else None
        status = replace(
            status,
            traffic=traffic,
            analysis=replace(status.analysis, step_passes=0),
            next_check_at=tick.now + interval if interval else None,
        )
        tick = tick.then(status)
    if isinstance(step, Pause) and step.duration is None:
        if status.phase is not Phase.PAUSED:
            status = replace(
                status,
                phase=Phase.PAUSED,
                paused_by="step",
                reason="WaitingForPromote",
                message=f"{describe_position(spec, status)}: waiting for `kubectl modelrollout promote`",
            )
            tick = tick.then(status, normal("WaitingForPromote", status.message))
        return tick
    if is_step_complete(tick):
        return decide_enter_step(tick, index + 1)
    return decide_deadline(tick)


def decide_deadline(tick: Tick) -> Tick:
    deadline = compute_step_deadline(tick.spec, tick.status)
    if deadline is None or tick.now < deadline:
        return tick
    w = tick.workload(tick.status.candidate_version)
    return decide_rollback(
        tick,
        "ProgressDeadlineExceeded",
        f"{describe_position(tick.spec, tick.status)} did not complete within "
        f"progressDeadline (candidate {w.ready_replicas} pods ready; "
        f"last check: {describe_gates(tick.status)})",
    )


def decide_promote_step(tick: Tick) -> Tick:
    w, full = tick.workload(tick.status.candidate_version), tick.spec.server.replicas
    if w.is_ready(full):
        return decide_start_promoting(tick, f"{describe_position(tick.spec, tick.status)} reached")
    status = replace(tick.status, traffic=compute_traffic(tick, hold=True))
    return decide_deadline(tick.then(status))


def decide_stop_step(tick: Tick) -> Tick:
    """Shadow `then: stop`: out of traffic first, then report once that status is persisted."""
    stable = tick.status.stable_version or ""
    status = replace(tick.status, traffic=TrafficSplit(stable=VersionWeight(stable, 100)))
    if tick.persisted.traffic.routes_to(status.candidate_version):
        return tick.then(status)
    msg = f"shadow of {status.candidate_version} finished, not promoted (then: stop); {describe_gates(status)}"
    status = replace(
        status,
        phase=Phase.STOPPED,
        reason="ShadowStopped",
        message=msg,
        current_step_index=None,
        step_started_at=None,
        next_check_at=None,
    )
    status = compute_with_history(
        tick.spec, status, compute_history_entry(status, tick.now, "Stopped", "ShadowStopped", msg)
    )
    return tick.then(status, normal("ShadowStopped", msg))


def compute_step_traffic(steps: tuple[Step, ...], index: int) -> tuple[int, int]:
    """(candidate weight, mirror percent) in force while step `index` runs: the latest
    setWeight / setMirror at or before the cursor."""
    weight, mirror = 0, 0
    for step in steps[: index + 1]:
        if isinstance(step, SetWeight):
            weight = step.weight
        elif isinstance(step, SetMirror):
            mirror = step.percent
    return weight, mirror


def compute_traffic(tick: Tick, *, hold: bool) -> TrafficSplit:
    """The split for the current step of tick.status. Raising the candidate's share waits until
    it is Ready at the step's size; a candidate without a ready pod gets nothing. `hold` keeps
    the current shares."""
    spec, status = tick.spec, tick.status
    candidate = status.candidate_version or ""
    current = status.traffic
    cur_weight = current.candidate_weight
    cur_mirror = current.mirror.percent if current.mirror else 0
    if hold:
        want_weight, want_mirror = cur_weight, cur_mirror
    else:
        want_weight, want_mirror = compute_step_traffic(spec.steps, status.current_step_index or 0)
    w = tick.workload(candidate)
    if not w.exists or w.ready_replicas < 1:
        want_weight, want_mirror = 0, 0
    elif not w.is_ready(compute_replicas(spec, status.current_step_index)):
        want_weight = min(want_weight, cur_weight)
        want_mirror = min(want_mirror, cur_mirror)
    return TrafficSplit(
        stable=VersionWeight(status.stable_version or "", 100 - want_weight),
        candidate=VersionWeight(candidate, want_weight),
        mirror=MirrorTarget(candidate, want_mirror) if want_mirror > 0 else None,
        # Kept, so a step's split differs from the current one only in its shares (decide.py
        # stamps the sticky header on the finished status).
        sticky_header=current.sticky_header,
    )


def compute_replicas(spec: RolloutSpec, index: int | None) -> int:
    """Candidate size at a step: blue-green may preview smaller until its 0->100 switch."""
    strategy = spec.strategy
    if isinstance(strategy, BlueGreenStrategy) and strategy.preview_replicas is not None:
        switch = next(
            (i for i, s in enumerate(spec.steps) if isinstance(s, SetWeight) and s.weight == 100), len(spec.steps)
        )
        if index is not None and index < switch:
            return strategy.preview_replicas
    return spec.server.replicas


def is_traffic_at_target(spec: RolloutSpec, status: RolloutStatus) -> bool:
    weight, mirror = compute_step_traffic(spec.steps, status.current_step_index or 0)
    current_mirror = status.traffic.mirror.percent if status.traffic.mirror else 0
    return status.traffic.candidate_weight == weight and current_mirror == mirror


def is_step_complete(tick: Tick) -> bool:
    spec, status, now = tick.spec, tick.status, tick.now
    step = spec.steps[status.current_step_index or 0]
    if not is_traffic_at_target(spec, status):
        return False
    # Sequential mode: only analysis steps wait for a verdict, and they end on it (their duration
    # is the longest wait, enforced by the round); other steps never wait on a single round.
    sequential = spec.analysis is not None and spec.analysis.is_sequential
    if isinstance(step, (SetWeight, SetMirror)):
        return sequential or is_gate_open(spec, status)
    if isinstance(step, Pause):
        return (
            step.duration is not None
            and _elapsed(status, now, step.duration)
            and (sequential or is_gate_open(spec, status))
        )
    if isinstance(step, Analysis):
        if sequential:
            return is_gate_open(spec, status)
        if step.duration is not None:
            return _elapsed(status, now, step.duration) and is_gate_open(spec, status)
        return is_gate_open(spec, status, needed=step.checks or 1)
    return False


def compute_step_deadline(spec: RolloutSpec, status: RolloutStatus) -> datetime | None:
    """A step may take its own duration plus progressDeadline; a pause for a person has none."""
    if status.step_started_at is None or status.current_step_index is None:
        return None
    step = spec.steps[status.current_step_index]
    if isinstance(step, Pause) and step.duration is None:
        return None
    own = getattr(step, "duration", None) or timedelta(0)
    if isinstance(step, Analysis) and spec.analysis is not None and spec.analysis.is_sequential:
        own = step.duration or spec.analysis.max_duration  # the round ends it at this wait
    return status.step_started_at + own + spec.progress_deadline


def compute_step_end(spec: RolloutSpec, status: RolloutStatus) -> datetime | None:
    """When the current step's own wait ends (the next interesting moment besides checks)."""
    if status.step_started_at is None or status.current_step_index is None:
        return None
    duration = getattr(spec.steps[status.current_step_index], "duration", None)
    return status.step_started_at + duration if duration else None


def _elapsed(status: RolloutStatus, now: datetime, duration: timedelta) -> bool:
    return status.step_started_at is not None and now >= status.step_started_at + duration


def describe_position(spec: RolloutSpec, status: RolloutStatus) -> str:
    index = status.current_step_index or 0
    return f"step {index + 1}/{len(spec.steps)} ({describe_step(spec.steps[index])})"
