"""Step arithmetic for the running rollout: the traffic a step puts on the candidate (never on
a version without ready pods), when a step is complete, and its deadline."""

from __future__ import annotations

from datetime import datetime, timedelta

from .analysis import Verdict
from .context import Tick, compute_replicas
from .queries import is_candidate_exposed
from .spec import RolloutSpec
from .status import MirrorTarget, RolloutStatus, TrafficSplit, VersionWeight
from .steps import Analysis, Pause, SetMirror, SetWeight, compute_step_traffic, describe_step


def compute_traffic(tick: Tick, status: RolloutStatus, *, hold: bool) -> TrafficSplit:
    """The split for the current step. Raising the candidate's share waits until it is Ready at
    the step's size; a candidate without a ready pod gets nothing. `hold` keeps current shares."""
    spec, candidate = tick.spec, status.candidate_version or ""
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
        mirror=MirrorTarget(candidate, want_mirror) if want_mirror > 0 else None)


def is_traffic_at_target(spec: RolloutSpec, status: RolloutStatus) -> bool:
    weight, mirror = compute_step_traffic(spec.steps, status.current_step_index or 0)
    current_mirror = status.traffic.mirror.percent if status.traffic.mirror else 0
    return status.traffic.candidate_weight == weight and current_mirror == mirror


def is_gate_open(spec: RolloutSpec, status: RolloutStatus, needed: int = 1) -> bool:
    """Analysis after every step: `needed` passing rounds since the step (or its traffic)
    started, the latest one a pass. Nothing to measure means nothing to wait for."""
    if not spec.metrics or not is_candidate_exposed(spec, status):
        return True
    a = status.analysis
    return a.step_passes >= needed and a.last_verdict is Verdict.PASS


def is_step_complete(tick: Tick, status: RolloutStatus) -> bool:
    spec, now = tick.spec, tick.now
    step = spec.steps[status.current_step_index or 0]
    if not is_traffic_at_target(spec, status):
        return False
    if isinstance(step, (SetWeight, SetMirror)):
        return is_gate_open(spec, status)
    if isinstance(step, Pause):
        return step.duration is not None and _elapsed(status, now, step.duration) and \
            is_gate_open(spec, status)
    if isinstance(step, Analysis):
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


def describe_gates(status: RolloutStatus) -> str:
    """Each gate's latest reading, e.g. "error-rate 0.002 (<= 0.01, n=530)"."""
    parts = []
    for m in status.analysis.metrics:
        if m.verdict is None:
            parts.append(f"{m.name} not checked yet")
            continue
        value = "no value" if m.value is None else f"{m.value:.4g}"
        samples = f", n={m.samples}" if m.samples is not None else ""
        parts.append(f"{m.name} {value} ({m.threshold}{samples}) {m.verdict.value.lower()}")
    return "; ".join(parts) if parts else "no analysis metrics"
