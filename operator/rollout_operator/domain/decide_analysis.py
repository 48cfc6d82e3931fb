"""One analysis round: evaluate every metric, update its counters, and say whether a limit
was reached (failureLimit, consecutiveErrorLimit, inconclusiveLimit) with the numbers why."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .analysis import Criteria, Evaluation, Measurement, Verdict, evaluate, worst
from .context import Tick, warning
from .actions import EmitEvent
from .phases import Phase
from .spec import AnalysisSpec, MetricSpec, RolloutSpec
from .status import AnalysisStatus, MetricStatus, RolloutStatus

_NOT_MEASURED = Measurement.error("the shell did not report this metric for the due round")


@dataclass(frozen=True)
class LimitReached:
    reason: str  # AnalysisFailed | AnalysisError | InconclusiveAnalysis
    message: str


def compute_initial_metrics(spec: RolloutSpec) -> tuple[MetricStatus, ...]:
    """Fresh gates for a new rollout attempt: thresholds shown, nothing measured yet."""
    if spec.analysis is None:
        return ()
    return tuple(MetricStatus(name=m.name, threshold=_criteria(m, spec.analysis).describe())
                 for m in spec.metrics)


def decide_analysis_round(
    tick: Tick, status: RolloutStatus
) -> tuple[RolloutStatus, tuple[EmitEvent, ...], LimitReached | None]:
    """Evaluate the due round (the caller checked is_check_due on the persisted status)."""
    analysis = tick.spec.analysis
    assert analysis is not None
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
        ev = evaluate(candidate, criteria, stable)
        old = previous.get(metric.name, MetricStatus(metric.name, criteria.describe()))
        results.append((_count(old, criteria, ev, candidate, stable, count_inconclusive), ev))
    verdict = worst(ev.verdict for _, ev in results)
    new_analysis = AnalysisStatus(
        metrics=tuple(m for m, _ in results), last_verdict=verdict, last_check_at=tick.now,
        rounds=status.analysis.rounds + 1,
        step_passes=status.analysis.step_passes + (1 if verdict is Verdict.PASS else 0))
    status = replace(status, analysis=new_analysis, next_check_at=tick.now + analysis.interval)
    limit = compute_limit_reached(analysis, new_analysis.metrics)
    events: tuple[EmitEvent, ...] = ()
    if limit is None and verdict is not Verdict.PASS:
        events = (warning(f"Check{verdict.value}", summarize_round(analysis, new_analysis)),)
    return status, events, limit


def _criteria(metric: MetricSpec, analysis: AnalysisSpec) -> Criteria:
    return Criteria.for_metric(metric, analysis)


def _count(old: MetricStatus, criteria: Criteria, ev: Evaluation, candidate: Measurement,
           stable: Measurement | None, count_inconclusive: bool) -> MetricStatus:
    v = ev.verdict
    return replace(
        old, threshold=criteria.describe(), verdict=v, value=candidate.value,
        stable_value=stable.value if stable is not None else None, samples=candidate.samples,
        message=ev.message,
        failures=old.failures + (v is Verdict.FAIL),
        inconclusives=old.inconclusives + (v is Verdict.INCONCLUSIVE and count_inconclusive),
        # Only an unbroken streak of errors counts: one good answer shows Prometheus is back.
        consecutive_errors=old.consecutive_errors + 1 if v is Verdict.ERROR else 0)


def compute_limit_reached(analysis: AnalysisSpec, metrics: tuple[MetricStatus, ...]) -> LimitReached | None:
    """The first limit reached, failures before errors before inconclusive results."""
    for m in metrics:
        if m.failures >= analysis.failure_limit:
            return LimitReached("AnalysisFailed", f"{m.name} {m.message} "
                                f"({m.failures}/{analysis.failure_limit} failures)")
    for m in metrics:
        if m.consecutive_errors >= analysis.consecutive_error_limit:
            return LimitReached("AnalysisError", f"{m.name} {m.message} ({m.consecutive_errors}/"
                                f"{analysis.consecutive_error_limit} consecutive errors)")
    for m in metrics:
        if m.inconclusives >= analysis.inconclusive_limit:
            return LimitReached("InconclusiveAnalysis", f"{m.name} {m.message} ({m.inconclusives}/"
                                f"{analysis.inconclusive_limit} inconclusive checks)")
    return None


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
