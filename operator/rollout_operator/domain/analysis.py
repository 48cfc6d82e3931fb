"""Analysis verdicts: one measurement against one metric's criteria gives pass/fail/inconclusive/error.

Pure and tiny on purpose (like Argo Rollouts' utils/evaluate): limits and counting live in decide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from .spec import AnalysisSpec, MetricSpec, OnNoData


class Verdict(str, Enum):
    """Outcome of one check; ordered from best to worst so worst() is a max()."""

    PASS = "Pass"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"
    FAIL = "Fail"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.ERROR: 2, Verdict.FAIL: 3}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict; no checks at all is a pass (nothing was asked)."""
    return max(verdicts, key=lambda v: v.rank, default=Verdict.PASS)


class MeasurementKind(str, Enum):
    VALUE = "value"
    NO_DATA = "noData"
    ERROR = "error"


@dataclass(frozen=True)
class Measurement:
    """What one metric query returned: a value with its sample count, no data, or an error.
    A per-slice query (QueryRequest.slice_label) returns `slices` instead: one Measurement per
    slice with data, kind VALUE and no value of its own (NO_DATA when no slice has any)."""

    kind: MeasurementKind
    value: float | None = None
    samples: int | None = None  # requests behind the value in the window; None = not known
    message: str = ""  # the error text for kind=error
    slices: tuple[tuple[str, Measurement], ...] = ()  # (slice, its measurement), sorted by slice

    @classmethod
    def of(cls, value: float, samples: int | None = None) -> Measurement:
        # Prometheus answers NaN for 0/0 (no traffic); that is no data, not a number.
        if value is None or math.isnan(value):
            return cls(MeasurementKind.NO_DATA, samples=samples)
        return cls(MeasurementKind.VALUE, value=float(value), samples=samples)

    @classmethod
    def no_data(cls, samples: int | None = None) -> Measurement:
        return cls(MeasurementKind.NO_DATA, samples=samples)

    @classmethod
    def error(cls, message: str) -> Measurement:
        return cls(MeasurementKind.ERROR, message=message)

    @classmethod
    def by_slice(cls, slices: Mapping[str, Measurement]) -> Measurement:
        """A per-slice answer; no slice at all is no data."""
        if not slices:
            return cls(MeasurementKind.NO_DATA)
        return cls(MeasurementKind.VALUE, slices=tuple(sorted(slices.items())))

    @property
    def slice_map(self) -> dict[str, Measurement]:
        return dict(self.slices)


@dataclass(frozen=True)
class Criteria:
    """One metric's thresholds with the analysis-level defaults filled in."""

    min: float | None = None
    max: float | None = None
    relative_to: str | None = None
    max_increase: float | None = None
    max_decrease: float | None = None
    min_samples: int = 0
    on_no_data: OnNoData = OnNoData.HOLD

    @classmethod
    def for_metric(cls, metric: MetricSpec, analysis: AnalysisSpec) -> Criteria:
        min_samples = metric.min_samples if metric.min_samples is not None else analysis.min_samples
        return cls(
            metric.min,
            metric.max,
            metric.relative_to,
            metric.max_increase,
            metric.max_decrease,
            min_samples,
            analysis.on_no_data,
        )

    def describe(self) -> str:
        """The threshold as people read it, e.g. "<= 0.5" or "<= stable+0.05"."""
        parts = []
        if self.min is not None:
            parts.append(f">= {_num(self.min)}")
        if self.max is not None:
            parts.append(f"<= {_num(self.max)}")
        if self.max_increase is not None:
            parts.append(f"<= stable+{_num(self.max_increase)}")
        if self.max_decrease is not None:
            parts.append(f">= stable-{_num(self.max_decrease)}")
        return ", ".join(parts) or "any"


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict
    message: str  # with the numbers, e.g. "0.84 > max 0.5 (n=412)"


def evaluate(
    measurement: Measurement, criteria: Criteria, stable: Measurement | None = None, *, who: str = "candidate"
) -> Evaluation:
    """Judge one measurement. Errors are errors, no data follows onNoData, fewer samples
    than minSamples is inconclusive (never a pass), then absolute and relative thresholds.
    `who` names the measured side in messages (monitoring measures stable alone)."""
    early = _evaluate_evidence(measurement, criteria, who)
    if early is not None:
        return early
    assert measurement.value is not None
    value = measurement.value
    if criteria.min is not None and value < criteria.min:
        return _fail(f"{_num(value)} < min {_num(criteria.min)}", measurement)
    if criteria.max is not None and value > criteria.max:
        return _fail(f"{_num(value)} > max {_num(criteria.max)}", measurement)
    if criteria.relative_to is not None:
        return _evaluate_relative(measurement, criteria, stable)
    return Evaluation(Verdict.PASS, f"{_num(value)} within {criteria.describe()}{_n(measurement)}")


def _evaluate_evidence(m: Measurement, criteria: Criteria, who: str) -> Evaluation | None:
    if m.kind is MeasurementKind.ERROR:
        return Evaluation(Verdict.ERROR, f"{who} query failed: {m.message}")
    if m.kind is MeasurementKind.NO_DATA:
        verdict = {OnNoData.HOLD: Verdict.INCONCLUSIVE, OnNoData.FAIL: Verdict.FAIL, OnNoData.PASS: Verdict.PASS}[
            criteria.on_no_data
        ]
        return Evaluation(verdict, f"no data for {who} (onNoData: {criteria.on_no_data.value})")
    samples = m.samples
    if criteria.min_samples > 0 and (samples is None or samples < criteria.min_samples):
        got = "unknown" if samples is None else str(samples)
        return Evaluation(Verdict.INCONCLUSIVE, f"{who} has {got} samples < minSamples {criteria.min_samples}")
    return None


def _evaluate_relative(m: Measurement, criteria: Criteria, stable: Measurement | None) -> Evaluation:
    if stable is None:
        return Evaluation(Verdict.ERROR, "stable was not measured for a relative threshold")
    early = _evaluate_evidence(stable, criteria, "stable")
    if early is not None:
        # No baseline is no evidence: a missing stable value can never make a pass.
        if early.verdict is Verdict.PASS:
            return Evaluation(Verdict.INCONCLUSIVE, early.message + "; no baseline to compare")
        return early
    assert m.value is not None and stable.value is not None
    delta = m.value - stable.value
    text = f"{_num(m.value)} vs stable {_num(stable.value)} (delta {delta:+.4g})"
    if criteria.max_increase is not None and delta > criteria.max_increase:
        return _fail(f"{text} > maxIncrease {_num(criteria.max_increase)}", m)
    if criteria.max_decrease is not None and -delta > criteria.max_decrease:
        return _fail(f"{text} > maxDecrease {_num(criteria.max_decrease)}", m)
    return Evaluation(Verdict.PASS, f"{text} within {criteria.describe()}{_n(m)}")


def _fail(text: str, m: Measurement) -> Evaluation:
    return Evaluation(Verdict.FAIL, text + _n(m))


def _n(m: Measurement) -> str:
    return f" (n={m.samples})" if m.samples is not None else ""


def _num(value: float) -> str:
    return f"{value:.4g}"
