"""Per-slice gates (domain/slices.py) and the accuracy template: parsing `slices`, the grouped
queries, per-slice verdicts with the false-alarm correction in both modes, and through decide():
a candidate better on average but worse on one slice rolls back with the slice named."""

import copy
import math
import re
from datetime import timedelta
from statistics import NormalDist
from typing import Any

import promql_parser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout_operator.domain import Measurement, Phase, QueryRequest, Role, SpecError, Verdict, parse_spec
from rollout_operator.domain.gates import compute_query
from rollout_operator.domain.sequential import GateRates
from rollout_operator.domain.sequential_gates import SEQUENTIAL_TEMPLATES, compute_rates
from rollout_operator.domain.slices import (
    SLICE_SUPPORT,
    compute_noise_z,
    evaluate_sliced,
    evaluate_sliced_sequential,
)
from rollout_operator.domain.spec import AnalysisMode, AnalysisSpec, MetricSpec, SliceSpec
from rollout_operator.domain.status import RolloutStatus, status_from_dict, status_to_dict
from rollout_operator.domain.templates import TEMPLATES, check_query, render
from tests.support.domain_sim import World, with_version

pytestmark = pytest.mark.unit

DEMO_SLICES = ["clean", "young", "noisy", "other_mic", "silence"]
ACCURACY: dict[str, Any] = {
    "name": "accuracy",
    "template": "accuracy",
    "relativeTo": "stable",
    "maxDecrease": 0.05,
    "minSamples": 30,
    "slices": {"label": "slice", "values": DEMO_SLICES},
}
SPEC: dict[str, Any] = {
    "model": {"name": "speech-commands", "version": "v1", "uri": "file:///models/v1.onnx"},
    "strategy": {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"duration": "5m"}}]}},
    "analysis": {"interval": "30s", "failureLimit": 2, "metrics": [ACCURACY]},
    "progressDeadline": "5m",
}


def parse(metric: dict[str, Any], mode: str = "threshold"):
    spec = copy.deepcopy(SPEC)
    spec["analysis"]["metrics"] = [metric]
    spec["analysis"]["mode"] = mode
    return parse_spec(spec, name="speech", namespace="models")


def metric_with(**changes: Any) -> dict[str, Any]:
    m = copy.deepcopy(ACCURACY)
    m.update(changes)
    return {k: v for k, v in m.items() if v is not None}


def reject(metric: dict[str, Any], mode: str = "threshold") -> SpecError:
    with pytest.raises(SpecError) as err:
        parse(metric, mode)
    return err.value


# --- parsing ------------------------------------------------------------------------------


def test_a_slices_spec_parses_with_its_defaults():
    spec = parse(metric_with(slices={}))
    assert spec.metrics[0].slices == SliceSpec(label="slice", values=(), max=16)
    listed = parse(ACCURACY).metrics[0].slices
    assert listed is not None and listed.values == tuple(DEMO_SLICES) and listed.count == 5
    assert parse(metric_with(slices={"max": 4})).metrics[0].slices.count == 4


@pytest.mark.parametrize(
    "slices, field, words",
    [
        ({"label": "speaker"}, "spec.analysis.metrics[0].slices.label", "slice, level_band, duration_band"),
        ({"label": "level_band"}, "spec.analysis.metrics[0].slices.label", "accuracy supports slices by slice only"),
        ({"values": ["Young"]}, "spec.analysis.metrics[0].slices.values[0]", "slice name"),
        ({"values": ["a" * 33]}, "spec.analysis.metrics[0].slices.values[0]", "1..32 characters"),
        ({"values": ["young", "young"]}, "spec.analysis.metrics[0].slices.values[1]", "listed twice"),
        ({"values": []}, "spec.analysis.metrics[0].slices.values", "1..32 slice names"),
        ({"values": "young"}, "spec.analysis.metrics[0].slices.values", "list"),
        ({"values": ["young"], "max": 3}, "spec.analysis.metrics[0].slices.max", "not used"),
        ({"max": 0}, "spec.analysis.metrics[0].slices.max", "1..32"),
        ({"max": 33}, "spec.analysis.metrics[0].slices.max", "1..32"),
        ("young", "spec.analysis.metrics[0].slices", "object"),
    ],
)
def test_bad_slices_are_rejected_naming_the_field(slices, field, words):
    err = reject(metric_with(slices=slices))
    assert err.field == field and words in err.message, str(err)


@pytest.mark.parametrize("template", sorted(set(TEMPLATES) - set(SLICE_SUPPORT)))
def test_templates_without_a_slice_label_reject_slices(template):
    metric = {"name": "g", "template": template, "max": 0.5, "slices": {}}
    if template == "slow-requests":
        metric["bound"] = 0.5
    err = reject(metric)
    assert err.field == "spec.analysis.metrics[0].slices" and f"template {template} has no slice label" in err.message


@pytest.mark.parametrize(
    "template, label, ok",
    [
        ("error-rate", "slice", True),
        ("error-rate", "level_band", False),
        ("request-rate", "duration_band", False),
        ("unknown-rate", "level_band", True),
        ("mean-confidence", "duration_band", True),
        ("accuracy", "duration_band", False),
    ],
)
def test_each_template_supports_the_labels_its_series_carry(template, label, ok):
    metric = {"name": "g", "template": template, "min": 0.0, "slices": {"label": label}}
    if ok:
        assert parse(metric).metrics[0].slices.label == label
    else:
        assert reject(metric).field == "spec.analysis.metrics[0].slices.label"


def test_a_user_query_is_sliced_only_when_it_groups_by_the_label():
    grouped = (
        'sum by (slice) (rate(speech_requests_total{version="{{version}}",outcome="client_error"}[{{window}}]))'
        ' / sum by (slice) (rate(speech_requests_total{version="{{version}}"}[{{window}}]))'
    )
    assert parse({"name": "q", "query": grouped, "max": 0.1, "slices": {}}).metrics[0].slices is not None
    for query in (
        'sum(rate(speech_requests_total{version="{{version}}"}[{{window}}]))',
        'sum by (level_band) (rate(speech_predictions_total{version="{{version}}"}[{{window}}]))',
        'sum by (slice) (rate(a{version="{{version}}"}[{{window}}])) / sum(rate(b{version="{{version}}"}[{{window}}]))',
        'rate(speech_requests_total{version="{{version}}"}[{{window}}])',
        "1 + 2",
    ):
        err = reject({"name": "q", "query": query, "max": 0.1, "slices": {}})
        assert err.field == "spec.analysis.metrics[0].query" and "must group by slice" in err.message, query


def test_accuracy_is_a_built_in_template_and_a_sequential_one():
    for template in (TEMPLATES["accuracy"], SEQUENTIAL_TEMPLATES["accuracy"]):
        check_query(template.query)
        check_query(template.samples)
        assert "router_feedback_total" in template.query and 'result="correct"' in template.query
    out = render(TEMPLATES["accuracy"].query, {"namespace": "ns", "rollout": "r", "version": "v2", "window": "1m"})
    assert 'router_feedback_total{namespace="ns",rollout="r",version="v2",result="correct"}' in out
    assert parse({"name": "a", "template": "accuracy", "min": 0.8}, "sequential").metrics[0].template == "accuracy"


# --- queries ------------------------------------------------------------------------------

STATUS = RolloutStatus(stable_version="v1", candidate_version="v2")


@pytest.mark.parametrize(
    "template, label, mode",
    [
        (t, label, mode)
        for t, labels in sorted(SLICE_SUPPORT.items())
        for label in labels
        for mode in ("threshold", "sequential")
        if mode == "threshold" or t in SEQUENTIAL_TEMPLATES
    ],
)
def test_sliced_queries_group_by_the_label_and_parse(template, label, mode):
    metric = {"name": "g", "template": template, "min": 0.0, "slices": {"label": label}}
    spec = parse(metric, mode)
    q = compute_query(spec, STATUS, spec.metrics[0], Role.CANDIDATE)
    assert (q.slice_label, q.slice_max) == (label, 16)
    for text in (q.query, q.samples_query):
        promql_parser.parse(text)
        assert f"sum by ({label}) (" in text and "sum(" not in text and "vector(0)" not in text
        assert 'version="v2"' in text


def test_listed_values_are_selected_in_the_query_and_bound_it():
    spec = parse(ACCURACY)
    q = compute_query(spec, STATUS, spec.metrics[0], Role.STABLE)
    assert 'slice=~"clean|young|noisy|other_mic|silence"' in q.query and q.slice_max == 5
    assert q.version == "v1"


def test_a_gate_without_slices_keeps_its_scalar_query():
    spec = parse({"name": "e", "template": "error-rate", "max": 0.01})
    q = compute_query(spec, STATUS, spec.metrics[0], Role.CANDIDATE)
    assert q.slice_label == "" and q.slice_max == 0
    assert q.query == render(TEMPLATES["error-rate"].query, {**VARS, "version": "v2"})


VARS = {"namespace": "models", "rollout": "speech", "model": "speech-commands", "stable": "v1", "window": "1m"}
VARS["candidate"] = "v2"


# --- threshold-mode verdicts --------------------------------------------------------------


def sliced(**readings: tuple[float, int]) -> Measurement:
    return Measurement.by_slice({k: Measurement.of(v, samples=n) for k, (v, n) in readings.items()})


def judge(metric_dict, candidate, stable=None, analysis=None):
    spec = parse(metric_dict)
    return evaluate_sliced(spec.metrics[0], analysis or spec.analysis, candidate, stable)


def test_any_failing_slice_fails_the_gate_and_is_named_with_its_numbers():
    stable = sliced(clean=(0.95, 400), young=(0.91, 400), noisy=(0.90, 400), other_mic=(0.9, 400), silence=(1, 400))
    cand = sliced(clean=(0.97, 400), young=(0.62, 212), noisy=(0.92, 400), other_mic=(0.9, 400), silence=(1, 400))
    result = judge(ACCURACY, cand, stable)
    assert result.evaluation.verdict is Verdict.FAIL
    assert result.evaluation.message == "[young] 0.62 < stable-0.05 = 0.86 (n=212)"
    by_name = {s.name: s for s in result.slices}
    assert by_name["young"].verdict is Verdict.FAIL and by_name["young"].stable_value == 0.91
    assert by_name["clean"].verdict is Verdict.PASS and by_name["silence"].verdict is Verdict.PASS
    assert result.shown is by_name["young"]


def test_a_slice_under_min_samples_is_inconclusive_on_its_own():
    cand = sliced(clean=(0.97, 400), young=(0.2, 12))
    stable = sliced(clean=(0.95, 400), young=(0.9, 400))
    result = judge(metric_with(slices={"values": ["clean", "young"]}), cand, stable)
    assert result.evaluation.verdict is Verdict.INCONCLUSIVE
    assert result.evaluation.message == "[young] candidate has 12 samples < minSamples 30"
    assert {s.name: s.verdict for s in result.slices} == {"clean": Verdict.PASS, "young": Verdict.INCONCLUSIVE}


def test_a_listed_slice_without_data_is_inconclusive_and_named():
    cand = sliced(clean=(0.97, 400))
    stable = sliced(clean=(0.95, 400), young=(0.9, 400))
    result = judge(metric_with(slices={"values": ["clean", "young"]}), cand, stable)
    assert result.evaluation.verdict is Verdict.INCONCLUSIVE
    assert "[young] no data for the candidate on this slice" in result.evaluation.message


def test_a_slice_stable_has_no_data_for_has_no_baseline():
    cand = sliced(clean=(0.97, 400), young=(0.9, 400))
    result = judge(metric_with(slices={}), cand, sliced(clean=(0.95, 400)))
    assert result.evaluation.verdict is Verdict.INCONCLUSIVE
    assert "[young] no stable baseline on this slice" in result.evaluation.message


def test_without_values_every_slice_with_data_is_judged():
    cand = sliced(clean=(0.97, 400), none=(0.97, 400), other=(0.97, 400))
    stable = sliced(clean=(0.95, 400), none=(0.95, 400), other=(0.95, 400))
    result = judge(metric_with(slices={}), cand, stable)
    assert result.evaluation.verdict is Verdict.PASS
    assert [s.name for s in result.slices] == ["clean", "none", "other"]
    assert result.evaluation.message == "all 3 slices by slice within >= stable-0.05"


def test_errors_and_no_data_are_judged_for_the_whole_gate():
    failed = judge(ACCURACY, Measurement.error("boom"), sliced())
    assert failed.evaluation.verdict is Verdict.ERROR and "boom" in failed.evaluation.message
    nothing = judge(ACCURACY, Measurement.by_slice({}), sliced())
    assert nothing.evaluation.verdict is Verdict.INCONCLUSIVE and "no data for candidate" in nothing.evaluation.message
    no_stable = judge(ACCURACY, sliced(young=(0.9, 100)), Measurement.error("stable down"))
    assert no_stable.evaluation.verdict is Verdict.ERROR and "stable down" in no_stable.evaluation.message
    assert judge(ACCURACY, sliced(young=(0.9, 100)), None).evaluation.verdict is Verdict.ERROR


def test_a_breach_within_the_sampling_noise_is_inconclusive_not_a_failure():
    # The worked example of docs/analysis.md: k = 5, falseRollbackRate 0.05 -> z at 0.01.
    z = compute_noise_z(0.05, 5)
    assert z == pytest.approx(NormalDist().inv_cdf(0.99))
    stable = sliced(young=(0.90, 400))
    close = judge(metric_with(slices={"values": DEMO_SLICES}), sliced(young=(0.80, 100)), stable)
    (young,) = [s for s in close.slices if s.name == "young"]
    noise = math.hypot(math.sqrt(0.8 * 0.2 / 100), math.sqrt(0.9 * 0.1 / 400))
    assert young.verdict is Verdict.INCONCLUSIVE and "within sampling noise" in young.message
    assert f"must exceed {z * noise:.4g}" in young.message
    clear = judge(metric_with(slices={"values": ["young"]}), sliced(young=(0.75, 400)), stable)
    assert clear.evaluation.verdict is Verdict.FAIL
    # The same breach fails without slices: the correction is only for per-slice gates.
    plain = metric_with(slices=None)
    spec = parse(plain)
    from rollout_operator.domain import Criteria, evaluate

    ev = evaluate(
        Measurement.of(0.80, 100), Criteria.for_metric(spec.metrics[0], spec.analysis), Measurement.of(0.9, 400)
    )
    assert ev.verdict is Verdict.FAIL


def test_more_slices_make_the_noise_margin_wider():
    assert compute_noise_z(0.05, 1) < compute_noise_z(0.05, 5) < compute_noise_z(0.05, 16)


def test_absolute_thresholds_use_the_noise_at_the_threshold():
    metric = {"name": "u", "template": "unknown-rate", "max": 0.1, "slices": {"label": "level_band", "max": 4}}
    z = compute_noise_z(0.05, 4)
    at = math.sqrt(0.1 * 0.9 / 200)
    over = 0.1 + z * at
    fail = judge(metric, sliced(quiet=(over + 0.005, 200)))
    hold = judge(metric, sliced(quiet=(over - 0.005, 200)))
    assert fail.evaluation.verdict is Verdict.FAIL and fail.evaluation.message.startswith("[quiet] ")
    assert hold.evaluation.verdict is Verdict.INCONCLUSIVE


def test_a_breach_without_samples_never_fails_a_slice():
    metric = {"name": "e", "template": "error-rate", "max": 0.01, "minSamples": 0, "slices": {}}
    result = judge(metric, sliced(young=(0.5, 0)))
    assert result.evaluation.verdict is Verdict.INCONCLUSIVE
    assert result.evaluation.message == "[young] 0.5 > max 0.01 (n=0) but without samples to judge it by"


def test_a_user_query_has_no_noise_model_so_the_raw_threshold_applies():
    query = 'sum by (slice) (rate(x{version="{{version}}"}[{{window}}]))'
    metric = {"name": "q", "query": query, "max": 0.1, "minSamples": 0, "slices": {}}
    assert judge(metric, sliced(young=(0.1001, 5))).evaluation.verdict is Verdict.FAIL


def test_a_failure_message_lists_at_most_three_slices():
    metric = {"name": "e", "template": "error-rate", "max": 0.0, "minSamples": 0, "slices": {}}
    cand = sliced(**{f"s{i}": (0.5, 100) for i in range(5)})
    message = judge(metric, cand).evaluation.message
    assert message.count("[s") == 3 and message.endswith("; and 2 more slices")


# --- sequential-mode verdicts -------------------------------------------------------------


def test_the_rollback_rate_is_split_over_the_k_slices():
    spec = parse(ACCURACY, "sequential")
    assert compute_rates(spec.analysis, 1) == GateRates(0.05, 0.05 / 5)
    capped = parse(metric_with(slices={"max": 8}), "sequential")
    assert compute_rates(capped.analysis, 2) == GateRates(0.05, 0.05 / (8 * 2))
    plain = parse(metric_with(slices=None), "sequential")
    assert compute_rates(plain.analysis, 1) == GateRates(0.05, 0.05)


def counts(**readings: tuple[float, int]) -> Measurement:
    """Sequential answers: events (the share times the trials) and trials per slice."""
    return Measurement.by_slice({k: Measurement.of(p * n, samples=n) for k, (p, n) in readings.items()})


def sequential_gate(metric_dict, candidate, stable):
    spec = parse(metric_dict, "sequential")
    rates = compute_rates(spec.analysis, 1)
    return evaluate_sliced_sequential(spec.metrics[0], spec.analysis, candidate, stable, rates, timedelta(minutes=5))


def test_sequential_fails_on_the_worse_slice_and_names_it():
    metric = metric_with(slices={"values": ["clean", "young"]})
    gate, slices = sequential_gate(
        metric, counts(clean=(0.97, 2000), young=(0.55, 2000)), counts(clean=(0.95, 4000), young=(0.9, 4000))
    )
    assert gate.verdict is Verdict.FAIL and gate.message.startswith("[young] candidate - stable ")
    assert {s.name: s.verdict for s in slices}["clean"] is Verdict.PASS
    young = [s for s in slices if s.name == "young"][0]
    assert young.lower is not None and young.upper is not None and young.upper < 0.9 - 0.05
    assert young.stable_value == pytest.approx(0.9)


def test_sequential_waits_for_its_slowest_slice():
    metric = metric_with(slices={"values": ["clean", "young"]})
    gate, slices = sequential_gate(
        metric, counts(clean=(0.97, 4000), young=(0.9, 40)), counts(clean=(0.95, 8000), young=(0.9, 80))
    )
    assert gate.verdict is Verdict.INCONCLUSIVE and gate.message.startswith("[young] ")
    assert gate.samples_needed and gate.samples_needed > 0
    assert {s.name: s.verdict for s in slices} == {"clean": Verdict.PASS, "young": Verdict.INCONCLUSIVE}


def test_sequential_listed_slice_without_data_holds_the_gate():
    metric = metric_with(slices={"values": ["clean", "young"]})
    gate, _ = sequential_gate(metric, counts(clean=(0.97, 4000)), counts(clean=(0.95, 8000), young=(0.9, 80)))
    assert gate.verdict is Verdict.INCONCLUSIVE and "[young] no data for the candidate" in gate.message
    err, _ = sequential_gate(metric, counts(clean=(0.97, 4000)), Measurement.error("down"))
    assert err.verdict is Verdict.ERROR and "down" in err.message


def test_a_split_rate_needs_more_evidence_than_one_gate():
    one = parse(metric_with(slices=None), "sequential")
    from rollout_operator.domain.sequential_gates import evaluate_sequential_gate

    rates_one = compute_rates(one.analysis, 1)
    candidate, stable = Measurement.of(0.80 * 600, samples=600), Measurement.of(0.9 * 1200, samples=1200)
    whole = evaluate_sequential_gate(one.metrics[0], one.analysis, candidate, stable, rates_one, timedelta(minutes=5))
    many = metric_with(slices={"max": 32})
    gate, _ = sequential_gate(many, Measurement.by_slice({"young": candidate}), Measurement.by_slice({"young": stable}))
    assert whole.upper is not None and gate.upper is not None
    # maxDecrease: the upper bound guards a rollback; the 32-way split widens it, and the
    # promotion side (lower) is not split.
    assert gate.upper > whole.upper and gate.lower == whole.lower
    assert gate.samples_needed is not None and whole.samples_needed is not None
    assert gate.samples_needed > whole.samples_needed


# --- status -------------------------------------------------------------------------------


def test_slice_readings_round_trip_through_the_status_json():
    world = rollout(bad_slice="young")
    world.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    status = world.status
    d = status_to_dict(status)
    (gate,) = d["analysis"]["metrics"]
    assert {s["name"] for s in gate["slices"]} == set(DEMO_SLICES)
    assert status_from_dict(d) == status


def test_a_gate_without_slices_writes_no_slices_field():
    status = status_to_dict(RolloutStatus())
    assert "slices" not in str(status)


# --- through decide() ---------------------------------------------------------------------

SHARES = {"clean": 0.95, "young": 0.90, "noisy": 0.88, "other_mic": 0.9, "silence": 0.99}
_WINDOW = re.compile(r"\[(\d+)([sm])\]")


def feedback(bad_slice: str | None, rps: float = 5.0):
    """A Prometheus answering per-slice accuracy: stable at SHARES; the candidate 3 points better
    on every slice but `bad_slice`, where it is 30 points worse. Sequential queries get counts."""

    def answer(q: QueryRequest) -> Measurement:
        assert q.slice_label == "slice"
        window = _WINDOW.search(q.query)
        assert window, q.query
        seconds = int(window.group(1)) * (60 if window.group(2) == "m" else 1)
        readings = {}
        for name, share in SHARES.items():
            if q.role is Role.CANDIDATE:
                share = share - 0.30 if name == bad_slice else min(1.0, share + 0.03)
            trials = int(rps * seconds)
            value = share if "rate(" in q.query else share * trials  # a share, or counts since the step began
            readings[name] = Measurement.of(value, samples=trials)
        return Measurement.by_slice(readings)

    return answer


def rollout(bad_slice: str | None, mode: str = "threshold") -> World:
    spec = copy.deepcopy(SPEC)
    spec["analysis"]["mode"] = mode
    if mode == "sequential":
        spec["analysis"].pop("failureLimit")
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.metrics = feedback(bad_slice)
    world.set_spec(with_version(spec, "v2"))
    return world


@pytest.mark.parametrize("mode", ["threshold", "sequential"])
def test_worse_on_one_slice_rolls_back_naming_the_slice(mode):
    world = rollout("young", mode)
    world.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    assert world.status.reason == "AnalysisFailed"
    assert world.status.message.startswith("accuracy[young] "), world.status.message
    if mode == "threshold":
        assert re.search(r"accuracy\[young\] 0\.6 < stable-0\.05 = 0\.85 \(n=\d+\)", world.status.message)
    (gate,) = world.status.analysis.metrics
    assert [s.name for s in gate.slices if s.verdict is Verdict.FAIL] == ["young"]


@pytest.mark.parametrize("mode", ["threshold", "sequential"])
def test_better_on_every_slice_promotes(mode):
    world = rollout(None, mode)
    world.run_until(lambda w: w.status.stable_version == "v2", max_ticks=300)
    assert world.status.phase is Phase.HEALTHY


def test_stable_and_candidate_queries_are_both_sliced():
    world = rollout("young")
    world.run_until(lambda w: {q.role for q in w.queries} == {Role.CANDIDATE, Role.STABLE}, max_ticks=50)
    assert all(q.slice_label == "slice" and q.slice_max == 5 for q in world.queries)


def test_the_admission_forecast_leaves_sliced_gates_out():
    world = rollout("young", "sequential")
    world.tick()
    assert all(q.slice_label for q in world.queries)  # no unsliced baseline query was planned


def test_analysis_spec_default_is_threshold():
    assert AnalysisSpec().mode is AnalysisMode.THRESHOLD and MetricSpec("m").slices is None


# --- properties ---------------------------------------------------------------------------

READING = st.tuples(st.floats(0, 1), st.integers(0, 2000))
READINGS = st.dictionaries(st.sampled_from(DEMO_SLICES), READING, min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(candidate=READINGS, stable=READINGS, k=st.integers(1, 32))
def test_the_gate_is_its_worst_slice_and_fewer_slices_never_hide_a_failure(candidate, stable, k):
    metric = metric_with(slices={"max": k})
    result = judge(metric, sliced(**candidate), sliced(**stable))
    verdicts = [s.verdict for s in result.slices]
    assert [s.name for s in result.slices] == sorted(candidate)
    assert result.evaluation.verdict is max(verdicts, key=lambda v: v.rank)
    if result.evaluation.verdict is Verdict.FAIL:
        assert result.evaluation.message.startswith("[")
        # A smaller k is a smaller noise margin: whatever fails at k still fails at k - 1.
        if k > 1:
            fewer = judge(metric_with(slices={"max": k - 1}), sliced(**candidate), sliced(**stable))
            assert fewer.evaluation.verdict is Verdict.FAIL
