"""Per-slice gates (spec.analysis.metrics[].slices): the grouped queries such a gate runs, the
rule a user query must meet to be sliced, and the gate's verdict from one reading per slice,
with the false-alarm rate held across its k slices (docs/analysis.md, "Per-slice gates").

k is fixed before any data: the listed values, or slices.max. Threshold mode: a slice fails only
when its breach clears the sampling noise at the one-sided level falseRollbackRate / k
(Bonferroni). Sequential mode: falseRollbackRate is split k ways (sequential_gates.compute_rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta
from statistics import NormalDist

import promql_parser

from .analysis import Criteria, Evaluation, Measurement, MeasurementKind, Verdict, evaluate, worst
from .sequential import GateRates
from .sequential_gates import SequentialGate, evaluate_sequential_gate
from .spec import SLICE_LABELS, AnalysisSpec, MetricSpec, OnNoData, SliceSpec
from .status import SliceStatus
from .templates import FEEDBACK_SEL, TemplateError, parse_sample

# The labels each built-in template's series carry (the metric contract): requests carry only the
# request's slice, predictions and confidence also the derived bands, feedback only the slice.
SLICE_SUPPORT: dict[str, tuple[str, ...]] = {
    "error-rate": ("slice",),
    "request-rate": ("slice",),
    "unknown-rate": SLICE_LABELS,
    "mean-confidence": SLICE_LABELS,
    "accuracy": ("slice",),
}
# A rollback or event message lists at most this many slices (the status has them all).
_SHOWN_SLICES = 3

_SEL = 'namespace="{{namespace}}",model="{{model}}",version="{{version}}"'


@dataclass(frozen=True)
class _Counts:
    """A template as events over trials: `share` (events / trials), `mean` (sum / count of values
    in [0, 1]) or `rate` (trials per second); {sel} is the selector inside the braces."""

    kind: str
    trials: str
    events: str = ""


_COUNTS = {
    "error-rate": _Counts(
        "share", "speech_requests_total{{{sel}}}", 'speech_requests_total{{{sel},outcome="server_error"}}'
    ),
    "request-rate": _Counts("rate", "speech_requests_total{{{sel}}}"),
    "unknown-rate": _Counts(
        "share", "speech_predictions_total{{{sel}}}", 'speech_predictions_total{{{sel},label=~"_unknown_|_silence_"}}'
    ),
    "mean-confidence": _Counts("mean", "speech_confidence_count{{{sel}}}", "speech_confidence_sum{{{sel}}}"),
    "accuracy": _Counts("share", "router_feedback_total{{{sel}}}", 'router_feedback_total{{{sel},result="correct"}}'),
}
_BASE_SELECTOR = {"accuracy": FEEDBACK_SEL}
# A user query's samples per slice: requests carry only `slice`, predictions all three labels.
_USER_TRIALS = {"slice": "speech_requests_total", "level_band": "speech_predictions_total"}


def compute_sliced_queries(metric: MetricSpec, sequential: bool) -> tuple[str, str]:
    """(query, samples) of a per-slice gate, grouped by its label, before rendering. A listed set
    of values is selected in the query too, so Prometheus never returns more than k series.
    `or 0 * trials` (not `or vector(0)`, which has no label) gives a slice with trials but no
    events its zero."""
    assert metric.slices is not None
    s = metric.slices
    by = f"sum by ({s.label}) "
    only = f',{s.label}=~"{"|".join(s.values)}"' if s.values else ""
    window = "[{{window}}]"
    if metric.template is None:
        trials = _USER_TRIALS.get(s.label, "speech_predictions_total")
        assert metric.query is not None
        return metric.query, f"{by}(increase({trials}{{{_SEL}{only}}}{window}))"
    counts = _COUNTS[metric.template]
    sel = _BASE_SELECTOR.get(metric.template, _SEL) + only
    trials, events = counts.trials.format(sel=sel), counts.events.format(sel=sel)
    samples = f"{by}(increase({trials}{window}))"
    if sequential:
        if counts.kind == "share":
            return f"({by}(increase({events}{window})) or 0 * {samples})", samples
        return f"{by}(increase({events}{window}))", samples
    per_second = f"{by}(rate({trials}{window}))"
    if counts.kind == "rate":
        return per_second, samples
    if counts.kind == "share":
        return f"({by}(rate({events}{window})) or 0 * {per_second}) / {per_second}", samples
    return f"{by}(rate({events}{window})) / {per_second}", samples


def check_groups_by(query: str, label: str) -> None:
    """A user query may be sliced only if it groups by the label itself: its outermost
    aggregation (every one, on either side of an operator) is `... by (<label>, ...)`."""
    try:
        expr = parse_sample(query)
    except ValueError as err:
        raise TemplateError(f"is not valid PromQL: {err}") from None
    if not _is_grouped(expr, label):
        raise TemplateError(
            f"with slices the query must group by {label} at its top, e.g. "
            f"sum by ({label}) (rate(a[{{{{window}}}}])) / sum by ({label}) (rate(b[{{{{window}}}}]))"
        )


def _is_grouped(expr: object, label: str) -> bool:
    while isinstance(expr, promql_parser.ParenExpr):
        expr = expr.expr
    if isinstance(expr, promql_parser.AggregateExpr):
        m = expr.modifier
        return m is not None and m.type == promql_parser.AggModifierType.By and label in m.labels
    if isinstance(expr, promql_parser.BinaryExpr):
        sides = [expr.lhs, expr.rhs]
        numbers = [isinstance(_unparen(x), promql_parser.NumberLiteral) for x in sides]
        if all(numbers):
            return False
        return all(n or _is_grouped(x, label) for x, n in zip(sides, numbers, strict=True))
    return False


def _unparen(expr: object) -> object:
    while isinstance(expr, promql_parser.ParenExpr):
        expr = expr.expr
    return expr


def compute_noise_z(false_rollback_rate: float, k: int) -> float:
    """The one-sided normal quantile a breach must clear, at falseRollbackRate / k."""
    return NormalDist().inv_cdf(1 - false_rollback_rate / max(1, k))


@dataclass(frozen=True)
class SlicedVerdict:
    """A per-slice gate at one round: the gate's evaluation, each slice, the slice shown first."""

    evaluation: Evaluation
    slices: tuple[SliceStatus, ...]
    shown: SliceStatus | None  # the slice that decides the gate (None: no slice was judged)
    samples: int | None


def evaluate_sliced(
    metric: MetricSpec,
    analysis: AnalysisSpec,
    candidate: Measurement,
    stable: Measurement | None,
    *,
    who: str = "candidate",
) -> SlicedVerdict:
    """Threshold mode: each slice against the criteria; a breach fails the slice only if it
    clears the sampling noise at falseRollbackRate / k (user queries: no noise model, the raw
    threshold). The gate is the worst slice. `who` names the measured side in messages
    (monitoring measures stable alone)."""
    assert metric.slices is not None
    criteria = Criteria.for_metric(metric, analysis)
    whole = _whole_gate(candidate, stable, criteria, who)
    if whole is not None:
        return SlicedVerdict(whole, (), None, candidate.samples)
    z = compute_noise_z(analysis.false_rollback_rate, metric.slices.count)
    kind = _COUNTS[metric.template].kind if metric.template is not None else None
    stable_map = stable.slice_map if stable is not None else {}
    slices = tuple(
        _judge_slice(name, m, stable_map.get(name), criteria, kind, z, who)
        for name, m in _slice_readings(metric.slices, candidate).items()
    )
    return _gate(slices, criteria.describe(), metric.slices)


def _whole_gate(
    candidate: Measurement, stable: Measurement | None, criteria: Criteria, who: str = "candidate"
) -> Evaluation | None:
    """Errors and a gate with no data at all are judged as a whole (onNoData applies)."""
    if candidate.kind is not MeasurementKind.VALUE:
        return evaluate(candidate, criteria, stable, who=who)
    if criteria.relative_to is not None:
        if stable is None:
            return Evaluation(Verdict.ERROR, "stable was not measured for a relative threshold")
        if stable.kind is MeasurementKind.ERROR:
            return Evaluation(Verdict.ERROR, f"stable query failed: {stable.message}")
    return None


def _slice_readings(spec: SliceSpec, candidate: Measurement) -> dict[str, Measurement | None]:
    """The slices judged: the listed ones (None where the candidate has no data), or every
    slice the candidate has data for."""
    readings = candidate.slice_map
    if spec.values:
        return {name: readings.get(name) for name in spec.values}
    return dict(readings)


def _judge_slice(
    name: str,
    c: Measurement | None,
    s: Measurement | None,
    criteria: Criteria,
    kind: str | None,
    z: float,
    who: str = "candidate",
) -> SliceStatus:
    here = SliceStatus(name, Verdict.INCONCLUSIVE, samples=c.samples if c else None)
    if s is not None:
        here = replace(here, stable_value=s.value, stable_samples=s.samples)
    if c is None or c.value is None:
        return replace(here, message=f"no data for the {who} on this slice")
    here = replace(here, value=c.value)
    relative = criteria.relative_to is not None
    short = _short_of_samples(c, criteria.min_samples, who) or (
        _short_of_samples(s, criteria.min_samples, "stable") if relative else ""
    )
    if relative and (s is None or s.value is None):
        short = "no stable baseline on this slice"
    if short:
        return replace(here, message=short)
    breaches = _breaches(c, s if relative else None, criteria, kind)
    if not breaches:
        return replace(here, verdict=Verdict.PASS, message=f"{_num(c.value)} within {criteria.describe()}{_n(c)}")
    for text, excess, noise in breaches:
        if noise is None or excess > z * noise:
            return replace(here, verdict=Verdict.FAIL, message=text + _n(c))
    text, _, noise = breaches[0]
    assert noise is not None
    if math.isinf(noise):
        return replace(here, message=f"{text}{_n(c)} but without samples to judge it by")
    return replace(
        here,
        message=f"{text}{_n(c)} but within sampling noise (a breach must exceed {_num(z * noise)}, z={z:.3g})",
    )


def _short_of_samples(m: Measurement | None, min_samples: int, who: str) -> str:
    if m is None or min_samples <= 0:
        return ""
    if m.samples is None or m.samples < min_samples:
        got = "unknown" if m.samples is None else str(m.samples)
        return f"{who} has {got} samples < minSamples {min_samples}"
    return ""


def _breaches(
    c: Measurement, s: Measurement | None, criteria: Criteria, kind: str | None
) -> list[tuple[str, float, float | None]]:
    """(text, how far past the threshold, the noise of that distance) for each threshold crossed."""
    assert c.value is not None
    v, n = c.value, c.samples or 0
    out: list[tuple[str, float, float | None]] = []
    if criteria.min is not None and v < criteria.min:
        out.append((f"{_num(v)} < min {_num(criteria.min)}", criteria.min - v, _noise(kind, criteria.min, n)))
    if criteria.max is not None and v > criteria.max:
        out.append((f"{_num(v)} > max {_num(criteria.max)}", v - criteria.max, _noise(kind, criteria.max, n)))
    if s is None or s.value is None:
        return out
    sv, sn = s.value, s.samples or 0
    both = _noise_difference(kind, v, n, sv, sn)
    if criteria.max_increase is not None and v - sv > criteria.max_increase:
        limit = sv + criteria.max_increase
        out.append((f"{_num(v)} > stable+{_num(criteria.max_increase)} = {_num(limit)}", v - limit, both))
    if criteria.max_decrease is not None and sv - v > criteria.max_decrease:
        limit = sv - criteria.max_decrease
        out.append((f"{_num(v)} < stable-{_num(criteria.max_decrease)} = {_num(limit)}", limit - v, both))
    return out


def _noise(kind: str | None, at: float, n: int) -> float | None:
    """The standard error of a value at `at` from n samples: a share or a mean in [0, 1] (whose
    variance is at most p(1 - p)), or a Poisson rate. None: no noise model (a user query)."""
    if kind is None:
        return None
    if n <= 0:
        return math.inf  # no samples: no breach can clear the noise
    if kind == "rate":
        return abs(at) / math.sqrt(n)
    p = min(max(at, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n)


def _noise_difference(kind: str | None, v: float, n: int, sv: float, sn: int) -> float | None:
    a, b = _noise(kind, v, n), _noise(kind, sv, sn)
    return None if a is None or b is None else math.hypot(a, b)


def _gate(slices: tuple[SliceStatus, ...], describe: str, spec: SliceSpec) -> SlicedVerdict:
    verdict = worst(s.verdict for s in slices) if slices else Verdict.INCONCLUSIVE
    shown = next((s for s in slices if s.verdict is verdict), None)
    samples = sum(s.samples or 0 for s in slices)
    if verdict is Verdict.PASS:
        message = f"all {len(slices)} slices by {spec.label} within {describe}"
    else:
        message = describe_slices([s for s in slices if s.verdict is verdict])
    return SlicedVerdict(Evaluation(verdict, message), slices, shown, samples)


def describe_slices(slices: list[SliceStatus]) -> str:
    """e.g. "[young] 0.62 < stable-0.05 = 0.86 (n=212); [noisy] ..." (at most _SHOWN_SLICES)."""
    text = "; ".join(f"[{s.name}] {s.message}" for s in slices[:_SHOWN_SLICES])
    more = len(slices) - _SHOWN_SLICES
    return text + (f"; and {more} more slices" if more > 0 else "")


# --- sequential mode ------------------------------------------------------------------------


def evaluate_sliced_sequential(
    metric: MetricSpec,
    analysis: AnalysisSpec,
    candidate: Measurement,
    stable: Measurement | None,
    rates: GateRates,
    elapsed: timedelta,
) -> tuple[SequentialGate, tuple[SliceStatus, ...]]:
    """Sequential mode: each slice's counts through the gate's own test at the split rates; the
    gate is the worst slice, and waits for its slowest undecided one."""
    assert metric.slices is not None
    relative = metric.relative_to is not None
    if candidate.kind is not MeasurementKind.VALUE:  # an error, or no slice has data: onNoData
        return evaluate_sequential_gate(metric, analysis, candidate, stable, rates, elapsed), ()
    if relative and stable is None:
        return SequentialGate(Verdict.ERROR, "stable was not measured for a relative threshold"), ()
    if relative and stable is not None and stable.kind is MeasurementKind.ERROR:
        return SequentialGate(Verdict.ERROR, f"stable query failed: {stable.message}"), ()
    held = replace(analysis, on_no_data=OnNoData.HOLD)  # one slice without data waits
    stable_map = stable.slice_map if stable is not None else {}
    gates: list[tuple[str, SequentialGate, Measurement | None]] = []
    for name, c in _slice_readings(metric.slices, candidate).items():
        s = stable_map.get(name, Measurement.no_data()) if relative else None
        if c is None:
            gates.append((name, SequentialGate(Verdict.INCONCLUSIVE, "no data for the candidate on this slice"), s))
            continue
        gates.append((name, evaluate_sequential_gate(metric, held, c, s, rates, elapsed), s))
    slices = tuple(_sequential_slice(name, g, s) for name, g, s in gates)
    return _combine_sequential(gates, slices), slices


def _sequential_slice(name: str, g: SequentialGate, s: Measurement | None) -> SliceStatus:
    stable_value = None
    if s is not None and s.value is not None and s.samples:
        stable_value = min(max(s.value / s.samples, 0.0), 1.0)
    return SliceStatus(
        name,
        g.verdict,
        value=g.estimate,
        stable_value=stable_value,
        samples=g.samples,
        stable_samples=g.stable_samples,
        message=g.message,
        lower=g.lower,
        upper=g.upper,
    )


def _combine_sequential(
    gates: list[tuple[str, SequentialGate, Measurement | None]], slices: tuple[SliceStatus, ...]
) -> SequentialGate:
    if not gates:
        return SequentialGate(Verdict.INCONCLUSIVE, "no slice has data yet")
    verdict = worst(g.verdict for _, g, _ in gates)
    shown = next(g for _, g, _ in gates if g.verdict is verdict)
    if verdict is Verdict.PASS:
        message = f"all {len(gates)} slices decided within the threshold"
    else:
        message = describe_slices([s for s in slices if s.verdict is verdict])
    undecided = [g for _, g, _ in gates if g.verdict is Verdict.INCONCLUSIVE]
    needed = 0 if not undecided else None
    seconds: float | None = 0.0 if not undecided else None
    if undecided and all(g.samples_needed is not None for g in undecided):
        needed = max(g.samples_needed or 0 for g in undecided)
    if undecided and all(g.seconds_to_verdict is not None for g in undecided):
        seconds = max(g.seconds_to_verdict or 0.0 for g in undecided)
    return SequentialGate(
        verdict,
        message,
        estimate=shown.estimate,
        lower=shown.lower,
        upper=shown.upper,
        samples=sum(g.samples or 0 for _, g, _ in gates),
        stable_samples=_sum_known([g.stable_samples for _, g, _ in gates]),
        samples_needed=needed,
        seconds_to_verdict=seconds,
    )


def _sum_known(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _n(m: Measurement) -> str:
    return f" (n={m.samples})" if m.samples is not None else ""


def _num(value: float) -> str:
    return f"{value:.4g}"
