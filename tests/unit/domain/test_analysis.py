"""Verdict rules: evaluate(measurement, criteria) as a table, and worst()."""

import math

import pytest

from rollout_operator.domain import Criteria, Measurement, OnNoData, Verdict, evaluate, worst

pytestmark = pytest.mark.unit

P, INC, E, F = Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.ERROR, Verdict.FAIL
MAX = Criteria(max=0.5, min_samples=50)
MIN = Criteria(min=0.9, min_samples=50)
REL = Criteria(relative_to="stable", max_increase=0.05, min_samples=50)
REL_DOWN = Criteria(relative_to="stable", max_decrease=0.1, min_samples=50)


@pytest.mark.parametrize(
    "measurement, criteria, stable, verdict, text",
    [
        (Measurement.of(0.2, 100), MAX, None, P, "0.2 within <= 0.5 (n=100)"),
        (Measurement.of(0.5, 100), MAX, None, P, "0.5 within"),  # the bound itself passes
        (Measurement.of(0.84, 412), MAX, None, F, "0.84 > max 0.5 (n=412)"),
        (Measurement.of(0.95, 60), MIN, None, P, "0.95"),
        (Measurement.of(0.31, 60), MIN, None, F, "0.31 < min 0.9 (n=60)"),
        # Too few samples is inconclusive - even when the value would pass or fail.
        (Measurement.of(0.2, 49), MAX, None, INC, "49 samples < minSamples 50"),
        (Measurement.of(9.0, 3), MAX, None, INC, "3 samples < minSamples 50"),
        (Measurement.of(0.2, None), MAX, None, INC, "unknown samples < minSamples 50"),
        (Measurement.of(0.2, None), Criteria(max=0.5), None, P, "0.2 within"),  # minSamples 0
        # Errors are errors, never passes.
        (Measurement.error("connection refused"), MAX, None, E, "candidate query failed: connection refused"),
        # NaN (0/0 in PromQL) is no data.
        (Measurement.of(math.nan, 0), MAX, None, INC, "no data for candidate (onNoData: hold)"),
        # +Inf (histogram_quantile past the last bucket) is a real, failing value.
        (Measurement.of(math.inf, 500), MAX, None, F, "inf > max 0.5"),
        # Relative thresholds: same query for both versions.
        (Measurement.of(0.16, 100), REL, Measurement.of(0.12, 100), P, "delta +0.04"),
        (Measurement.of(0.31, 100), REL, Measurement.of(0.12, 100), F, "> maxIncrease 0.05"),
        (Measurement.of(0.70, 100), REL_DOWN, Measurement.of(0.85, 100), F, "> maxDecrease 0.1"),
        (Measurement.of(0.80, 100), REL_DOWN, Measurement.of(0.85, 100), P, "delta -0.05"),
        (Measurement.of(0.01, 100), REL, Measurement.of(0.5, 100), P, "delta -0.49"),  # better is fine
        (Measurement.of(0.1, 100), REL, Measurement.error("timeout"), E, "stable query failed: timeout"),
        (Measurement.of(0.1, 100), REL, Measurement.of(0.1, 7), INC, "stable has 7 samples"),
        (Measurement.of(0.1, 100), REL, Measurement.no_data(), INC, "no data for stable"),
        (Measurement.of(0.1, 100), REL, None, E, "stable was not measured"),
        # Absolute bounds are checked before the relative one.
        (
            Measurement.of(0.9, 100),
            Criteria(max=0.5, relative_to="stable", max_increase=1.0),
            Measurement.of(0.8, 100),
            F,
            "0.9 > max 0.5",
        ),
    ],
)
def test_evaluate_table(measurement, criteria, stable, verdict, text):
    result = evaluate(measurement, criteria, stable)
    assert result.verdict is verdict, result.message
    assert text in result.message


@pytest.mark.parametrize(
    "on_no_data, verdict",
    [
        (OnNoData.HOLD, Verdict.INCONCLUSIVE),
        (OnNoData.FAIL, Verdict.FAIL),
        (OnNoData.PASS, Verdict.PASS),
    ],
)
def test_no_data_follows_on_no_data(on_no_data, verdict):
    criteria = Criteria(max=0.5, min_samples=50, on_no_data=on_no_data)
    assert evaluate(Measurement.no_data(), criteria).verdict is verdict


def test_on_no_data_pass_never_turns_a_missing_baseline_into_a_pass():
    criteria = Criteria(relative_to="stable", max_increase=0.1, on_no_data=OnNoData.PASS)
    result = evaluate(Measurement.of(0.3, 100), criteria, Measurement.no_data())
    assert result.verdict is Verdict.INCONCLUSIVE and "no baseline" in result.message


def test_on_no_data_pass_does_not_excuse_errors():
    criteria = Criteria(max=0.5, on_no_data=OnNoData.PASS)
    assert evaluate(Measurement.error("503"), criteria).verdict is Verdict.ERROR


def test_verdicts_are_ordered_and_worst_picks_the_most_severe():
    assert [v.rank for v in (P, INC, E, F)] == [0, 1, 2, 3]
    assert worst([P, INC, P]) is INC
    assert worst([INC, E]) is E
    assert worst([E, F, P]) is F
    assert worst([P, P]) is P
    assert worst([]) is P


def test_criteria_describe_reads_like_a_threshold():
    assert Criteria(min=0.9).describe() == ">= 0.9"
    assert Criteria(max=0.5, relative_to="stable", max_increase=0.05).describe() == "<= 0.5, <= stable+0.05"
