"""Sequential gates (domain/sequential_gates.py): count queries, one gate's verdict from counts,
the rate split across thresholds and steps."""

from datetime import timedelta

import pytest

from rollout_operator.domain.analysis import Measurement, Verdict
from rollout_operator.domain.sequential import GateRates
from rollout_operator.domain.sequential_gates import (
    SEQUENTIAL_TEMPLATES,
    compute_count_window,
    compute_rates,
    evaluate_sequential_gate,
)
from rollout_operator.domain.spec import AnalysisSpec, MetricSpec, OnNoData
from rollout_operator.domain.templates import TEMPLATES, check_query

pytestmark = pytest.mark.unit

RATES = GateRates(0.05, 0.05)
FIVE_MIN = timedelta(minutes=5)
ERRORS = MetricSpec(name="error-rate", template="error-rate", max=0.02)
RELATIVE = MetricSpec(name="error-rate", template="error-rate", relative_to="stable", max_increase=0.01)


def gate(metric, candidate, stable=None, analysis=AnalysisSpec(), elapsed=FIVE_MIN):
    return evaluate_sequential_gate(metric, analysis, candidate, stable, RATES, elapsed)


@pytest.mark.parametrize("name", sorted(SEQUENTIAL_TEMPLATES))
def test_count_templates_are_valid_promql_over_the_same_series(name):
    template = SEQUENTIAL_TEMPLATES[name]
    check_query(template.query, template.arguments)
    check_query(template.samples, template.arguments)
    assert "increase(" in template.query and "increase(" in template.samples
    # The trials are the same series the threshold-mode template counts as its samples.
    assert template.samples.split("[")[0] == TEMPLATES[name].samples.split("[")[0]


def test_count_window_is_the_whole_step_in_seconds():
    assert compute_count_window(timedelta(seconds=754.2)) == "755s"
    assert compute_count_window(timedelta(minutes=2)) == "2m"
    assert compute_count_window(timedelta(0)) == "1s"


def test_a_clearly_good_gate_passes_with_its_interval():
    result = gate(ERRORS, Measurement.of(2, 2000))
    assert result.verdict is Verdict.PASS
    assert result.message.startswith("0.001 [") and "< max 0.02 (n=2000)" in result.message
    assert result.samples_needed == 0 and result.seconds_to_verdict == 0.0
    assert result.lower < 0.001 < result.upper < 0.02


def test_an_undecided_gate_says_how_long_at_todays_traffic():
    result = gate(ERRORS, Measurement.of(30, 1000))  # 1000 requests in 5 minutes
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.samples_needed > 0
    assert result.seconds_to_verdict == pytest.approx(result.samples_needed / (1000 / 300))
    assert f"~{result.samples_needed} more samples" in result.message


def test_a_clearly_bad_gate_fails_with_its_interval():
    result = gate(ERRORS, Measurement.of(90, 1000))
    assert result.verdict is Verdict.FAIL and "> max 0.02 (n=1000)" in result.message


def test_events_above_trials_from_extrapolation_are_clamped():
    result = gate(ERRORS, Measurement.of(1003.2, 1000))
    assert result.verdict is Verdict.FAIL and result.estimate == 1.0


def test_min_and_max_on_one_gate_are_both_tested():
    metric = MetricSpec(name="confidence", template="mean-confidence", min=0.6, max=0.95)
    assert gate(metric, Measurement.of(800, 1000)).verdict is Verdict.PASS
    too_sure = gate(metric, Measurement.of(990, 1000))
    assert too_sure.verdict is Verdict.FAIL and "> max 0.95" in too_sure.message


def test_query_errors_and_no_data():
    assert gate(ERRORS, Measurement.error("timeout")).verdict is Verdict.ERROR
    assert gate(ERRORS, Measurement.no_data()).verdict is Verdict.INCONCLUSIVE
    failing = AnalysisSpec(on_no_data=OnNoData.FAIL)
    assert gate(ERRORS, Measurement.no_data(), analysis=failing).verdict is Verdict.FAIL
    assert gate(ERRORS, Measurement.of(0, 0)).verdict is Verdict.INCONCLUSIVE  # no traffic yet


def test_relative_gate_compares_with_stable():
    same = gate(RELATIVE, Measurement.of(200, 20_000), Measurement.of(1600, 160_000))
    worse = gate(RELATIVE, Measurement.of(900, 20_000), Measurement.of(1600, 160_000))
    assert same.verdict is Verdict.PASS and same.stable_samples == 160_000
    assert worse.verdict is Verdict.FAIL
    assert worse.message.startswith("candidate - stable 0.035 [") and "> maxIncrease 0.01" in worse.message


def test_relative_gate_without_a_baseline_never_passes():
    assert gate(RELATIVE, Measurement.of(0, 5000), None).verdict is Verdict.ERROR
    assert gate(RELATIVE, Measurement.of(0, 5000), Measurement.no_data()).verdict is Verdict.INCONCLUSIVE
    lenient = AnalysisSpec(on_no_data=OnNoData.PASS)
    assert (
        gate(RELATIVE, Measurement.of(0, 5000), Measurement.no_data(), analysis=lenient).verdict is Verdict.INCONCLUSIVE
    )


def test_rates_split_rollbacks_across_thresholds_and_steps():
    analysis = AnalysisSpec(
        false_promotion_rate=0.05,
        false_rollback_rate=0.12,
        metrics=(ERRORS, MetricSpec(name="c", template="mean-confidence", min=0.6, max=0.95)),
    )
    rates = compute_rates(analysis, analysis_steps=2)
    assert rates.false_promotion == 0.05
    assert rates.false_rollback == pytest.approx(0.12 / (3 * 2))
