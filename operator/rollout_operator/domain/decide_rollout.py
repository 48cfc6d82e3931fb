"""The running rollout (Progressing / Paused): user requests, the analysis round, the step
cursor and the traffic each step puts on the candidate."""

from __future__ import annotations

from dataclasses import replace

from .context import (Outcome, Tick, compute_history_entry, compute_replicas, compute_with_history,
                      normal)
from .decide_analysis import decide_analysis_round
from .decide_phases import decide_rollback
from .decide_steps import (compute_step_deadline, compute_traffic, describe_gates,
                           describe_position, is_step_complete)
from .phases import Phase
from .queries import is_check_due
from .status import RolloutStatus, TrafficSplit, VersionWeight
from .steps import Pause, Promote, Stop


def decide_in_flight(tick: Tick, status: RolloutStatus) -> Outcome:
    """Abort and superseding first, then the due analysis round, pauses, and the step cursor."""
    out = Outcome(status)
    spec = tick.spec
    if "abort" in tick.pending:
        out = out.then(status, used="abort")
        return decide_rollback(tick, status, out, "Aborted",
                               f"aborted by {tick.by} at {describe_position(spec, status)}",
                               by=tick.by)
    if spec.model.version != status.candidate_version:
        return decide_superseded(tick, status, out)
    if is_check_due(spec, status, tick.now):
        status, events, limit = decide_analysis_round(tick, status)
        out = out.then(status, *events)
        if limit is not None:
            return decide_rollback(tick, status, out, limit.reason, limit.message)
    if spec.paused:
        return decide_user_paused(tick, status, out)
    if status.phase is Phase.PAUSED and status.paused_by == "spec.paused":
        status = compute_resumed(tick, status)
        out = out.then(status, normal("Resumed", status.message))
    if status.step_started_at is None:
        return decide_candidate_start(tick, status, out)
    if "promote_full" in tick.pending:
        out = decide_promote_full(tick, status, out.then(status, used="promote_full"))
        if out.status.phase is Phase.PROMOTING:
            return out
    if "promote" in tick.pending:
        index = status.current_step_index or 0
        out = out.then(status, normal("PromoteRequested", f"{tick.by} skipped "
                                      f"{describe_position(spec, status)}"), used="promote")
        if not isinstance(spec.steps[index], (Promote, Stop)):
            return decide_enter_step(tick, status, index + 1, out)
    return decide_step(tick, status, out)


def decide_superseded(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    """spec.model.version moved on (or back) mid-rollout: abandon the candidate first."""
    version, stable = tick.spec.model.version, status.stable_version
    why = (f"spec.model.version is back to {stable}" if version == stable
           else f"spec.model.version changed to {version}")
    return decide_rollback(tick, status, out, "Superseded",
                           f"{why} while rolling out {status.candidate_version}",
                           outcome="Superseded")


def compute_resumed(tick: Tick, status: RolloutStatus) -> RolloutStatus:
    """Resuming restarts the current step's clock (and the wait for Ready, if still waiting)."""
    started = status.step_started_at is not None
    return replace(status, phase=Phase.PROGRESSING, paused_by="", reason="Resumed",
                   step_started_at=tick.now if started else None,
                   rollout_started_at=status.rollout_started_at if started else tick.now,
                   message=f"resumed at {describe_position(tick.spec, status)}")


def decide_candidate_start(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    """Step 0 begins once the candidate is Ready; the progress deadline bounds the wait."""
    spec, version = tick.spec, status.candidate_version
    w, replicas = tick.workload(version), compute_replicas(spec, 0)
    if w.is_ready(replicas):
        out = out.then(status, normal("CandidateReady", f"{version} is Ready "
                                      f"({w.ready_replicas}/{replicas} pods)"))
        return decide_enter_step(tick, status, 0, out)
    started = status.rollout_started_at or tick.now
    if tick.now >= started + spec.progress_deadline:
        return decide_rollback(tick, status, out, "ProgressDeadlineExceeded",
                               f"{version} not Ready within progressDeadline "
                               f"({w.ready_replicas}/{replicas} pods ready)")
    return out


def decide_user_paused(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    ignored = tick.pending & {"promote", "promote_full"}
    for kind in sorted(ignored):
        out = out.then(status, normal("RequestIgnored", f"{kind} by {tick.by} ignored: "
                                      "spec.paused is true; resume first"), used=kind)
    # Still protect users: the candidate loses traffic if it has no ready pod.
    status = replace(status, traffic=compute_traffic(tick, status, hold=True))
    if status.phase is not Phase.PAUSED or status.paused_by != "spec.paused":
        status = replace(status, phase=Phase.PAUSED, paused_by="spec.paused", reason="PausedByUser",
                         message=f"paused (spec.paused) at {describe_position(tick.spec, status)}")
        return out.then(status, normal("Paused", status.message))
    return out.then(status)


def decide_promote_full(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    w, full = tick.workload(status.candidate_version), tick.spec.server.replicas
    if not w.is_ready(full):
        return out.then(status, normal("RequestIgnored", f"promoteFull by {tick.by} ignored: "
                                       f"{status.candidate_version} has {w.ready_replicas}/{full} "
                                       "pods ready"))
    return decide_start_promoting(tick, status, out, f"promoteFull by {tick.by}")


def decide_start_promoting(tick: Tick, status: RolloutStatus, out: Outcome, why: str) -> Outcome:
    """All traffic to the candidate in this status write; the next tick makes it stable."""
    stable, candidate = status.stable_version or "", status.candidate_version or ""
    status = replace(status, phase=Phase.PROMOTING, reason="Promoting", paused_by="",
                     message=f"{why}: 100% of traffic to {candidate}", next_check_at=None,
                     traffic=TrafficSplit(stable=VersionWeight(stable, 0),
                                          candidate=VersionWeight(candidate, 100)))
    return out.then(status, normal("Promoting", f"{status.message} "
                                   f"(last check: {describe_gates(status)})"))


def decide_enter_step(tick: Tick, status: RolloutStatus, index: int, out: Outcome) -> Outcome:
    """Move the cursor; the step's traffic applies as soon as the candidate can take it."""
    spec = tick.spec
    index = min(index, len(spec.steps) - 1)
    interval = spec.analysis.interval if spec.analysis else None
    status = replace(
        status, phase=Phase.PROGRESSING, paused_by="", current_step_index=index,
        step_started_at=tick.now, analysis=replace(status.analysis, step_passes=0),
        next_check_at=tick.now + interval if interval else None, reason="StepStarted")
    status = replace(status, traffic=compute_traffic(tick, status, hold=False))
    status = replace(status, message=f"{describe_position(spec, status)} "
                     f"(candidate {status.traffic.candidate_weight}%)")
    out = out.then(status, normal("StepStarted", f"{status.message}; "
                                  f"last check: {describe_gates(status)}"))
    step = spec.steps[index]
    if isinstance(step, (Promote, Stop)):
        return decide_step(tick, status, out)
    if isinstance(step, Pause) and step.duration is None:
        return decide_step(tick, status, out)
    return out


def decide_step(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    spec = tick.spec
    index = status.current_step_index or 0
    step = spec.steps[index]
    if isinstance(step, Promote):
        return decide_promote_step(tick, status, out)
    if isinstance(step, Stop):
        return decide_stop_step(tick, status, out)
    traffic = compute_traffic(tick, status, hold=False)
    if traffic != status.traffic:
        interval = spec.analysis.interval if spec.analysis else None
        status = replace(status, traffic=traffic, analysis=replace(status.analysis, step_passes=0),
                         next_check_at=tick.now + interval if interval else None)
        out = out.then(status)
    if isinstance(step, Pause) and step.duration is None:
        if status.phase is not Phase.PAUSED:
            status = replace(status, phase=Phase.PAUSED, paused_by="step", reason="WaitingForPromote",
                             message=f"{describe_position(spec, status)}: waiting for "
                             "`kubectl modelrollout promote`")
            out = out.then(status, normal("WaitingForPromote", status.message))
        return out
    if is_step_complete(tick, status):
        return decide_enter_step(tick, status, index + 1, out)
    return decide_deadline(tick, status, out)


def decide_deadline(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    deadline = compute_step_deadline(tick.spec, status)
    if deadline is None or tick.now < deadline:
        return out
    w = tick.workload(status.candidate_version)
    return decide_rollback(tick, status, out, "ProgressDeadlineExceeded",
                           f"{describe_position(tick.spec, status)} did not complete within "
                           f"progressDeadline (candidate {w.ready_replicas} pods ready; "
                           f"last check: {describe_gates(status)})")


def decide_promote_step(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    w, full = tick.workload(status.candidate_version), tick.spec.server.replicas
    if w.is_ready(full):
        return decide_start_promoting(tick, status, out, f"{describe_position(tick.spec, status)} reached")
    status = replace(status, traffic=compute_traffic(tick, status, hold=True))
    return decide_deadline(tick, status, out.then(status))


def decide_stop_step(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    """Shadow `then: stop`: out of traffic first, then report once that status is persisted."""
    stable = status.stable_version or ""
    status = replace(status, traffic=TrafficSplit(stable=VersionWeight(stable, 100)))
    if tick.persisted.traffic.routes_to(status.candidate_version):
        return out.then(status)
    msg = (f"shadow of {status.candidate_version} finished, not promoted (then: stop); "
           f"{describe_gates(status)}")
    status = replace(status, phase=Phase.STOPPED, reason="ShadowStopped", message=msg,
                     current_step_index=None, step_started_at=None, next_check_at=None)
    status = compute_with_history(tick.spec, status, compute_history_entry(
        status, tick.now, "Stopped", "ShadowStopped", msg))
    return out.then(status, normal("ShadowStopped", msg))


