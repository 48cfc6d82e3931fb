"""Sequential bounds pinned to closed forms, their verdicts, the samples-needed estimate and the
per-gate rate split (domain/sequential.py)."""

import math

import pytest

from rollout_operator.domain.sequential import (
    GateRates,
    Outcome,
    Side,
    compute_gate_rates,
    compute_mean_bounds,
    compute_prior,
    evaluate_difference,
    evaluate_mean,
    evaluate_paired,
    evaluate_rate,
)

pytestmark = pytest.mark.unit

RATES = GateRates(false_promotion=0.05, false_rollback=0.05)


def _uniform_ratio(successes: int, trials: int, p: float) -> float:
    """M_n(p) under a Beta(1, 1) prior, written independently of the module with exact integers:
    B(1 + s, 1 + n - s) = s! (n - s)! / (n + 1)!  =  1 / ((n + 1) C(n, s))."""
    return 1.0 / ((trials + 1) * math.comb(trials, successes) * p**successes * (1 - p) ** (trials - successes))


@pytest.mark.parametrize("trials, alpha", [(10, 0.05), (100, 0.05), (1000, 0.01), (50, 0.2)])
def test_no_events_upper_bound_is_the_closed_form(trials, alpha):
    # s = 0, uniform prior: M_n(p) = 1 / ((n + 1)(1 - p)^n), so the upper end is where
    # (1 - p)^n = alpha / (n + 1).
    lower, upper = compute_mean_bounds(0, trials, alpha, prior_mean=0.5)
    assert lower == 0.0
    assert upper == pytest.approx(1 - (alpha / (trials + 1)) ** (1 / trials), rel=1e-9)


@pytest.mark.parametrize("trials", [5, 200])
def test_all_events_lower_bound_is_the_closed_form(trials):
    lower, upper = compute_mean_bounds(trials, trials, 0.05, prior_mean=0.5)
    assert upper == 1.0
    assert lower == pytest.approx((0.05 / (trials + 1)) ** (1 / trials), rel=1e-9)


@pytest.mark.parametrize("prior_mean", [0.02, 0.1])
def test_no_events_with_a_prior_centred_low(prior_mean):
    # Beta(1, beta) with beta = (1 - m)/m: B(1, beta + n)/B(1, beta) = beta/(beta + n).
    a, beta = compute_prior(prior_mean)
    assert a == 1.0 and beta == pytest.approx((1 - prior_mean) / prior_mean)
    n, alpha = 300, 0.05
    _, upper = compute_mean_bounds(0, n, alpha, prior_mean=prior_mean)
    assert upper == pytest.approx(1 - (alpha * beta / (beta + n)) ** (1 / n), rel=1e-9)


@pytest.mark.parametrize(
    "successes, trials, alpha", [(3, 40, 0.05), (20, 1000, 0.05), (250, 500, 0.1), (97, 100, 0.01)]
)
def test_bounds_are_where_the_mixture_reaches_one_over_alpha(successes, trials, alpha):
    lower, upper = compute_mean_bounds(successes, trials, alpha, prior_mean=0.5)
    assert 0 < lower < successes / trials < upper < 1
    for bound in (lower, upper):
        assert _uniform_ratio(successes, trials, bound) == pytest.approx(1 / alpha, rel=1e-6)
    # Just inside the interval the mixture is below 1/alpha; just outside it is above.
    width = upper - lower
    assert _uniform_ratio(successes, trials, lower + width * 1e-3) < 1 / alpha
    assert _uniform_ratio(successes, trials, upper + width * 1e-3) > 1 / alpha


def test_pinned_values_for_a_typical_error_rate():
    # 20 errors in 1000 requests, prior centred on 0.02: pinned so a change to the method shows.
    lower, upper = compute_mean_bounds(20, 1000, 0.05, prior_mean=0.02)
    assert (round(lower, 4), round(upper, 4)) == (0.0094, 0.0365)


def test_a_smaller_alpha_gives_a_wider_interval():
    intervals = [compute_mean_bounds(30, 600, alpha) for alpha in (0.2, 0.05, 0.01, 0.001)]
    for (lo1, hi1), (lo2, hi2) in zip(intervals, intervals[1:], strict=False):
        assert lo2 < lo1 and hi2 > hi1


def test_more_evidence_at_the_same_estimate_narrows_the_interval():
    widths = [(lambda b: b[1] - b[0])(compute_mean_bounds(0.1 * n, n, 0.05)) for n in (20, 100, 1000, 10_000, 100_000)]
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < 0.01


def test_fractional_sums_work_for_bounded_means():
    lower, upper = compute_mean_bounds(871.3, 1000, 0.05)
    assert lower < 0.8713 < upper and upper - lower < 0.1


def test_no_samples_is_the_whole_unit_interval():
    assert compute_mean_bounds(0, 0, 0.05) == (0.0, 1.0)
    result = evaluate_rate(0, 0, 0.02, Side.AT_MOST, RATES)
    assert result.outcome is Outcome.INCONCLUSIVE and result.samples_needed is None


@pytest.mark.parametrize("total, count", [(-1, 10), (11, 10), (1, -1), (math.nan, 10)])
def test_sums_outside_the_unit_range_are_rejected(total, count):
    with pytest.raises(ValueError, match="sum"):
        compute_mean_bounds(total, count, 0.05)


@pytest.mark.parametrize(
    "events, trials, outcome, text",
    [
        (5, 1000, Outcome.PASS, "0.005 [0.0008839, 0.015] < max 0.02 (n=1000)"),
        (40, 1000, Outcome.FAIL, "0.04 [0.02308, 0.0633] > max 0.02 (n=1000)"),
        (25, 1000, Outcome.INCONCLUSIVE, "spans max 0.02 (n=1000, ~"),
        (0, 30, Outcome.INCONCLUSIVE, "spans max 0.02 (n=30"),  # no errors yet, but too few requests
    ],
)
def test_rate_verdicts_against_a_max(events, trials, outcome, text):
    result = evaluate_rate(events, trials, 0.02, Side.AT_MOST, RATES)
    assert result.outcome is outcome
    assert text in result.describe()


def test_mean_verdicts_against_a_min():
    good = evaluate_mean(900, 1000, 0.8, Side.AT_LEAST, RATES)
    bad = evaluate_mean(700, 1000, 0.8, Side.AT_LEAST, RATES)
    assert good.outcome is Outcome.PASS and good.lower > 0.8
    assert bad.outcome is Outcome.FAIL and bad.upper < 0.8
    assert "> min 0.8" in good.describe() and "< min 0.8" in bad.describe()


def test_each_side_uses_its_own_rate():
    # The healthy-side bound guards promotion; making promotion stricter widens only that side.
    loose = evaluate_rate(20, 1000, 0.05, Side.AT_MOST, GateRates(0.2, 0.05))
    strict = evaluate_rate(20, 1000, 0.05, Side.AT_MOST, GateRates(0.01, 0.05))
    assert strict.upper > loose.upper and strict.lower == loose.lower
    low = evaluate_mean(800, 1000, 0.5, Side.AT_LEAST, GateRates(0.2, 0.05))
    high = evaluate_mean(800, 1000, 0.5, Side.AT_LEAST, GateRates(0.01, 0.05))
    assert high.lower < low.lower and high.upper == low.upper


def test_difference_bound_is_the_worst_combination_of_both_sides():
    result = evaluate_difference(30, 1000, 200, 10_000, 0.01, Side.AT_MOST, RATES)
    c_lo, c_hi = compute_mean_bounds(30, 1000, 0.025)
    s_lo, s_hi = compute_mean_bounds(200, 10_000, 0.025)
    assert result.upper == pytest.approx(c_hi - s_lo)
    assert result.lower == pytest.approx(c_lo - s_hi)
    assert result.estimate == pytest.approx(0.03 - 0.02)
    assert result.samples == 1000


def test_difference_verdicts_for_a_non_inferiority_margin():
    same = evaluate_difference(200, 20_000, 2000, 200_000, 0.01, Side.AT_MOST, RATES)
    worse = evaluate_difference(800, 20_000, 2000, 200_000, 0.01, Side.AT_MOST, RATES)
    assert same.outcome is Outcome.PASS and worse.outcome is Outcome.FAIL
    # maxDecrease 0.05 on a mean: candidate - stable >= -0.05
    lower_mean = evaluate_difference(8000, 10_000, 9000, 10_000, -0.05, Side.AT_LEAST, RATES)
    assert lower_mean.outcome is Outcome.FAIL and "< min -0.05" in lower_mean.describe()


def test_paired_disagreement_needs_far_fewer_samples_than_two_rates():
    # 1% disagreement on the same requests, against comparing two independent 10% error rates
    # that differ by the same 1%: the paired stream decides at a fraction of the requests.
    paired = evaluate_paired(10, 1000, 0.05, RATES)
    assert paired.outcome is Outcome.PASS
    unpaired = evaluate_difference(100, 1000, 100, 1000, 0.04, Side.AT_MOST, RATES)
    assert unpaired.outcome is Outcome.INCONCLUSIVE
    assert unpaired.samples_needed is not None and unpaired.samples_needed > 1000


@pytest.mark.parametrize(
    "events, trials, threshold, side",
    [
        (25, 1000, 0.02, Side.AT_MOST),
        (15, 1000, 0.02, Side.AT_MOST),
        (830, 1000, 0.8, Side.AT_LEAST),
        (2, 50, 0.02, Side.AT_MOST),
    ],
)
def test_samples_needed_is_where_the_same_estimate_decides(events, trials, threshold, side):
    result = evaluate_rate(events, trials, threshold, side, RATES)
    assert result.outcome is Outcome.INCONCLUSIVE
    needed = result.samples_needed
    assert needed is not None and needed > 0
    k_enough = (trials + needed) / trials
    k_short = (trials + 0.85 * needed) / trials  # found to within 10%
    enough = evaluate_rate(events * k_enough, trials * k_enough, threshold, side, RATES)
    short = evaluate_rate(events * k_short, trials * k_short, threshold, side, RATES)
    assert enough.outcome is not Outcome.INCONCLUSIVE
    assert short.outcome is Outcome.INCONCLUSIVE
    # Which verdict it heads for follows the estimate's side of the threshold.
    healthy = (events / trials < threshold) == (side is Side.AT_MOST)
    assert enough.outcome is (Outcome.PASS if healthy else Outcome.FAIL)


def test_samples_needed_for_a_difference_grows_both_sides():
    result = evaluate_difference(25, 1000, 200, 10_000, 0.01, Side.AT_MOST, RATES)
    assert result.outcome is Outcome.INCONCLUSIVE and result.samples_needed
    k = (1000 + result.samples_needed) / 1000
    later = evaluate_difference(25 * k, 1000 * k, 200 * k, 10_000 * k, 0.01, Side.AT_MOST, RATES)
    assert later.outcome is Outcome.PASS  # 0.025 - 0.02 is inside the 0.01 margin


def test_an_estimate_on_the_threshold_never_decides():
    assert evaluate_rate(20, 1000, 0.02, Side.AT_MOST, RATES).samples_needed is None


def test_decided_gates_need_no_more_samples():
    assert evaluate_rate(5, 1000, 0.02, Side.AT_MOST, RATES).samples_needed == 0


def test_gate_rates_split_rollbacks_across_gates_and_steps():
    rates = compute_gate_rates(0.05, 0.1, gates=4, rounds=2)
    assert rates.false_promotion == 0.05
    assert rates.false_rollback == pytest.approx(0.1 / 8)


@pytest.mark.parametrize(
    "fpr, frr, name",
    [
        (0.0, 0.1, "falsePromotionRate"),
        (0.6, 0.1, "falsePromotionRate"),
        (0.05, -0.1, "falseRollbackRate"),
        (0.05, 0.51, "falseRollbackRate"),
    ],
)
def test_gate_rates_outside_the_allowed_range_are_rejected(fpr, frr, name):
    with pytest.raises(ValueError, match=rf"{name} must be in \(0, 0.5\]"):
        compute_gate_rates(fpr, frr, gates=1)


def test_bounds_hold_their_defining_property_on_random_inputs():
    # Seeded sweep over counts (including fractional sums), priors and levels: the interval
    # holds the estimate, and each end that is not 0 or 1 is outside the set with a point 1e-9
    # further in inside it: tight, and never narrower than the exact set.
    import random

    from rollout_operator.domain.sequential import _Mixture

    rng = random.Random(14)
    for _ in range(400):
        n = rng.choice([1, 3, 10, 57, 400, 10_000, 2_000_000])
        total = rng.choice([0.0, float(n), rng.uniform(0, n), float(rng.randint(0, n))])
        alpha, prior = rng.choice([0.001, 0.01, 0.05, 0.2]), rng.choice([0.001, 0.02, 0.5, 0.9])
        lower, upper = compute_mean_bounds(total, n, alpha, prior_mean=prior)
        assert 0.0 <= lower <= total / n <= upper <= 1.0
        mixture = _Mixture.of(total, n, prior)
        for end, inward in ((lower, 1e-9), (upper, -1e-9)):
            if 0.0 < end < 1.0:
                assert not mixture.is_plausible(end, alpha), (total, n, alpha, prior, end)
                assert mixture.is_plausible(end + inward, alpha), (total, n, alpha, prior, end)
