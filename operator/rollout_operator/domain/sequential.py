"""Anytime-valid verdicts: confidence sequences for rates and bounded means, one-sample,
two-sample (candidate - stable) and paired (shadow disagreement), judged against a threshold
at declared error rates.

Pure arithmetic (math only). The method and its references are in docs/analysis.md.

How the bounds are built (a beta-binomial mixture, Robbins 1970; Howard et al. 2021):
for n values x_i in [0, 1] with sum s, the Bernoulli likelihood ratio of "mean q" against
"mean p", prod (q/p)^x_i ((1-q)/(1-p))^(1-x_i), is convex in each x_i, so under mean p its
expectation is at most 1 (exactly 1 for 0/1 values): it is a nonnegative supermartingale.
Averaged over q ~ Beta(a, b) it stays one, and has the closed form
    M_n(p) = B(a + s, b + n - s) / B(a, b) / (p^s (1 - p)^(n - s)).
By Ville's inequality P(sup_n M_n(p) >= 1/alpha) <= alpha, so {p : M_n(p) < 1/alpha} holds the
true mean at every n at once with probability >= 1 - alpha: looking after every round, or
stopping as soon as it looks decisive, costs nothing. -log p^s (1-p)^(n-s) is convex in p with its
minimum at s/n, so the set is an interval around s/n, found here by bisection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

# Bisection steps for a bound (to 2^-12 of [0, 1]), then Newton steps to rounding precision.
_BISECTION_STEPS = 12
_MAX_BISECTION_STEPS = 200  # an end within 2^-12 of 0 or 1 bisects on until it is off the edge
_NEWTON_STEPS = 30
# samples_needed looks this far ahead at most (more samples than this is "not at this estimate").
MAX_SAMPLES_AHEAD = 10**9
# Prior means are kept inside this band so Beta(a, b) stays proper.
_PRIOR_MEAN_BAND = (1e-3, 1 - 1e-3)


class Side(str, Enum):
    """Which side of the threshold is healthy."""

    AT_MOST = "atMost"  # healthy when the value is <= threshold (max, maxIncrease)
    AT_LEAST = "atLeast"  # healthy when the value is >= threshold (min, maxDecrease)


class Outcome(str, Enum):
    """A gate's sequential verdict; the same words as analysis.Verdict."""

    PASS = "Pass"
    INCONCLUSIVE = "Inconclusive"
    FAIL = "Fail"


@dataclass(frozen=True)
class GateRates:
    """Error rates one gate runs at, after the split in compute_gate_rates()."""

    false_promotion: float  # P(Pass) when the truth is on the unhealthy side (or on the threshold)
    false_rollback: float  # P(Fail) when the truth is on the healthy side


@dataclass(frozen=True)
class SequentialResult:
    """One gate at one look: estimate, its interval, the evidence, and what a verdict still needs.

    `lower`/`upper` are the two one-sided bounds each at the rate that guards its verdict (the
    bound on the healthy side at false_promotion, the other at false_rollback).
    `samples_needed` is how many more samples (of the candidate; for a comparison both sides
    grow at today's ratio) a verdict needs if the estimate stays where it is: 0 when decided,
    None when the estimate sits on the threshold or it would take more than MAX_SAMPLES_AHEAD.
    """

    outcome: Outcome
    estimate: float
    lower: float
    upper: float
    samples: int
    samples_needed: int | None
    threshold: float
    side: Side

    def describe(self, limit: str | None = None) -> str:
        """e.g. "0.031 [0.022, 0.043] > max 0.02 (n=1200)"; `limit` replaces "max 0.02"."""
        interval = f"{_num(self.estimate)} [{_num(self.lower)}, {_num(self.upper)}]"
        if limit is None:
            limit = f"{'max' if self.side is Side.AT_MOST else 'min'} {_num(self.threshold)}"
        if self.outcome is Outcome.INCONCLUSIVE:
            more = "unknown" if self.samples_needed is None else f"~{self.samples_needed}"
            return f"{interval} spans {limit} (n={self.samples}, {more} more samples to decide)"
        relation = _RELATION[(self.side, self.outcome)]
        return f"{interval} {relation} {limit} (n={self.samples})"


_RELATION = {
    (Side.AT_MOST, Outcome.PASS): "<",
    (Side.AT_MOST, Outcome.FAIL): ">",
    (Side.AT_LEAST, Outcome.PASS): ">",
    (Side.AT_LEAST, Outcome.FAIL): "<",
}


def compute_gate_rates(
    false_promotion_rate: float, false_rollback_rate: float, gates: int, rounds: int = 1
) -> GateRates:
    """Per-gate rates that keep the declared overall rates for `gates` gates in each of `rounds`
    sequential analysis steps.

    Promotion needs every gate to pass in every step, so a candidate that is unhealthy on some
    gate is promoted only if that gate's own bound misses at least once: one miss, at most
    false_promotion_rate, with no split. A rollback needs just one gate in one step to fail, so
    false_rollback_rate is shared equally (Bonferroni) across gates x steps."""
    _check_rate("falsePromotionRate", false_promotion_rate)
    _check_rate("falseRollbackRate", false_rollback_rate)
    if gates < 1 or rounds < 1:
        raise ValueError("gates and rounds must be at least 1")
    return GateRates(false_promotion_rate, false_rollback_rate / (gates * rounds))


def compute_mean_bounds(total: float, count: float, alpha: float, prior_mean: float = 0.5) -> tuple[float, float]:
    """Two-sided confidence sequence at level `alpha` for the mean of values in [0, 1] (or a
    Bernoulli rate: total = events, count = trials) after `count` values summing to `total`.
    No values gives [0, 1]."""
    _check_sum(total, count)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if count == 0:
        return 0.0, 1.0
    mixture = _Mixture.of(total, count, prior_mean)
    return mixture.lower(alpha), mixture.upper(alpha)


def evaluate_rate(
    events: float, trials: float, threshold: float, side: Side, rates: GateRates, prior_mean: float | None = None
) -> SequentialResult:
    """A Bernoulli rate (errors, unknown labels, slow requests, shadow disagreements) from raw
    counts, or a mean of values in [0, 1] from its sum and count, against an absolute threshold.
    The prior is centred on the threshold unless given (it only changes how fast, never whether
    the error rates hold)."""
    _check_threshold(threshold, 0.0, 1.0)
    arm = _Arm(events, trials, threshold if prior_mean is None else prior_mean)
    return _evaluate(_OneSample(arm), threshold, side, rates)


evaluate_mean = evaluate_rate  # same bound: values in [0, 1] are sub-Bernoulli (module docstring)


def evaluate_paired(disagreements: float, pairs: float, max_share: float, rates: GateRates) -> SequentialResult:
    """Shadow comparison on the same requests: each pair either disagrees or not, one Bernoulli
    stream, so no baseline noise enters (far fewer samples than two independent rates)."""
    return evaluate_rate(disagreements, pairs, max_share, Side.AT_MOST, rates)


def evaluate_difference(
    candidate_events: float,
    candidate_trials: float,
    stable_events: float,
    stable_trials: float,
    threshold: float,
    side: Side,
    rates: GateRates,
) -> SequentialResult:
    """candidate - stable for two independent rates/means in [0, 1] against `threshold` (a
    non-inferiority margin: +maxIncrease with AT_MOST, -maxDecrease with AT_LEAST). Each side
    gets its own confidence sequence at half the rate; the difference's bound is the worst
    combination of the two, so it holds whenever both do."""
    _check_threshold(threshold, -1.0, 1.0)
    pair = _TwoSample(_Arm(candidate_events, candidate_trials, 0.5), _Arm(stable_events, stable_trials, 0.5))
    return _evaluate(pair, threshold, side, rates)


# --- the evaluation common to every shape -------------------------------------------------


def _evaluate(shape: _Shape, threshold: float, side: Side, rates: GateRates) -> SequentialResult:
    lower, upper = _bounds(shape, side, rates)
    outcome = _outcome(lower, upper, threshold, side)
    needed = 0 if outcome is not Outcome.INCONCLUSIVE else _samples_needed(shape, threshold, side, rates)
    return SequentialResult(outcome, shape.estimate(), lower, upper, int(shape.samples()), needed, threshold, side)


def _bounds(shape: _Shape, side: Side, rates: GateRates) -> tuple[float, float]:
    """(lower, upper): the healthy-side bound at the false-promotion rate, the other at the
    false-rollback rate."""
    if side is Side.AT_MOST:
        return shape.lower(rates.false_rollback), shape.upper(rates.false_promotion)
    return shape.lower(rates.false_promotion), shape.upper(rates.false_rollback)


def _outcome(lower: float, upper: float, threshold: float, side: Side) -> Outcome:
    # Strict inequalities: a truth exactly on the threshold counts as unhealthy for promotion.
    if side is Side.AT_MOST:
        return Outcome.PASS if upper < threshold else Outcome.FAIL if lower > threshold else Outcome.INCONCLUSIVE
    return Outcome.PASS if lower > threshold else Outcome.FAIL if upper < threshold else Outcome.INCONCLUSIVE


def _samples_needed(shape: _Shape, threshold: float, side: Side, rates: GateRates) -> int | None:
    """Extra samples after which the same estimate on more evidence decides, to within 10%.

    The bound's distance from the estimate shrinks about like 1/sqrt(n), so the first guess
    is k = (distance now / distance needed)^2; steps of 10% from there find where it decides."""
    estimate, samples = shape.estimate(), shape.samples()
    if samples <= 0 or estimate == threshold:
        return None
    # Only the bound between the estimate and the threshold can cross it.
    heads_up = estimate < threshold
    healthy = heads_up == (side is Side.AT_MOST)
    alpha = rates.false_promotion if healthy else rates.false_rollback
    bound = shape.upper(alpha) if heads_up else shape.lower(alpha)
    k = max(1.0, ((bound - estimate) / (threshold - estimate)) ** 2)

    def decides(factor: float) -> bool:
        return shape.scaled(factor).is_beyond(threshold, alpha, below=heads_up)

    if decides(k):
        while k > 1.0 and decides(max(1.0, k / 1.1)):
            k = max(1.0, k / 1.1)
    else:
        while not decides(k):
            k *= 1.1
            if samples * k > MAX_SAMPLES_AHEAD:
                return None
    return max(1, math.ceil(samples * (k - 1.0)))


# --- shapes: how the estimate and bounds are built from one or two arms -------------------


@dataclass(frozen=True)
class _Arm:
    total: float
    count: float
    prior_mean: float

    def __post_init__(self) -> None:
        _check_sum(self.total, self.count)

    def mixture(self) -> _Mixture:
        return _Mixture.of(self.total, self.count, self.prior_mean)

    def scaled(self, k: float) -> _Arm:
        return _Arm(self.total * k, self.count * k, self.prior_mean)

    def estimate(self) -> float:
        return self.total / self.count if self.count > 0 else math.nan


class _Shape(Protocol):
    """An estimate with its bounds: one arm, or candidate - stable."""

    def estimate(self) -> float: ...
    def samples(self) -> float: ...
    def lower(self, alpha: float) -> float: ...
    def upper(self, alpha: float) -> float: ...
    def scaled(self, k: float) -> _Shape: ...
    def is_beyond(self, threshold: float, alpha: float, below: bool) -> bool: ...


@dataclass(frozen=True)
class _OneSample:
    arm: _Arm

    def estimate(self) -> float:
        return self.arm.estimate()

    def samples(self) -> float:
        return self.arm.count

    def lower(self, alpha: float) -> float:
        return self.arm.mixture().lower(alpha) if self.arm.count > 0 else 0.0

    def upper(self, alpha: float) -> float:
        return self.arm.mixture().upper(alpha) if self.arm.count > 0 else 1.0

    def scaled(self, k: float) -> _OneSample:
        return _OneSample(self.arm.scaled(k))

    def is_beyond(self, threshold: float, alpha: float, below: bool) -> bool:
        # The sequence is an interval around the estimate: a bound is past the threshold exactly
        # when the estimate is on that side and the threshold itself is outside (one evaluation).
        if self.arm.count <= 0 or (self.estimate() < threshold) != below:
            return False
        return not self.arm.mixture().is_plausible(threshold, alpha)


@dataclass(frozen=True)
class _TwoSample:
    """candidate - stable; each side's sequence at alpha/2, so both hold with 1 - alpha."""

    candidate: _Arm
    stable: _Arm

    def estimate(self) -> float:
        return self.candidate.estimate() - self.stable.estimate()

    def samples(self) -> float:
        return self.candidate.count

    def lower(self, alpha: float) -> float:
        return _OneSample(self.candidate).lower(alpha / 2) - _OneSample(self.stable).upper(alpha / 2)

    def upper(self, alpha: float) -> float:
        return _OneSample(self.candidate).upper(alpha / 2) - _OneSample(self.stable).lower(alpha / 2)

    def scaled(self, k: float) -> _TwoSample:
        return _TwoSample(self.candidate.scaled(k), self.stable.scaled(k))

    def is_beyond(self, threshold: float, alpha: float, below: bool) -> bool:
        return self.upper(alpha) < threshold if below else self.lower(alpha) > threshold


# --- the beta-binomial mixture -------------------------------------------------------------


@dataclass(frozen=True)
class _Mixture:
    """log M_n(p) = log_weight - s log p - (n - s) log(1 - p), for one (s, n) and prior."""

    total: float
    count: float
    log_weight: float  # log B(a + s, b + n - s) - log B(a, b)

    @classmethod
    def of(cls, total: float, count: float, prior_mean: float) -> _Mixture:
        a, b = compute_prior(prior_mean)
        weight = _log_beta(a + total, b + count - total) - _log_beta(a, b)
        return cls(total, count, weight)

    def log_ratio(self, p: float) -> float:
        value = self.log_weight
        if self.total > 0:
            value -= self.total * math.log(p) if p > 0.0 else -math.inf
        if self.count - self.total > 0:
            value -= (self.count - self.total) * math.log1p(-p) if p < 1.0 else -math.inf
        return value

    def is_plausible(self, p: float, alpha: float) -> bool:
        """p is inside the sequence: the mixture has not reached 1/alpha against it."""
        return self.log_ratio(p) < -math.log(alpha)

    def slope(self, p: float) -> float:
        return -self.total / p + (self.count - self.total) / (1.0 - p)

    def lower(self, alpha: float) -> float:
        if self.total <= 0 or self.is_plausible(1e-300, alpha):
            return 0.0
        return self._edge(self.total / self.count, 0.0, alpha)

    def upper(self, alpha: float) -> float:
        if self.total >= self.count or self.is_plausible(1.0 - 1e-16, alpha):
            return 1.0
        return self._edge(self.total / self.count, 1.0, alpha)

    def _edge(self, inside: float, out: float, alpha: float) -> float:
        """The end of the interval between `inside` (the estimate) and `out`, rounded outwards.

        Bisection narrows the bracket, then Newton steps from the outside finish it: log M is
        convex, so its tangent lies below it and every step lands outside the root or on it
        (never inside: the bound is never narrower than the exact set)."""
        for done in range(_MAX_BISECTION_STEPS):
            if done >= _BISECTION_STEPS and 0.0 < out < 1.0:
                break  # Newton needs a starting point with a finite slope
            mid = (out + inside) / 2.0
            if self.is_plausible(mid, alpha):
                inside = mid
            else:
                out = mid
        if not 0.0 < out < 1.0:
            return out
        level = -math.log(alpha)
        for _ in range(_NEWTON_STEPS):
            step = (self.log_ratio(out) - level) / self.slope(out)
            nxt = out - step
            if not min(inside, out) < nxt < max(inside, out):
                break  # converged to rounding
            if self.is_plausible(nxt, alpha):
                # Rounding put the step on the root's inside: take a point a hair outwards.
                nudged = nxt + math.copysign(1e-12, out - inside)
                out = nudged if not self.is_plausible(nudged, alpha) else out
                break
            out = nxt
            if abs(step) < 1e-15:
                break
        return out


def compute_prior(prior_mean: float) -> tuple[float, float]:
    """Beta(a, b) with the given mean and the smaller parameter 1: the prior spreads its weight
    over alternatives on both sides of the mean; centring it on the threshold makes the
    sequence narrowest where a verdict is hardest (docs/analysis.md has the comparison)."""
    m = min(max(prior_mean, _PRIOR_MEAN_BAND[0]), _PRIOR_MEAN_BAND[1])
    return (1.0, (1.0 - m) / m) if m <= 0.5 else (m / (1.0 - m), 1.0)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _check_sum(total: float, count: float) -> None:
    if not (count >= 0 and 0 <= total <= count) or math.isnan(total) or math.isinf(count):
        raise ValueError(f"need 0 <= sum <= count for values in [0, 1], got sum {total} of {count}")


def _check_rate(name: str, value: float) -> None:
    if not 0.0 < value <= 0.5:
        raise ValueError(f"{name} must be in (0, 0.5], got {value}")


def _check_threshold(threshold: float, low: float, high: float) -> None:
    if not low <= threshold <= high:
        raise ValueError(f"threshold {threshold} is outside [{low}, {high}]")


def _num(value: float) -> str:
    return f"{value:.4g}"
