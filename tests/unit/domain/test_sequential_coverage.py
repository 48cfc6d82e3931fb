"""Brute-force Monte Carlo: looking after every round does not inflate the error of the
sequential bounds (time-uniform), while the same looks at a point estimate do.

Seeded and small (a few hundred streams of 30 looks each) so the unit tier stays fast; the
simulation benchmark (benchmarks/bench_sequential.py) runs the large version through decide().
"""

import numpy as np
import pytest

from rollout_operator.domain.sequential import (
    GateRates,
    Outcome,
    Side,
    compute_mean_bounds,
    evaluate_difference,
    evaluate_mean,
)

pytestmark = pytest.mark.unit

STREAMS = 300
LOOKS = 30
ALPHA = 0.1


def _first_look_where(decided) -> int | None:
    for look, value in enumerate(decided):
        if value:
            return look
    return None


def test_bernoulli_sequence_covers_the_truth_at_every_look_at_once():
    rng = np.random.default_rng(14)
    p, per_look = 0.05, 20
    misses = 0
    for _ in range(STREAMS):
        events = np.cumsum(rng.binomial(per_look, p, size=LOOKS))
        trials = per_look * np.arange(1, LOOKS + 1)
        missed = False
        for s, n in zip(events, trials, strict=True):
            lower, upper = compute_mean_bounds(float(s), float(n), ALPHA, prior_mean=p)
            if not lower <= p <= upper:
                missed = True
                break
        misses += missed
    assert misses / STREAMS <= ALPHA


def test_false_pass_and_false_fail_stay_within_their_rates_at_the_threshold():
    # The truth on the threshold is the hardest case for both errors: a Pass is a false
    # promotion, a Fail a false rollback. The naive check "estimate <= max" at every look
    # passes most such streams at some look: the peeking problem.
    rng = np.random.default_rng(1970)
    threshold, per_look = 0.05, 20
    rates = GateRates(false_promotion=ALPHA, false_rollback=ALPHA)
    passes = fails = naive_passes = 0
    for _ in range(STREAMS):
        events = np.cumsum(rng.binomial(per_look, threshold, size=LOOKS))
        trials = per_look * np.arange(1, LOOKS + 1)
        outcomes = []
        for s, n in zip(events, trials, strict=True):
            lower, upper = compute_mean_bounds(float(s), float(n), ALPHA, prior_mean=threshold)
            outcomes.append(
                Outcome.PASS if upper < threshold else Outcome.FAIL if lower > threshold else Outcome.INCONCLUSIVE
            )
        first = _first_look_where(o is not Outcome.INCONCLUSIVE for o in outcomes)
        passes += first is not None and outcomes[first] is Outcome.PASS
        fails += first is not None and outcomes[first] is Outcome.FAIL
        naive_passes += bool(np.any(events / trials < threshold))
    assert passes / STREAMS <= rates.false_promotion
    assert fails / STREAMS <= rates.false_rollback
    assert naive_passes / STREAMS > 0.5


def test_bounded_mean_false_pass_at_the_threshold():
    # Confidence in [0, 1] with mean exactly on `min`; the sub-Bernoulli bound is valid for it.
    rng = np.random.default_rng(2023)
    a, b, per_look = 8.0, 2.0, 10
    threshold = a / (a + b)
    rates = GateRates(false_promotion=ALPHA, false_rollback=ALPHA)
    passes = 0
    for _ in range(STREAMS):
        totals = np.cumsum(rng.beta(a, b, size=(LOOKS, per_look)).sum(axis=1))
        counts = per_look * np.arange(1, LOOKS + 1)
        for total, count in zip(totals, counts, strict=True):
            result = evaluate_mean(float(total), float(count), threshold, Side.AT_LEAST, rates)
            if result.outcome is not Outcome.INCONCLUSIVE:
                passes += result.outcome is Outcome.PASS
                break
    assert passes / STREAMS <= ALPHA


def test_difference_false_pass_when_worse_by_exactly_the_margin():
    # Canary at 10%: the candidate sees a ninth of stable's requests each look.
    rng = np.random.default_rng(2021)
    stable_p, margin = 0.05, 0.02
    rates = GateRates(false_promotion=ALPHA, false_rollback=ALPHA)
    passes = 0
    for _ in range(STREAMS // 3):
        cand = np.cumsum(rng.binomial(40, stable_p + margin, size=LOOKS))
        stab = np.cumsum(rng.binomial(360, stable_p, size=LOOKS))
        for look, (c, s) in enumerate(zip(cand, stab, strict=True), start=1):
            result = evaluate_difference(float(c), 40.0 * look, float(s), 360.0 * look, margin, Side.AT_MOST, rates)
            if result.outcome is not Outcome.INCONCLUSIVE:
                passes += result.outcome is Outcome.PASS
                break
    assert passes / (STREAMS // 3) <= ALPHA


def test_a_clearly_better_candidate_is_decided_within_the_looks():
    # Power, not validity: the bounds are not so wide that nothing ever passes.
    rng = np.random.default_rng(7)
    passed = 0
    for _ in range(50):
        events = np.cumsum(rng.binomial(50, 0.01, size=LOOKS))
        for look, s in enumerate(events, start=1):
            lower, upper = compute_mean_bounds(float(s), 50.0 * look, ALPHA, prior_mean=0.05)
            if upper < 0.05:
                passed += 1
                break
    assert passed >= 45
