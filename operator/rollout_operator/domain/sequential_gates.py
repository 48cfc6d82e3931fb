"""Sequential gates: the count queries they run (events and trials since the step began), one
gate's verdict from those counts with its interval, the rates each gate runs at, and the
admission forecast (can each analysis step reach a verdict at stable's traffic?).

The statistics are in sequential.py; gates.py calls in here when spec.analysis.mode is sequential.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from .analysis import Measurement, MeasurementKind, Verdict, worst
from .durations import format_promql_duration
from .sequential import (
    GateRates,
    Outcome,
    SequentialResult,
    Side,
    compute_gate_rates,
    evaluate_difference,
    evaluate_rate,
)
from .spec import Analysis, AnalysisSpec, MetricSpec, OnNoData, RolloutSpec, SetMirror, SetWeight, describe_step
from .templates import FEEDBACK_SEL, PAIRWISE_TEMPLATES, Template

# Count queries per built-in template: `query` gives the events (or the sum of values in [0, 1]),
# `samples` the trials, both over {{window}} = the time since the step began. Same selectors as
# the rate templates in templates.py, so they read the same series.
_SEL = 'namespace="{{namespace}}",model="{{model}}",version="{{version}}"'
_LAT = f'{_SEL},stage="total"'
_LAT_COUNT = f"speech_request_duration_seconds_count{{{_LAT}}}"
_LAT_FAST = f'speech_request_duration_seconds_bucket{{{_LAT},le="{{{{bound}}}}"}}'
_SHADOW_SEL = (
    'namespace="{{namespace}}",rollout="{{rollout}}",stable_version="{{stable}}",candidate_version="{{candidate}}"'
)


def _count(selector: str) -> str:
    return f"sum(increase({selector}[{{{{window}}}}]))"


def _events(selector: str) -> str:
    # `or vector(0)`: no series for the event yet means none happened, not no data.
    return f"({_count(selector)} or vector(0))"


SEQUENTIAL_TEMPLATES: dict[str, Template] = {
    "error-rate": Template(
        query=_events(f'speech_requests_total{{{_SEL},outcome="server_error"}}'),
        samples=_count(f"speech_requests_total{{{_SEL}}}"),
        description="server errors / requests since the step began",
    ),
    "slow-requests": Template(
        # Both series exist from the server's start (pre-created), so no `or vector(0)`; the
        # difference is clamped into [0, trials] like every event count (_events_within).
        query=f"({_count(_LAT_COUNT)} - {_count(_LAT_FAST)})",
        samples=_count(_LAT_COUNT),
        description="requests slower than the bound / requests since the step began",
        arguments=("bound",),
    ),
    "unknown-rate": Template(
        query=_events(f'speech_predictions_total{{{_SEL},label=~"_unknown_|_silence_"}}'),
        samples=_count(f"speech_predictions_total{{{_SEL}}}"),
        description="_unknown_/_silence_ predictions / predictions since the step began",
    ),
    "mean-confidence": Template(
        query=_count(f"speech_confidence_sum{{{_SEL}}}"),
        samples=_count(f"speech_confidence_count{{{_SEL}}}"),
        description="sum / count of the predicted label's confidence since the step began",
    ),
    "accuracy": Template(
        query=_events(f'router_feedback_total{{{FEEDBACK_SEL},result="correct"}}'),
        samples=_count(f"router_feedback_total{{{FEEDBACK_SEL}}}"),
        description="correct / all fed-back labels since the step began",
    ),
    "shadow-agreement": Template(
        query=_events(f'router_shadow_comparisons_total{{{_SHADOW_SEL},result="agree"}}'),
        samples=_count(f"router_shadow_comparisons_total{{{_SHADOW_SEL}}}"),
        description="agreeing / all shadow comparisons since the step began (paired)",
    ),
    "shadow-segment-agreement": Template(
        query=_events(f'router_shadow_segment_comparisons_total{{{_SHADOW_SEL},result="agree"}}'),
        samples=_count(f"router_shadow_segment_comparisons_total{{{_SHADOW_SEL}}}"),
        description="agreeing / all segment comparisons since the step began (paired)",
    ),
}


def compute_count_window(elapsed: timedelta) -> str:
    """{{window}} for count queries: the whole time since the step began, in whole seconds
    (at least 1s, the shortest range PromQL takes here)."""
    return format_promql_duration(timedelta(seconds=max(1, math.ceil(elapsed.total_seconds()))))


def count_checks(metric: MetricSpec) -> int:
    """Tests in one gate, each separate in the rollback split: one per threshold, per slice for a
    per-slice gate (k fixed in advance: the listed values, or slices.max)."""
    thresholds = sum(v is not None for v in (metric.min, metric.max, metric.max_increase, metric.max_decrease))
    return thresholds * (metric.slices.count if metric.slices is not None else 1)


def compute_rates(analysis: AnalysisSpec, analysis_steps: int) -> GateRates:
    """Each test's rates: falsePromotionRate as declared, falseRollbackRate split across every
    threshold of every gate (and slice) and every analysis step (sequential.compute_gate_rates
    says why; a slice is one more gate to it)."""
    checks = max(1, sum(count_checks(m) for m in analysis.metrics))
    return compute_gate_rates(
        analysis.false_promotion_rate, analysis.false_rollback_rate, gates=checks, rounds=max(1, analysis_steps)
    )


@dataclass(frozen=True)
class SequentialGate:
    """One gate at one look: its verdict and message, and what status shows about the evidence."""

    verdict: Verdict
    message: str
    estimate: float | None = None  # candidate's events / trials (the value status shows)
    lower: float | None = None  # interval of the (first undecided, else first) threshold's test
    upper: float | None = None
    samples: int | None = None  # candidate trials since the step began
    stable_samples: int | None = None
    samples_needed: int | None = None  # 0 when decided; None when unknown
    seconds_to_verdict: float | None = None  # samples_needed at the candidate's request rate


def evaluate_sequential_gate(
    metric: MetricSpec,
    analysis: AnalysisSpec,
    candidate: Measurement,
    stable: Measurement | None,
    rates: GateRates,
    elapsed: timedelta,
) -> SequentialGate:
    """The gate from counts since the step began: query errors are errors, no data follows
    onNoData, then one test per threshold; the gate is the worst of them."""
    early = _evidence(candidate, analysis.on_no_data, "candidate")
    if early is not None:
        return early
    n = _trials(candidate)
    events = _events_within(candidate, n)
    tests: list[tuple[str, SequentialResult]] = []
    prefix = ""
    if metric.min is not None:
        tests.append((f"min {_num(metric.min)}", evaluate_rate(events, n, metric.min, Side.AT_LEAST, rates)))
    if metric.max is not None:
        tests.append((f"max {_num(metric.max)}", evaluate_rate(events, n, metric.max, Side.AT_MOST, rates)))
    stable_n: int | None = None
    if metric.relative_to is not None and (metric.max_increase is not None or metric.max_decrease is not None):
        if stable is None:
            return SequentialGate(Verdict.ERROR, "stable was not measured for a relative threshold")
        early = _evidence(stable, analysis.on_no_data, "stable")
        if early is not None:
            # No baseline is no evidence: it can never make a pass.
            verdict = Verdict.INCONCLUSIVE if early.verdict is Verdict.PASS else early.verdict
            return SequentialGate(verdict, early.message, samples=int(n))
        stable_n = int(_trials(stable))
        s_events = _events_within(stable, _trials(stable))
        prefix = "candidate - stable "
        if metric.max_increase is not None:
            tests.append(
                (
                    f"maxIncrease {_num(metric.max_increase)}",
                    evaluate_difference(events, n, s_events, _trials(stable), metric.max_increase, Side.AT_MOST, rates),
                )
            )
        if metric.max_decrease is not None:
            tests.append(
                (
                    f"maxDecrease {_num(metric.max_decrease)}",
                    evaluate_difference(
                        events, n, s_events, _trials(stable), -metric.max_decrease, Side.AT_LEAST, rates
                    ),
                )
            )
    return _combine(tests, prefix, events, n, stable_n, elapsed)


def _combine(
    tests: list[tuple[str, SequentialResult]],
    prefix: str,
    events: float,
    n: float,
    stable_n: int | None,
    elapsed: timedelta,
) -> SequentialGate:
    verdicts = [_VERDICT[r.outcome] for _, r in tests]
    verdict = worst(verdicts)
    # Show the test that decides the gate: a failing one, else an undecided one, else the first.
    shown = (
        next((t for t in tests if t[1].outcome is Outcome.FAIL), None)
        or next((t for t in tests if t[1].outcome is Outcome.INCONCLUSIVE), None)
        or tests[0]
    )
    label, result = shown
    needed = _samples_needed([r for _, r in tests])
    rate = n / elapsed.total_seconds() if elapsed.total_seconds() > 0 else 0.0
    seconds: float | None = None
    if needed == 0:
        seconds = 0.0
    elif needed is not None and rate > 0:
        seconds = needed / rate
    message = prefix + result.describe(limit=label)
    return SequentialGate(
        verdict,
        message,
        estimate=events / n if n > 0 else None,
        lower=result.lower,
        upper=result.upper,
        samples=int(n),
        stable_samples=stable_n,
        samples_needed=needed,
        seconds_to_verdict=seconds,
    )


def _samples_needed(results: list[SequentialResult]) -> int | None:
    """The gate waits for its slowest undecided test; unknown if any of them is unknown."""
    undecided = [r.samples_needed for r in results if r.outcome is Outcome.INCONCLUSIVE]
    if not undecided:
        return 0
    known = [n for n in undecided if n is not None]
    return max(known) if len(known) == len(undecided) else None


_VERDICT = {Outcome.PASS: Verdict.PASS, Outcome.FAIL: Verdict.FAIL, Outcome.INCONCLUSIVE: Verdict.INCONCLUSIVE}


def _evidence(m: Measurement, on_no_data: OnNoData, who: str) -> SequentialGate | None:
    if m.kind is MeasurementKind.ERROR:
        return SequentialGate(Verdict.ERROR, f"{who} query failed: {m.message}")
    if m.kind is MeasurementKind.NO_DATA:
        verdict = {OnNoData.HOLD: Verdict.INCONCLUSIVE, OnNoData.FAIL: Verdict.FAIL, OnNoData.PASS: Verdict.PASS}[
            on_no_data
        ]
        return SequentialGate(verdict, f"no data for {who} (onNoData: {on_no_data.value})")
    return None


def _trials(m: Measurement) -> float:
    return float(max(0, m.samples or 0))


def _events_within(m: Measurement, trials: float) -> float:
    """Events clamped into [0, trials]: increase() extrapolates each series on its own, so the
    event count can come out a little above the trials it belongs to."""
    value = m.value if m.value is not None and math.isfinite(m.value) else 0.0
    return min(max(value, 0.0), trials)


def _num(value: float) -> str:
    return f"{value:.4g}"


# --- the admission forecast ------------------------------------------------------------------

# What a gate's trials are, for the forecast message.
_TRIALS = {
    "error-rate": "req/s",
    "slow-requests": "req/s",
    "unknown-rate": "predictions/s",
    "mean-confidence": "predictions/s",
    "accuracy": "feedback/s",
    "shadow-agreement": "req/s",
    "shadow-segment-agreement": "req/s",
}
# The hypothetical candidate the forecast evaluates starts from this many trials, and the
# estimate scales up from there. A gate already decided at the seed reports the seed: an upper
# bound, reachable only with a value far from a loose threshold.
_FORECAST_SEED = 10


def compute_baseline_query(template: str) -> tuple[str, str]:
    """(query, samples) for stable's side of the admission forecast over {{window}}: the gate's
    own events and trials. A shadow gate has no comparisons before its candidate exists, so it
    counts stable's requests (the traffic that will be mirrored) instead."""
    if template in PAIRWISE_TEMPLATES:
        requests = SEQUENTIAL_TEMPLATES["error-rate"].samples
        return requests, requests
    t = SEQUENTIAL_TEMPLATES[template]
    return t.query, t.samples


@dataclass(frozen=True)
class Forecast:
    """The admission forecast: the warning text ("" when every step can make it or nothing is
    known) and, per gate name, the analysis step indices it warned about."""

    message: str
    warned: dict[str, tuple[int, ...]]


def compute_forecast(spec: RolloutSpec, baselines: dict[str, Measurement]) -> Forecast:
    """Per sequential analysis step and gate: the samples a verdict needs if the candidate
    behaves like stable does now (a shadow gate: agrees on every request, the best case), and
    the samples expected within the step's longest wait at stable's trial rate over
    spec.analysis.window times the candidate's share of requests in that step. A gate without
    a stable count (no traffic data yet) and a step that sends the candidate nothing are left
    out: no guessing."""
    analysis = spec.analysis
    if analysis is None or not analysis.is_sequential:
        return Forecast("", {})
    rates = compute_rates(analysis, sum(isinstance(s, Analysis) for s in spec.steps))
    window = analysis.window.total_seconds()
    parts: list[str] = []
    warned: dict[str, list[int]] = {}
    weight, mirror = 0, 0
    for index, step in enumerate(spec.steps):
        if isinstance(step, SetWeight):
            weight = step.weight
        elif isinstance(step, SetMirror):
            mirror = step.percent
        if not isinstance(step, Analysis):
            continue
        longest = (step.duration or analysis.max_duration).total_seconds()
        for metric in spec.metrics:
            baseline = baselines.get(metric.name)
            if baseline is None or metric.template is None or window <= 0:
                continue
            slow = _forecast_gate(metric, analysis, baseline, rates, weight, mirror, window, longest)
            if slow:
                parts.append(f"step {index + 1} ({describe_step(step)}): {slow}")
                warned.setdefault(metric.name, []).append(index)
    if not parts:
        return Forecast("", {})
    message = (
        "; ".join(parts) + "; expect InconclusiveAnalysis (raise the weight, widen the margin or lengthen the step)"
    )
    return Forecast(message, {k: tuple(v) for k, v in warned.items()})


def _forecast_gate(
    metric: MetricSpec,
    analysis: AnalysisSpec,
    baseline: Measurement,
    rates: GateRates,
    weight: int,
    mirror: int,
    window: float,
    longest: float,
) -> str:
    """What the gate needs when it cannot decide in time; empty when it can or nothing is known."""
    trials = _trials(baseline)
    if baseline.kind is not MeasurementKind.VALUE or trials <= 0:
        return ""
    assert metric.template is not None
    pairwise = metric.template in PAIRWISE_TEMPLATES
    # Mirrored copies come from the requests stable answers; the candidate sees its weight too.
    mirrored = mirror / 100 * (1 - weight / 100)
    share = mirrored if pairwise else weight / 100 + mirrored
    if share <= 0:
        return ""
    value = 1.0 if pairwise else _events_within(baseline, trials) / trials
    needed = _samples_to_decide(metric, analysis, value, share, rates)
    if needed is None:
        return ""  # stable sits on the threshold: no estimate to give
    rate = trials / window
    expected = rate * share * longest
    if expected >= needed:
        return ""
    return (
        f"{metric.name} needs ~{needed} samples, about {expected:.0f} expected at "
        f"{_rate(rate)} {_TRIALS.get(metric.template, '/s')} × {_share(weight, mirror, share, pairwise)}"
    )


def _samples_to_decide(
    metric: MetricSpec, analysis: AnalysisSpec, value: float, share: float, rates: GateRates
) -> int | None:
    """Candidate trials after which a candidate whose value stays at `value` is decided: the
    gate evaluated on a small seed, plus the samples it says are still needed. Stable's trials
    grow alongside at its share of the requests (the rest)."""
    seed = _FORECAST_SEED
    candidate = Measurement.of(value * seed, samples=seed)
    stable_trials = max(1, round(seed * max(0.0, 1 - share) / share))
    stable = Measurement.of(value * stable_trials, samples=stable_trials)
    gate = evaluate_sequential_gate(metric, analysis, candidate, stable, rates, timedelta(0))
    if gate.samples_needed is None:
        return None
    return seed + gate.samples_needed if gate.samples_needed > 0 else seed


def _rate(rate: float) -> str:
    return f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"


def _share(weight: int, mirror: int, share: float, pairwise: bool) -> str:
    if pairwise or weight == 0:
        return f"{share * 100:.3g}% mirror"
    if mirror == 0:
        return f"{weight}% weight"
    return f"{share * 100:.3g}% ({weight}% weight, {mirror}% mirror)"
