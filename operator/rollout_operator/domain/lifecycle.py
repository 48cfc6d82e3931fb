"""The phases around a running rollout: the first version (Initializing, Failed), Healthy and the
start of a rollout (with the sequential admission forecast), its two ends (Promoting -> Healthy, rolling back -> RolledBack), the resting
phases after one (RolledBack, Stopped), and the bounded history each end writes.

Every handler takes the Tick and returns it with the next status and its events.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from .decision import Tick, normal, warning
from .durations import format_duration
from .gates import compute_initial_metrics
from .monitoring import decide_monitoring
from .phases import Phase
from .sequential_gates import compute_forecast
from .spec import RolloutSpec, describe_step
from .status import AnalysisStatus, HistoryEntry, MonitoringStatus, RolloutStatus, TrafficSplit, VersionWeight


def decide_start_initializing(tick: Tick) -> Tick:
    """Bring up spec.model.version as the first version; no traffic until it is Ready."""
    m = tick.spec.model
    status = replace(
        tick.status,
        phase=Phase.INITIALIZING,
        reason="Initializing",
        message=f"waiting for {m.version} to become Ready",
        stable_version=m.version,
        stable_uri=m.uri,
        candidate_version=None,
        candidate_uri="",
        rollout_started_at=tick.now,
        traffic=TrafficSplit(),
        current_step_index=None,
        step_started_at=None,
        next_check_at=None,
    )
    return tick.then(
        status, normal("Initializing", f"deploying first version {m.version} ({tick.spec.server.replicas} replicas)")
    )


def decide_initializing(tick: Tick) -> Tick:
    status = tick.status
    version = status.stable_version
    if tick.spec.model.version != version:
        return decide_start_initializing(tick)
    w, replicas = tick.workload(version), tick.spec.server.replicas
    if w.is_ready(replicas):
        assert version is not None
        msg = f"{version} is Ready ({w.ready_replicas}/{replicas} pods) and serves 100% of traffic"
        status = replace(
            status,
            phase=Phase.HEALTHY,
            reason="InitialVersionReady",
            message=msg,
            traffic=TrafficSplit(stable=VersionWeight(version, 100)),
        )
        status = compute_with_history(
            tick.spec, status, compute_history_entry(status, tick.now, "Promoted", "InitialVersion", msg)
        )
        return tick.then(status, normal("Ready", msg))
    started = status.rollout_started_at or tick.now
    if tick.now >= started + tick.spec.progress_deadline:
        msg = (
            f"{version} not Ready after {format_duration(tick.spec.progress_deadline)} "
            f"({w.ready_replicas}/{replicas} pods ready); nothing to fall back to"
        )
        status = replace(status, phase=Phase.FAILED, reason="ProgressDeadlineExceeded", message=msg)
        status = compute_with_history(
            tick.spec, status, compute_history_entry(status, tick.now, "Failed", "ProgressDeadlineExceeded", msg)
        )
        return tick.then(status, warning("ProgressDeadlineExceeded", msg))
    return tick


def decide_failed(tick: Tick) -> Tick:
    if "retry" in tick.pending:
        tick = tick.then(
            tick.status, normal("Retry", f"retrying {tick.spec.model.version} (requested by {tick.by})"), used="retry"
        )
        return decide_start_initializing(tick)
    if tick.spec.model.version != tick.status.stable_version:
        return decide_start_initializing(tick)
    return tick


def decide_healthy(tick: Tick) -> Tick:
    """A new version starts a rollout; otherwise spec.monitoring watches stable (monitoring.py)."""
    if tick.spec.model.version != tick.status.stable_version:
        return decide_start_rollout(tick, retry=False)
    return decide_monitoring(tick)


def decide_start_rollout(tick: Tick, *, retry: bool) -> Tick:
    """Begin moving traffic to spec.model.version; step 0 starts once it is Ready."""
    spec, m, status = tick.spec, tick.spec.model, tick.status
    status = replace(
        status,
        phase=Phase.PROGRESSING,
        reason="RolloutStarted",
        message=f"waiting for {m.version} to become Ready",
        candidate_version=m.version,
        candidate_uri=m.uri,
        strategy=spec.strategy.kind,
        current_step_index=0,
        step_count=len(spec.steps),
        rollout_started_at=tick.now,
        step_started_at=None,
        next_check_at=None,
        paused_by="",
        traffic=TrafficSplit(stable=VersionWeight(status.stable_version or "", 100)),
        analysis=AnalysisStatus(metrics=compute_initial_metrics(spec)),
    )
    steps = ", ".join(describe_step(s) for s in spec.steps)
    verb = "retrying" if retry else "starting"
    tick = tick.then(
        status,
        normal(
            "RolloutStarted", f"{verb} {spec.strategy.kind} of {m.version} (stable {status.stable_version}): {steps}"
        ),
    )
    return decide_admission_forecast(tick)


def decide_admission_forecast(tick: Tick) -> Tick:
    """Sequential mode: one warning when, at stable's traffic now, some analysis step cannot
    reach a verdict within its longest wait. The gates remember the steps it named (status is
    the only memory), so those steps' first rounds do not say it again; this tick's status write
    moves the phase on, so a restart does not repeat it either."""
    baselines = {name: o.stable for name, o in tick.observations.measurements.items() if o.stable is not None}
    forecast = compute_forecast(tick.spec, baselines)
    if not forecast.message:
        return tick
    metrics = tuple(replace(g, warned_steps=forecast.warned.get(g.name, ())) for g in tick.status.analysis.metrics)
    status = replace(tick.status, analysis=replace(tick.status.analysis, metrics=metrics))
    return tick.then(status, warning("VerdictUnlikelyInTime", forecast.message))


def decide_rollback(tick: Tick, reason: str, message: str, *, outcome: str = "RolledBack", by: str = "") -> Tick:
    """Traffic goes 100% to stable in this very status write; scale-down waits for the next tick."""
    stable = tick.status.stable_version or ""
    status = replace(
        tick.status,
        phase=Phase.ROLLING_BACK,
        reason=reason,
        paused_by="",
        message=f"{message} -> rolled back to {stable}",
        next_check_at=None,
        traffic=TrafficSplit(stable=VersionWeight(stable, 100)),
    )
    status = compute_with_history(
        tick.spec, status, compute_history_entry(status, tick.now, outcome, reason, message, by)
    )
    return tick.then(status, warning(reason, f"{message} -> rolling back to {stable}"))


def decide_rolling_back(tick: Tick) -> Tick:
    """Finish a rollback once the persisted status no longer routes to the candidate."""
    status = tick.status
    if tick.persisted.traffic.routes_to(status.candidate_version):
        return tick  # the level pass re-asserts stable-only traffic; scale-down must wait
    rolled_back = compute_rolled_back(status)
    tick = tick.then(
        rolled_back,
        normal(
            "RolledBack", f"{status.candidate_version} takes no traffic any more; {status.stable_version} serves 100%"
        ),
    )
    return decide_after_rollout(tick)


def compute_rolled_back(status: RolloutStatus) -> RolloutStatus:
    return replace(status, phase=Phase.ROLLED_BACK, current_step_index=None, step_started_at=None, next_check_at=None)


def decide_after_rollout(tick: Tick) -> Tick:
    """RolledBack / Stopped: wait for a retry or a different spec version."""
    version, status = tick.spec.model.version, tick.status
    if "retry" in tick.pending and version == status.candidate_version:
        tick = tick.then(
            status, normal("Retry", f"retrying {version} from step 1 (requested by {tick.by})"), used="retry"
        )
        return decide_start_rollout(tick, retry=True)
    if version == status.stable_version:
        if status.candidate_version is None:
            return tick
        msg = f"spec.model.version is {version} again; {status.candidate_version} dropped"
        status = replace(
            status,
            phase=Phase.HEALTHY,
            reason="SpecReverted",
            message=msg,
            candidate_version=None,
            candidate_uri="",
            current_step_index=None,
        )
        return tick.then(status, normal("SpecReverted", msg))
    if version != status.candidate_version:
        return decide_start_rollout(tick, retry=False)
    return tick


def decide_promoting(tick: Tick) -> Tick:
    """The persisted status already sends everything to the candidate: make it stable."""
    if "abort" in tick.pending:
        return decide_rollback(
            tick.then(tick.status, used="abort"), "Aborted", f"aborted by {tick.by} during promotion", by=tick.by
        )
    status = tick.status
    new, old = status.candidate_version or "", status.stable_version
    delay = getattr(tick.spec.strategy, "scale_down_delay", None)
    monitoring = tick.spec.monitoring
    if monitoring is not None and monitoring.rollback_within is not None:
        # The way back must be an instant switch: the old stable stays at full size meanwhile.
        delay = max(delay or monitoring.rollback_within, monitoring.rollback_within)
    msg = (
        f"promoted {new}: 100% of traffic after {status.step_count} steps; "
        f"{old} {'kept for ' + format_duration(delay) + ' then ' if delay else ''}scaled to 0"
    )
    status = replace(
        status,
        phase=Phase.HEALTHY,
        reason="Promoted",
        message=msg,
        previous_stable_version=old,
        previous_stable_uri=status.stable_uri,
        scale_down_at=tick.now + delay if delay else tick.now,
        stable_version=new,
        stable_uri=status.candidate_uri,
        candidate_version=None,
        candidate_uri="",
        current_step_index=None,
        step_started_at=None,
        next_check_at=None,
        traffic=TrafficSplit(stable=VersionWeight(new, 100)),
        paused_by="",
        # The old stable's readings say nothing of the new one: Degraded starts Unknown again.
        monitoring=MonitoringStatus(version=new) if tick.spec.monitoring is not None else MonitoringStatus(),
    )
    status = compute_with_history(
        tick.spec, status, replace(compute_history_entry(status, tick.now, "Promoted", "Promoted", msg), version=new)
    )
    return tick.then(status, normal("Promoted", msg))


def compute_with_history(spec: RolloutSpec, status: RolloutStatus, entry: HistoryEntry) -> RolloutStatus:
    """History is bounded by spec.historyLimit; the oldest entries go first."""
    history = (*status.history, entry)[-spec.history_limit :]
    return replace(status, history=history)


def compute_history_entry(
    status: RolloutStatus, now: datetime, outcome: str, reason: str, message: str, by: str = ""
) -> HistoryEntry:
    return HistoryEntry(
        version=status.candidate_version or status.stable_version or "",
        outcome=outcome,
        reason=reason,
        message=message,
        started_at=status.rollout_started_at,
        finished_at=now,
        by=by,
    )
