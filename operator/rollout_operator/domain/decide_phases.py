"""Phase handlers outside a running rollout: first deploy, Healthy, Promoting, rolling back,
and the resting phases after a rollout (RolledBack, Stopped, Failed)."""

from __future__ import annotations

from dataclasses import replace

from .context import (Outcome, Tick, compute_with_history, compute_history_entry, normal, warning)
from .decide_analysis import compute_initial_metrics
from .durations import format_duration
from .phases import Phase
from .status import AnalysisStatus, RolloutStatus, TrafficSplit, VersionWeight
from .steps import describe_step


def decide_fresh(tick: Tick, status: RolloutStatus) -> Outcome:
    return decide_start_initializing(tick, status, Outcome(status))


def decide_start_initializing(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    """Bring up spec.model.version as the first version; no traffic until it is Ready."""
    m = tick.spec.model
    status = replace(status, phase=Phase.INITIALIZING, reason="Initializing",
                     message=f"waiting for {m.version} to become Ready",
                     stable_version=m.version, stable_uri=m.uri, candidate_version=None,
                     candidate_uri="", rollout_started_at=tick.now, traffic=TrafficSplit(),
                     current_step_index=None, step_started_at=None, next_check_at=None)
    return out.then(status, normal("Initializing", f"deploying first version {m.version} "
                                   f"({tick.spec.server.replicas} replicas)"))


def decide_initializing(tick: Tick, status: RolloutStatus) -> Outcome:
    out = Outcome(status)
    version = status.stable_version
    if tick.spec.model.version != version:
        return decide_start_initializing(tick, status, out)
    w, replicas = tick.workload(version), tick.spec.server.replicas
    if w.is_ready(replicas):
        assert version is not None
        msg = f"{version} is Ready ({w.ready_replicas}/{replicas} pods) and serves 100% of traffic"
        status = replace(status, phase=Phase.HEALTHY, reason="InitialVersionReady", message=msg,
                         traffic=TrafficSplit(stable=VersionWeight(version, 100)))
        status = compute_with_history(tick.spec, status, compute_history_entry(
            status, tick.now, "Promoted", "InitialVersion", msg))
        return out.then(status, normal("Ready", msg))
    started = status.rollout_started_at or tick.now
    if tick.now >= started + tick.spec.progress_deadline:
        msg = (f"{version} not Ready after {format_duration(tick.spec.progress_deadline)} "
               f"({w.ready_replicas}/{replicas} pods ready); nothing to fall back to")
        status = replace(status, phase=Phase.FAILED, reason="ProgressDeadlineExceeded", message=msg)
        status = compute_with_history(tick.spec, status, compute_history_entry(
            status, tick.now, "Failed", "ProgressDeadlineExceeded", msg))
        return out.then(status, warning("ProgressDeadlineExceeded", msg))
    return out


def decide_failed(tick: Tick, status: RolloutStatus) -> Outcome:
    out = Outcome(status)
    if "retry" in tick.pending:
        out = out.then(status, normal("Retry", f"retrying {tick.spec.model.version} "
                                      f"(requested by {tick.by})"), used="retry")
        return decide_start_initializing(tick, status, out)
    if tick.spec.model.version != status.stable_version:
        return decide_start_initializing(tick, status, out)
    return out


def decide_healthy(tick: Tick, status: RolloutStatus) -> Outcome:
    if tick.spec.model.version != status.stable_version:
        return decide_start_rollout(tick, status, Outcome(status), retry=False)
    return Outcome(status)


def decide_start_rollout(tick: Tick, status: RolloutStatus, out: Outcome, *, retry: bool) -> Outcome:
    """Begin moving traffic to spec.model.version; step 0 starts once it is Ready."""
    spec, m = tick.spec, tick.spec.model
    status = replace(
        status, phase=Phase.PROGRESSING, reason="RolloutStarted",
        message=f"waiting for {m.version} to become Ready",
        candidate_version=m.version, candidate_uri=m.uri, strategy=spec.strategy.kind,
        current_step_index=0, step_count=len(spec.steps), rollout_started_at=tick.now,
        step_started_at=None, next_check_at=None, paused_by="",
        traffic=TrafficSplit(stable=VersionWeight(status.stable_version or "", 100)),
        analysis=AnalysisStatus(metrics=compute_initial_metrics(spec)))
    steps = ", ".join(describe_step(s) for s in spec.steps)
    verb = "retrying" if retry else "starting"
    return out.then(status, normal("RolloutStarted", f"{verb} {spec.strategy.kind} of {m.version} "
                                   f"(stable {status.stable_version}): {steps}"))


def decide_rollback(tick: Tick, status: RolloutStatus, out: Outcome, reason: str, message: str, *,
             outcome: str = "RolledBack", by: str = "") -> Outcome:
    """Traffic goes 100% to stable in this very status write; scale-down waits for the next tick."""
    stable = status.stable_version or ""
    status = replace(status, phase=Phase.ROLLING_BACK, reason=reason, paused_by="",
                     message=f"{message} -> rolled back to {stable}", next_check_at=None,
                     traffic=TrafficSplit(stable=VersionWeight(stable, 100)))
    status = compute_with_history(tick.spec, status, compute_history_entry(
        status, tick.now, outcome, reason, message, by))
    return out.then(status, warning(reason, f"{message} -> rolling back to {stable}"))


def decide_rolling_back(tick: Tick, status: RolloutStatus) -> Outcome:
    """Finish a rollback once the persisted status no longer routes to the candidate."""
    out = Outcome(status)
    if tick.persisted.traffic.routes_to(status.candidate_version):
        return out  # the level pass re-asserts stable-only traffic; scale-down must wait
    rolled_back = compute_rolled_back(status)
    out = out.then(rolled_back, normal("RolledBack", f"{status.candidate_version} takes no traffic "
                                       f"any more; {status.stable_version} serves 100%"))
    return decide_after_rollout(tick, rolled_back, out)


def compute_rolled_back(status: RolloutStatus) -> RolloutStatus:
    return replace(status, phase=Phase.ROLLED_BACK, current_step_index=None,
                   step_started_at=None, next_check_at=None)


def decide_after_rollout(tick: Tick, status: RolloutStatus, out: Outcome) -> Outcome:
    """RolledBack / Stopped: wait for a retry or a different spec version."""
    version = tick.spec.model.version
    if "retry" in tick.pending and version == status.candidate_version:
        out = out.then(status, normal("Retry", f"retrying {version} from step 1 "
                                      f"(requested by {tick.by})"), used="retry")
        return decide_start_rollout(tick, status, out, retry=True)
    if version == status.stable_version:
        if status.candidate_version is None:
            return out.then(status)
        msg = f"spec.model.version is {version} again; {status.candidate_version} dropped"
        status = replace(status, phase=Phase.HEALTHY, reason="SpecReverted", message=msg,
                         candidate_version=None, candidate_uri="", current_step_index=None)
        return out.then(status, normal("SpecReverted", msg))
    if version != status.candidate_version:
        return decide_start_rollout(tick, status, out, retry=False)
    return out.then(status)


def decide_promoting(tick: Tick, status: RolloutStatus) -> Outcome:
    """The persisted status already sends everything to the candidate: make it stable."""
    out = Outcome(status)
    if "abort" in tick.pending:
        return decide_rollback(tick, status, out.then(status, used="abort"), "Aborted",
                               f"aborted by {tick.by} during promotion", by=tick.by)
    new, old = status.candidate_version or "", status.stable_version
    delay = getattr(tick.spec.strategy, "scale_down_delay", None)
    msg = (f"promoted {new}: 100% of traffic after {status.step_count} steps; "
           f"{old} {'kept for ' + format_duration(delay) + ' then ' if delay else ''}scaled to 0")
    status = replace(
        status, phase=Phase.HEALTHY, reason="Promoted", message=msg,
        previous_stable_version=old, scale_down_at=tick.now + delay if delay else tick.now,
        stable_version=new, stable_uri=status.candidate_uri, candidate_version=None,
        candidate_uri="", current_step_index=None, step_started_at=None, next_check_at=None,
        traffic=TrafficSplit(stable=VersionWeight(new, 100)), paused_by="")
    status = compute_with_history(tick.spec, status, replace(
        compute_history_entry(status, tick.now, "Promoted", "Promoted", msg), version=new))
    return out.then(status, normal("Promoted", msg))
