"""Drift distances against hand-computed values: PSI and Jensen-Shannon on cumulative `le` buckets."""

import math

import pytest

from rollout_operator.domain.drift import (
    PSI_EPSILON,
    DriftError,
    compute_bucket_counts,
    compute_js_distance,
    compute_psi,
)

pytestmark = pytest.mark.unit

# reference counts 50, 30, 20 (shares 0.5, 0.3, 0.2); live counts 20, 40, 40 (shares 0.2, 0.4, 0.4)
REFERENCE = [("1", 50), ("2", 80), ("+Inf", 100)]
LIVE = [("1", 20), ("2", 60), ("+Inf", 100)]


def test_cumulative_buckets_become_per_bucket_counts():
    edges, counts = compute_bucket_counts([("0.5", 3), ("1", 3), ("+Inf", 10)], "h")
    assert edges == (0.5, 1.0, math.inf)
    assert counts == (3.0, 0.0, 7.0)


def test_psi_is_the_sum_of_share_difference_times_log_ratio():
    expected_terms = [
        (0.2 - 0.5) * math.log(0.2 / 0.5),  # -0.3 * -0.9163 = 0.2749
        (0.4 - 0.3) * math.log(0.4 / 0.3),  # 0.1 * 0.2877 = 0.0288
        (0.4 - 0.2) * math.log(0.4 / 0.2),  # 0.2 * 0.6931 = 0.1386
    ]
    distance = compute_psi(REFERENCE, LIVE)
    assert [t.term for t in distance.terms] == pytest.approx(expected_terms)
    assert distance.value == pytest.approx(0.442285, abs=1e-6)  # 0.274887 + 0.028768 + 0.138629
    assert [t.le for t in distance.terms] == [1.0, 2.0, math.inf]
    assert [t.reference_share for t in distance.terms] == pytest.approx([0.5, 0.3, 0.2])
    assert [t.live_share for t in distance.terms] == pytest.approx([0.2, 0.4, 0.4])
    assert (distance.reference_count, distance.live_count) == (100.0, 100.0)


def test_psi_gives_an_empty_bucket_the_epsilon_share():
    # reference shares 0, 0.5, 0.5 -> 1e-4, 0.5, 0.5; live 0.1, 0.5, 0.4
    reference = [("1", 0), ("2", 50), ("+Inf", 100)]
    live = [("1", 10), ("2", 60), ("+Inf", 100)]
    distance = compute_psi(reference, live)
    assert PSI_EPSILON == 1e-4
    assert distance.terms[0].reference_share == 1e-4
    assert distance.terms[0].term == pytest.approx((0.1 - 1e-4) * math.log(0.1 / 1e-4))  # 0.0999 * 6.9078 = 0.6901
    assert distance.terms[1].term == 0.0
    assert distance.terms[2].term == pytest.approx((0.4 - 0.5) * math.log(0.4 / 0.5))  # 0.0223
    assert distance.value == pytest.approx(0.712399, abs=1e-6)
    # a bucket empty on both sides adds nothing: (eps - eps) * ln 1 = 0
    both = compute_psi([("1", 0), ("+Inf", 4)], [("1", 0), ("+Inf", 9)])
    assert both.value == 0.0


def test_psi_takes_a_stated_epsilon():
    reference = [("1", 0), ("+Inf", 10)]
    live = [("1", 5), ("+Inf", 10)]
    distance = compute_psi(reference, live, epsilon=0.01)
    # shares: reference 0.01, 1.0; live 0.5, 0.5
    expected = (0.5 - 0.01) * math.log(0.5 / 0.01) + (0.5 - 1.0) * math.log(
        0.5 / 1.0
    )  # 0.49 * 3.9120 + 0.5 * 0.6931 = 1.9169 + 0.3466
    assert distance.value == pytest.approx(expected)
    assert distance.value == pytest.approx(2.263465, abs=1e-6)


def test_the_same_shape_at_another_volume_is_no_drift():
    doubled = [(le, 2 * c) for le, c in REFERENCE]
    assert compute_psi(REFERENCE, doubled).value == pytest.approx(0.0, abs=1e-12)
    assert compute_js_distance(REFERENCE, doubled).value == pytest.approx(0.0, abs=1e-6)


def test_js_distance_is_the_root_of_the_divergence_in_bits():
    # p = (0.5, 0.5), q = (1, 0), m = (0.75, 0.25)
    reference = [("1", 50), ("+Inf", 100)]
    live = [("1", 100), ("+Inf", 100)]
    first = (0.5 * math.log2(0.5 / 0.75) + 1.0 * math.log2(1.0 / 0.75)) / 2  # (-0.2925 + 0.4150) / 2 = 0.0613
    second = (0.5 * math.log2(0.5 / 0.25) + 0.0) / 2  # 0.5 * 1 / 2 = 0.25
    distance = compute_js_distance(reference, live)
    assert [t.term for t in distance.terms] == pytest.approx([first, second])
    assert distance.value == pytest.approx(math.sqrt(first + second))
    assert distance.value == pytest.approx(0.557923, abs=1e-6)  # sqrt(0.061278 + 0.25) = sqrt(0.311278)


def test_js_distance_of_disjoint_histograms_is_one():
    distance = compute_js_distance([("1", 7), ("+Inf", 7)], [("1", 0), ("+Inf", 3)])
    assert distance.value == pytest.approx(1.0)


def test_psi_is_larger_the_further_the_live_shares_move():
    small = compute_psi(REFERENCE, [("1", 45), ("2", 77), ("+Inf", 100)])
    large = compute_psi(REFERENCE, LIVE)
    assert 0 < small.value < 0.1 < 0.25 < large.value


@pytest.mark.parametrize(
    "reference, live, message",
    [
        (
            REFERENCE,
            [("1", 20), ("3", 60), ("+Inf", 100)],
            r"different buckets: reference le=\[1, 2, inf\], live le=\[1, 3, inf\]",
        ),
        (REFERENCE, [("1", 20), ("+Inf", 100)], "different buckets"),
        (
            REFERENCE,
            [("1", -1), ("2", 60), ("+Inf", 100)],
            "live histogram: count at le=1 is -1; expected a finite number >= 0",
        ),
        (
            [("1", 50), ("2", 40), ("+Inf", 100)],
            LIVE,
            "reference histogram: cumulative counts must not decrease, got 40 at le=2 after 50 at le=1",
        ),
        (
            [("1", 0), ("2", 0), ("+Inf", 0)],
            LIVE,
            r"reference histogram: the histogram is empty \(count 0 up to le=inf\)",
        ),
        (REFERENCE, [], "live histogram: no buckets"),
        (
            [("2", 50), ("1", 80), ("+Inf", 100)],
            LIVE,
            "reference histogram: bucket edges must increase, got le=1 after le=2",
        ),
        (
            REFERENCE,
            [("one", 20), ("2", 60), ("+Inf", 100)],
            "live histogram: bucket 0 has le='one'; expected a number or '\\+Inf'",
        ),
        (REFERENCE, [("1", math.nan), ("2", 60), ("+Inf", 100)], "live histogram: count at le=1 is nan"),
        (REFERENCE, [("1", "20"), ("2", 60), ("+Inf", 100)], "live histogram: count at le=1 is '20'"),
    ],
)
def test_histograms_that_cannot_be_compared_are_refused_naming_what_is_wrong(reference, live, message):
    for compute in (compute_psi, compute_js_distance):
        with pytest.raises(DriftError, match=message):
            compute(reference, live)


@pytest.mark.parametrize("epsilon", [0.0, 1.0, -0.1])
def test_psi_refuses_an_epsilon_outside_0_1(epsilon):
    with pytest.raises(DriftError, match="epsilon: expected a share between 0 and 1"):
        compute_psi(REFERENCE, LIVE, epsilon=epsilon)
