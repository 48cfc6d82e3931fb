"""Monitoring gates on the stable version while no rollout is in flight (phase Healthy):
spec.monitoring's queries (through the same QueryRequest path as analysis), one round's
verdicts, and the Degraded condition they make (status.monitoring), with its two events.

A gate that fails spec.monitoring.failureLimit rounds in a row is breached; a breach sets
Degraded (a warning event `Degraded`, once); when every breached gate passes again it clears
(a normal event `Recovered`). Inconclusive rounds and query errors leave the count and the
condition as they are. Monitoring never changes traffic, unless the user opts in with
spec.monitoring.rollbackWithin: then a breach within that long of the last promotion switches
all traffic back to the previous version (kept at full size for that window) and the rollout
ends RolledBack with the degraded version as its candidate.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from .analysis import Criteria, Evaluation, Measurement, Verdict, evaluate
from .decision import EmitEvent, Tick, normal, warning
from .durations import format_duration, format_promql_duration
from .observations import QueryRequest, Role
from .phases import Phase
from .slices import compute_sliced_queries, evaluate_sliced
from .spec import MetricSpec, MonitoringSpec, RolloutSpec
from .status import HistoryEntry, MetricStatus, MonitoringStatus, RolloutStatus, TrafficSplit, VersionWeight
from .templates import DEFAULT_SAMPLES_QUERY, TEMPLATES, compute_arguments, render

_NOT_MEASURED = Measurement.error("the shell did not report this gate for the due monitoring round")


def is_monitoring_due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """True when a monitoring round is due on the persisted status: Healthy (or Invalid with
    Healthy suspended) with no new version asked for, and nextCheckAt passed or never set for
    this stable version."""
    if spec.monitoring is None or not status.stable_version:
        return False
    phase = status.suspended_phase if status.phase is Phase.INVALID else status.phase
    if phase is not Phase.HEALTHY or spec.model.version != status.stable_version:
        return False
    m = status.monitoring
    if m.version != status.stable_version or m.next_check_at is None:
        return True
    return now >= m.next_check_at


def plan_monitoring_queries(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> list[QueryRequest]:
    """The rendered queries of the monitoring round due now (empty when none is)."""
    if not is_monitoring_due(spec, status, now):
        return []
    assert spec.monitoring is not None
    return [compute_monitoring_query(spec, status, metric) for metric in spec.monitoring.metrics]


def compute_monitoring_query(spec: RolloutSpec, status: RolloutStatus, metric: MetricSpec) -> QueryRequest:
    """One gate rendered for the stable version over spec.monitoring.window ({{candidate}} is
    left undefined: parse_spec refuses a query that uses it)."""
    assert spec.monitoring is not None and status.stable_version is not None
    version = status.stable_version
    variables = {
        "namespace": spec.namespace,
        "rollout": spec.name,
        "model": spec.model.name,
        "version": version,
        "stable": version,
        "window": format_promql_duration(spec.monitoring.window),
    } | compute_arguments(metric.bound)
    if metric.slices is not None:
        query_text, samples_text = compute_sliced_queries(metric, False)
    elif metric.template is not None:
        query_text, samples_text = TEMPLATES[metric.template].query, TEMPLATES[metric.template].samples
    else:
        assert metric.query is not None
        query_text, samples_text = metric.query, DEFAULT_SAMPLES_QUERY
    return QueryRequest(
        metric=metric.name,
        role=Role.STABLE,
        version=version,
        query=render(query_text, variables),
        samples_query=render(samples_text, variables),
        slice_label=metric.slices.label if metric.slices is not None else "",
        slice_max=metric.slices.count if metric.slices is not None else 0,
    )


def decide_monitoring(tick: Tick) -> Tick:
    """Healthy: drop the readings when spec.monitoring went away; else, when a round is due,
    judge every gate on stable and set or clear Degraded (an event only when it flips)."""
    spec, status = tick.spec, tick.status
    monitoring = spec.monitoring
    if monitoring is None:
        if status.monitoring.version is None:
            return tick
        return tick.then(replace(status, monitoring=MonitoringStatus()))
    if not is_monitoring_due(spec, tick.persisted, tick.now):
        return tick
    version = status.stable_version or ""
    old = status.monitoring if status.monitoring.version == version else MonitoringStatus(version=version)
    gates = compute_round(tick, monitoring, old)
    new, event = compute_degraded(monitoring, old, gates, version)
    new = replace(
        new,
        last_check_at=tick.now,
        next_check_at=tick.now + monitoring.interval,
        rounds=old.rounds + 1,
        metrics=gates,
    )
    events = (event,) if event is not None else ()
    tick = tick.then(replace(status, monitoring=new), *events)
    if new.degraded and is_rollback_due(tick):
        return decide_rollback_to_previous(tick)
    return tick


REASON_ROLLBACK = "DegradedAfterPromotion"


def compute_promoted_at(status: RolloutStatus) -> datetime | None:
    """When the stable version was promoted by a rollout (not the first version's readiness)."""
    for entry in reversed(status.history):
        if entry.version == status.stable_version and entry.outcome == "Promoted":
            return entry.finished_at if entry.reason == "Promoted" else None
    return None


def is_rollback_due(tick: Tick) -> bool:
    """rollbackWithin is set, the stable version was promoted no longer ago than that, and the
    previous version is there to take all traffic at once (Ready at full size)."""
    monitoring, status = tick.spec.monitoring, tick.status
    if monitoring is None or monitoring.rollback_within is None or not status.previous_stable_version:
        return False
    promoted = compute_promoted_at(status)
    if promoted is None or tick.now - promoted > monitoring.rollback_within:
        return False
    return tick.workload(status.previous_stable_version).is_ready(tick.spec.server.replicas)


def decide_rollback_to_previous(tick: Tick) -> Tick:
    """All traffic to the previous version in this status write; the degraded version becomes
    the candidate that was rolled back (RollingBack, then RolledBack as any rollback; the spec
    still naming it keeps it there until a retry or another version)."""
    spec, status = tick.spec, tick.status
    assert spec.monitoring is not None and spec.monitoring.rollback_within is not None
    previous, degraded = status.previous_stable_version or "", status.stable_version or ""
    message = (
        f"{status.monitoring.message} within {format_duration(spec.monitoring.rollback_within)} "
        f"of its promotion (spec.monitoring.rollbackWithin)"
    )
    entry = HistoryEntry(
        version=degraded,
        outcome="RolledBack",
        reason=REASON_ROLLBACK,
        message=message,
        started_at=compute_promoted_at(status),
        finished_at=tick.now,
    )
    status = replace(
        status,
        phase=Phase.ROLLING_BACK,
        reason=REASON_ROLLBACK,
        message=f"{message} -> rolled back to {previous}",
        stable_version=previous,
        stable_uri=status.previous_stable_uri,
        candidate_version=degraded,
        candidate_uri=status.stable_uri,
        previous_stable_version=None,
        previous_stable_uri="",
        scale_down_at=None,
        current_step_index=None,
        step_started_at=None,
        next_check_at=None,
        traffic=TrafficSplit(stable=VersionWeight(previous, 100)),
        history=(*status.history, entry)[-spec.history_limit :],
    )
    return tick.then(status, warning(REASON_ROLLBACK, f"{message} -> rolling back to {previous}"))


def compute_round(tick: Tick, monitoring: MonitoringSpec, old: MonitoringStatus) -> tuple[MetricStatus, ...]:
    """Every gate's verdict this round, with its failing rounds in a row."""
    analysis = monitoring.analysis
    previous = {g.name: g for g in old.metrics}
    gates: list[MetricStatus] = []
    for metric in monitoring.metrics:
        criteria = Criteria.for_metric(metric, analysis)
        observed = tick.observations.measurements.get(metric.name)
        measured = observed.stable if observed is not None and observed.stable is not None else _NOT_MEASURED
        prev = previous.get(metric.name, MetricStatus(metric.name, criteria.describe()))
        if metric.slices is not None:
            sliced = evaluate_sliced(metric, analysis, measured, None, who="stable")
            gate = _record(prev, criteria, sliced.evaluation, measured)
            shown = sliced.shown
            gate = replace(gate, value=shown.value if shown else None, samples=sliced.samples, slices=sliced.slices)
        else:
            gate = _record(prev, criteria, evaluate(measured, criteria, who="stable"), measured)
        gates.append(gate)
    return tuple(gates)


def _record(prev: MetricStatus, criteria: Criteria, ev: Evaluation, measured: Measurement) -> MetricStatus:
    v = ev.verdict
    # Failing rounds in a row: a pass resets the count; no evidence (inconclusive, error) keeps it.
    failures = prev.failures + 1 if v is Verdict.FAIL else 0 if v is Verdict.PASS else prev.failures
    return replace(
        prev,
        threshold=criteria.describe(),
        verdict=v,
        value=measured.value,
        samples=measured.samples,
        message=ev.message,
        failures=failures,
        consecutive_errors=prev.consecutive_errors + 1 if v is Verdict.ERROR else 0,
    )


def compute_degraded(
    monitoring: MonitoringSpec, old: MonitoringStatus, gates: tuple[MetricStatus, ...], version: str
) -> tuple[MonitoringStatus, EmitEvent | None]:
    """The condition after this round, and the event when it flipped."""
    breached = [g for g in gates if g.failures >= monitoring.failure_limit]
    if breached:
        message = "; ".join(describe_breach(g) for g in breached) + f" on stable {version}"
        new = replace(old, version=version, degraded=True, reason=breached[0].name, message=message)
        return new, (None if old.degraded is True else warning("Degraded", message))
    summary = "; ".join(describe_reading(g) for g in gates) + f" on stable {version}"
    if old.degraded is True:
        return replace(old, degraded=False, reason="Recovered", message=summary), normal("Recovered", summary)
    if old.degraded is None and not all(g.verdict is Verdict.PASS for g in gates):
        # Not checked yet with evidence on every gate: say what is missing, stay Unknown.
        return replace(old, version=version, reason="NotChecked", message=summary), None
    reason = "Recovered" if old.reason == "Recovered" else "GatesPass"
    return replace(old, version=version, degraded=False, reason=reason, message=summary), None


def describe_breach(g: MetricStatus) -> str:
    """e.g. "unknown-rate 0.31 > max 0.2 (n=412) for 2 rounds" (failing rounds in a row)."""
    return f"{describe_reading(g)} for {g.failures} round{'s' if g.failures != 1 else ''}"


def describe_reading(g: MetricStatus) -> str:
    """The gate and its latest message; a per-slice message starts with the slice."""
    return f"{g.name}{g.message}" if g.slices and g.message.startswith("[") else f"{g.name} {g.message}"
