"""The analysis gates of a running rollout: which metric queries are due (fully rendered, so the
shell runs only what decide() needs), one check round with its counters and limits
(failureLimit, consecutiveErrorLimit, inconclusiveLimit), and whether a step's gate is open.
At the tick that starts a sequential rollout, stable's counts for the admission forecast.

A check round is due when the candidate is exposed (weight, mirror or blue-green preview) in a
running step and status.nextCheckAt has passed. The verdict of one check is analysis.evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .analysis import Criteria, Evaluation, Measurement, Verdict, evaluate, worst
from .decision import EmitEvent, Tick, warning
from .durations import format_duration, format_promql_duration
from .monitoring import plan_monitoring_queries
from .observations import QueryRequest, Role
from .phases import Phase
from .sequential_gates import (
    SEQUENTIAL_TEMPLATES,
    SequentialGate,
    compute_baseline_query,
    compute_count_window,
    compute_rates,
    evaluate_sequential_gate,
)
from .slices import SlicedVerdict, compute_sliced_queries, evaluate_sliced, evaluate_sliced_sequential
from .spec import Analysis, AnalysisSpec, BlueGreenStrategy, MetricSpec, RolloutSpec, describe_step
from .status import AnalysisStatus, MetricStatus, RolloutStatus
from .templates import DEFAULT_SAMPLES_QUERY, TEMPLATES, compute_arguments, render

_NOT_MEASURED = Measurement.error("the shell did not report this metric for the due round")


def is_candidate_exposed(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """True when the candidate can receive requests whose metrics the gates read."""
    if status.candidate_version is None or status.step_started_at is None:
        return False
    traffic = status.traffic
    if traffic.routes_to(status.candidate_version):
        return True
    # Blue-green: the preview Service carries test traffic from the first step on.
    return isinstance(spec.strategy, BlueGreenStrategy)


def is_check_due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    if not spec.metrics or status.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return False
    if not is_candidate_exposed(spec, status):
        return False
    return status.next_check_at is None or now >= status.next_check_at


def is_admission_due(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """True when this tick starts a sequential rollout (lifecycle.decide_start_rollout), so the
    admission forecast needs stable's counts: Healthy with a new version, or RolledBack/Stopped
    with a newer one or a retry."""
    if spec.analysis is None or not spec.analysis.is_sequential or not spec.metrics:
        return False
    phase = status.suspended_phase if status.phase is Phase.INVALID else status.phase
    version = spec.model.version
    if not status.stable_version or version == status.stable_version:
        return False
    if phase is Phase.HEALTHY:
        return True
    if phase in (Phase.ROLLED_BACK, Phase.STOPPED):
        return version != status.candidate_version or spec.requests.retry > status.handled_requests.retry
    return False


def plan_queries(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> list[QueryRequest]:
    """The rendered queries for the check round due now, stable's counts for the admission
    forecast when this tick starts a sequential rollout, or the monitoring round due on stable
    while Healthy (empty when none is due; the three never fall on one tick)."""
    if is_admission_due(spec, status):
        # A per-slice gate is left out of the forecast: stable's total says nothing of one slice.
        return [
            compute_baseline_request(spec, status, m)
            for m in spec.metrics
            if m.template in SEQUENTIAL_TEMPLATES and m.slices is None
        ]
    if not is_check_due(spec, status, now):
        return plan_monitoring_queries(spec, status, now)
    assert status.candidate_version is not None
    requests: list[QueryRequest] = []
    for metric in spec.metrics:
        requests.append(compute_query(spec, status, metric, Role.CANDIDATE, now))
        if metric.relative_to == "stable" and status.stable_version:
            requests.append(compute_query(spec, status, metric, Role.STABLE, now))
    return requests


def compute_query(
    spec: RolloutSpec,
    status: RolloutStatus,
    metric: MetricSpec,
    role: Role,
    now: datetime | None = None,
) -> QueryRequest:
    """Render one metric for one version; the same text serves both sides of a comparison.
    Sequential mode counts events and trials over the whole time since the step began."""
    version = status.stable_version if role is Role.STABLE else status.candidate_version
    assert version is not None and spec.analysis is not None
    variables = compute_variables(spec, status, version) | compute_arguments(metric.bound)
    sequential = spec.analysis.is_sequential and metric.template in SEQUENTIAL_TEMPLATES
    if sequential and now is not None and status.step_started_at is not None:
        variables["window"] = compute_count_window(now - status.step_started_at)
    if metric.slices is not None:
        query_text, samples_text = compute_sliced_queries(metric, sequential)
    elif metric.template is not None:
        template = (SEQUENTIAL_TEMPLATES if sequential else TEMPLATES)[metric.template]
        query_text, samples_text = template.query, template.samples
    else:
        assert metric.query is not None
        query_text, samples_text = metric.query, DEFAULT_SAMPLES_QUERY
    return QueryRequest(
        metric=metric.name,
        role=role,
        version=version,
        query=render(query_text, variables),
        samples_query=render(samples_text, variables),
        slice_label=metric.slices.label if metric.slices is not None else "",
        slice_max=metric.slices.count if metric.slices is not None else 0,
    )


def compute_baseline_request(spec: RolloutSpec, status: RolloutStatus, metric: MetricSpec) -> QueryRequest:
    """Stable's events and trials for one gate over spec.analysis.window (their ratio is the
    value a candidate like stable would show, the trials per second its traffic)."""
    assert status.stable_version is not None and metric.template is not None
    variables = compute_variables(spec, status, status.stable_version) | compute_arguments(metric.bound)
    query, samples = compute_baseline_query(metric.template)
    return QueryRequest(
        metric=metric.name,
        role=Role.STABLE,
        version=status.stable_version,
        query=render(query, variables),
        samples_query=render(samples, variables),
    )


def compute_variables(spec: RolloutSpec, status: RolloutStatus, version: str) -> dict[str, str]:
    assert spec.analysis is not None
    variables = {
        "namespace": spec.namespace,
        "rollout": spec.name,
        "model": spec.model.name,
        "version": version,
        "candidate": status.candidate_version or "",
        "stable": status.stable_version or "",
        "window": format_promql_duration(spec.analysis.window),
    }
    # An empty value would silently match nothing; leave it undefined so rendering fails.
    return {k: v for k, v in variables.items() if v}


@dataclass(frozen=True)
class LimitReached:
    reason: str  # AnalysisFailed | AnalysisError | InconclusiveAnalysis
    message: str


def compute_initial_metrics(spec: RolloutSpec) -> tuple[MetricStatus, ...]:
    """Fresh gates for a new rollout attempt: thresholds shown, nothing measured yet."""
    if spec.analysis is None:
        return ()
    return tuple(MetricStatus(name=m.name, threshold=_criteria(m, spec.analysis).describe()) for m in spec.metrics)


def decide_analysis_round(tick: Tick) -> tuple[Tick, LimitReached | None]:
    """Evaluate the due round (the caller checked is_check_due on the persisted status)."""
    status, analysis = tick.status, tick.spec.analysis
    assert analysis is not None
    if analysis.is_sequential:
        return decide_sequential_round(tick)
    previous = {m.name: m for m in status.analysis.metrics}
    # Waiting for a person is not waiting for evidence: quiet traffic during an approval
    # pause must not time the rollout out (failures and errors still count).
    count_inconclusive = status.phase is not Phase.PAUSED
    results: list[tuple[MetricStatus, Evaluation]] = []
    for metric in tick.spec.metrics:
        criteria = _criteria(metric, analysis)
        observed = tick.observations.measurements.get(metric.name)
        candidate = observed.candidate if observed else _NOT_MEASURED
        stable = observed.stable if observed else None
        old = previous.get(metric.name, MetricStatus(metric.name, criteria.describe()))
        if metric.slices is not None:
            sliced = evaluate_sliced(metric, analysis, candidate, stable)
            ev = sliced.evaluation
            counted = _count(old, criteria, ev, candidate, stable, count_inconclusive)
            results.append((_record_slices(counted, sliced), ev))
            continue
        ev = evaluate(candidate, criteria, stable)
        results.append((_count(old, criteria, ev, candidate, stable, count_inconclusive), ev))
    verdict = worst(ev.verdict for _, ev in results)
    new_analysis = AnalysisStatus(
        metrics=tuple(m for m, _ in results),
        last_verdict=verdict,
        last_check_at=tick.now,
        rounds=status.analysis.rounds + 1,
        step_passes=status.analysis.step_passes + (1 if verdict is Verdict.PASS else 0),
    )
    status = replace(status, analysis=new_analysis, next_check_at=tick.now + analysis.interval)
    limit = compute_limit_reached(analysis, new_analysis.metrics)
    events: tuple[EmitEvent, ...] = ()
    if limit is None and verdict is not Verdict.PASS:
        events = (warning(f"Check{verdict.value}", summarize_round(analysis, new_analysis)),)
    return tick.then(status, *events), limit


def decide_sequential_round(tick: Tick) -> tuple[Tick, LimitReached | None]:
    """A sequential round: every gate from its counts since the step began. Any Fail rolls back
    at once (the bound already accounts for every look); an analysis step still undecided at
    its longest wait ends as InconclusiveAnalysis; errors count as in threshold mode."""
    status, spec = tick.status, tick.spec
    analysis = spec.analysis
    assert analysis is not None and status.step_started_at is not None
    elapsed = tick.now - status.step_started_at
    rates = compute_rates(analysis, sum(isinstance(s, Analysis) for s in spec.steps))
    previous = {m.name: m for m in status.analysis.metrics}
    metrics: list[MetricStatus] = []
    for metric in spec.metrics:
        observed = tick.observations.measurements.get(metric.name)
        candidate = observed.candidate if observed else _NOT_MEASURED
        stable = observed.stable if observed else None
        old = previous.get(metric.name, MetricStatus(metric.name, ""))
        if metric.slices is not None:
            gate, slices = evaluate_sliced_sequential(metric, analysis, candidate, stable, rates, elapsed)
            shown = next((s for s in slices if s.verdict is gate.verdict), None)
            recorded = _record_gate(old, _criteria(metric, analysis), gate, None)
            metrics.append(replace(recorded, stable_value=shown.stable_value if shown else None, slices=slices))
            continue
        gate = evaluate_sequential_gate(metric, analysis, candidate, stable, rates, elapsed)
        metrics.append(_record_gate(old, _criteria(metric, analysis), gate, stable))
    verdict = worst(m.verdict for m in metrics if m.verdict is not None)
    new_analysis = AnalysisStatus(
        metrics=tuple(metrics),
        last_verdict=verdict,
        last_check_at=tick.now,
        rounds=status.analysis.rounds + 1,
        step_passes=status.analysis.step_passes + (1 if verdict is Verdict.PASS else 0),
    )
    status = replace(status, analysis=new_analysis, next_check_at=tick.now + analysis.interval)
    limit = _sequential_limit(spec, status, new_analysis, elapsed)
    events: tuple[EmitEvent, ...] = ()
    if limit is None and verdict is Verdict.ERROR:
        events = (warning("CheckError", summarize_round(analysis, new_analysis)),)
    last, started = tick.status.analysis.last_check_at, tick.status.step_started_at
    assert started is not None  # a round is due only in a started step (is_check_due)
    first_round = last is None or last <= started
    slow = compute_slow_gates(spec, status, new_analysis, elapsed) if first_round and limit is None else ""
    if slow:
        events += (warning("VerdictUnlikelyInTime", slow),)
    return tick.then(status, *events), limit


def compute_slow_gates(spec: RolloutSpec, status: RolloutStatus, a: AnalysisStatus, elapsed: timedelta) -> str:
    """At an analysis step's first round: the gates that, at the traffic seen so far, would need
    longer than the step may wait ("" when none). Only a warning: the estimate rests on one
    interval of traffic, and the step still ends at its longest wait as usual. A gate the
    admission forecast already warned about for this step is not repeated."""
    analysis = spec.analysis
    index = status.current_step_index or 0
    step = spec.steps[index]
    if analysis is None or not isinstance(step, Analysis):
        return ""
    longest = step.duration or analysis.max_duration
    left = (longest - elapsed).total_seconds()
    slow: list[str] = []
    for m in a.metrics:
        if m.verdict is not Verdict.INCONCLUSIVE or index in m.warned_steps:
            continue
        if m.seconds_to_verdict is None:
            why = "no traffic yet" if not m.samples else "its estimate sits on the threshold"
            slow.append(f"{m.name} cannot estimate when it will be decided ({why})")
        elif m.seconds_to_verdict > left:
            rate = (m.samples or 0) / elapsed.total_seconds() if elapsed.total_seconds() > 0 else 0.0
            slow.append(
                f"{m.name} needs ~{m.samples_needed} more samples, {_approx(m.seconds_to_verdict)} at {rate:.3g} req/s"
            )
    if not slow:
        return ""
    return (
        f"{'; '.join(slow)}, but {describe_step(step)} waits at most {format_duration(longest)} "
        f"({_approx(max(0.0, left))} left): raise the weight, widen the margin or lengthen the "
        "step, or it ends as InconclusiveAnalysis"
    )


def _approx(seconds: float) -> str:
    """A rough duration for people: "~45s", "~14m", "~3.4h"."""
    if seconds < 120:
        return f"~{seconds:.0f}s"
    return f"~{seconds / 60:.0f}m" if seconds < 7200 else f"~{seconds / 3600:.1f}h"


def _record_gate(
    old: MetricStatus, criteria: Criteria, gate: SequentialGate, stable: Measurement | None
) -> MetricStatus:
    v = gate.verdict
    stable_value = None
    if stable is not None and stable.value is not None and stable.samples:
        stable_value = min(max(stable.value / stable.samples, 0.0), 1.0)
    return replace(
        old,
        threshold=criteria.describe(),
        verdict=v,
        value=gate.estimate,
        stable_value=stable_value,
        samples=gate.samples,
        message=gate.message,
        failures=old.failures + (v is Verdict.FAIL),
        consecutive_errors=old.consecutive_errors + 1 if v is Verdict.ERROR else 0,
        lower=gate.lower,
        upper=gate.upper,
        stable_samples=gate.stable_samples,
        samples_needed=gate.samples_needed,
        seconds_to_verdict=gate.seconds_to_verdict,
    )


def _sequential_limit(
    spec: RolloutSpec, status: RolloutStatus, a: AnalysisStatus, elapsed: timedelta
) -> LimitReached | None:
    analysis = spec.analysis
    assert analysis is not None
    for m in a.metrics:
        if m.verdict is Verdict.FAIL:
            return LimitReached("AnalysisFailed", describe_gate(m))
    for m in a.metrics:
        if m.consecutive_errors >= analysis.consecutive_error_limit:
            return LimitReached(
                "AnalysisError",
                f"{describe_gate(m)} ({m.consecutive_errors}/{analysis.consecutive_error_limit} consecutive errors)",
            )
    step = spec.steps[status.current_step_index or 0]
    if isinstance(step, Analysis) and a.last_verdict is not Verdict.PASS:
        longest = step.duration or analysis.max_duration
        if elapsed >= longest:
            undecided = "; ".join(describe_gate(m) for m in a.metrics if m.verdict is not Verdict.PASS)
            return LimitReached("InconclusiveAnalysis", f"no verdict within {format_duration(longest)}: {undecided}")
    return None


def describe_gate(m: MetricStatus) -> str:
    """The gate and its message for a rollback reason; a per-slice gate's message starts with
    the slice, so it reads "accuracy[young] 0.62 < stable-0.05 = 0.86 (n=212)"."""
    return f"{m.name}{m.message}" if m.slices and m.message.startswith("[") else f"{m.name} {m.message}"


def _record_slices(counted: MetricStatus, sliced: SlicedVerdict) -> MetricStatus:
    """A threshold-mode per-slice gate: its slices, and the deciding slice's numbers on top."""
    shown = sliced.shown
    return replace(
        counted,
        value=shown.value if shown else None,
        stable_value=shown.stable_value if shown else None,
        samples=sliced.samples,
        slices=sliced.slices,
    )


def _criteria(metric: MetricSpec, analysis: AnalysisSpec) -> Criteria:
    return Criteria.for_metric(metric, analysis)


def _count(
    old: MetricStatus,
    criteria: Criteria,
    ev: Evaluation,
    candidate: Measurement,
    stable: Measurement | None,
    count_inconclusive: bool,
) -> MetricStatus:
    v = ev.verdict
    return replace(
        old,
        threshold=criteria.describe(),
        verdict=v,
        value=candidate.value,
        stable_value=stable.value if stable is not None else None,
        samples=candidate.samples,
        message=ev.message,
        failures=old.failures + (v is Verdict.FAIL),
        inconclusives=old.inconclusives + (v is Verdict.INCONCLUSIVE and count_inconclusive),
        # Only an unbroken streak of errors counts: one good answer shows Prometheus is back.
        consecutive_errors=old.consecutive_errors + 1 if v is Verdict.ERROR else 0,
    )


def compute_limit_reached(analysis: AnalysisSpec, metrics: tuple[MetricStatus, ...]) -> LimitReached | None:
    """The first limit reached, failures before errors before inconclusive results."""
    for m in metrics:
        if m.failures >= analysis.failure_limit:
            return LimitReached(
                "AnalysisFailed", f"{describe_gate(m)} ({m.failures}/{analysis.failure_limit} failures)"
            )
    for m in metrics:
        if m.consecutive_errors >= analysis.consecutive_error_limit:
            return LimitReached(
                "AnalysisError",
                f"{describe_gate(m)} ({m.consecutive_errors}/{analysis.consecutive_error_limit} consecutive errors)",
            )
    for m in metrics:
        if m.inconclusives >= analysis.inconclusive_limit:
            return LimitReached(
                "InconclusiveAnalysis",
                f"{describe_gate(m)} ({m.inconclusives}/{analysis.inconclusive_limit} inconclusive checks)",
            )
    return None


def is_gate_open(spec: RolloutSpec, status: RolloutStatus, needed: int = 1) -> bool:
    """Analysis after every step: `needed` passing rounds since the step (or its traffic)
    started, the latest one a pass. Nothing to measure means nothing to wait for."""
    if not spec.metrics or not is_candidate_exposed(spec, status):
        return True
    a = status.analysis
    return a.step_passes >= needed and a.last_verdict is Verdict.PASS


def summarize_round(analysis: AnalysisSpec, a: AnalysisStatus) -> str:
    """One line per round with each gate's reading, e.g. for events on a non-passing round."""
    parts = []
    for m in a.metrics:
        count = ""
        if m.verdict is Verdict.FAIL:
            count = f" ({m.failures}/{analysis.failure_limit} failures)"
        elif m.verdict is Verdict.ERROR:
            count = f" ({m.consecutive_errors}/{analysis.consecutive_error_limit} errors)"
        elif m.verdict is Verdict.INCONCLUSIVE:
            count = f" ({m.inconclusives}/{analysis.inconclusive_limit} inconclusive)"
        verdict = m.verdict.value.lower() if m.verdict else "unchecked"
        parts.append(f"{m.name} {verdict}: {m.message}{count}")
    return "; ".join(parts) if parts else "no metrics"


def describe_gates(status: RolloutStatus) -> str:
    """Each gate's latest reading, e.g. "error-rate 0.002 (<= 0.01, n=530)"."""
    parts = []
    for m in status.analysis.metrics:
        if m.verdict is None:
            parts.append(f"{m.name} not checked yet")
            continue
        value = "no value" if m.value is None else f"{m.value:.4g}"
        samples = f", n={m.samples}" if m.samples is not None else ""
        # A per-slice gate names the slice its value is from (the deciding one).
        shown = next((f"[{s.name}]" for s in m.slices if s.verdict is m.verdict), "")
        parts.append(f"{m.name}{shown} {value} ({m.threshold}{samples}) {m.verdict.value.lower()}")
    return "; ".join(parts) if parts else "no analysis metrics"
