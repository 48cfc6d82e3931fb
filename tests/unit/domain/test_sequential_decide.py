"""Sequential mode through decide(): counts since the step began, evidence-driven analysis steps
(Pass -> next step, Fail -> roll back with the interval), the longest wait, and parse rules."""

import copy
import re
from datetime import timedelta
from typing import Any

import pytest

from rollout_operator.domain import Measurement, Phase, QueryRequest, Role, SpecError, parse_spec
from tests.support.domain_sim import World, with_version

pytestmark = pytest.mark.unit

SEQUENTIAL: dict[str, Any] = {
    "model": {"name": "speech-commands", "version": "v1", "uri": "file:///models/v1.onnx"},
    "strategy": {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"duration": "10m"}}]}},
    "analysis": {
        "mode": "sequential",
        "interval": "30s",
        "falsePromotionRate": 0.05,
        "falseRollbackRate": 0.05,
        "metrics": [{"name": "error-rate", "template": "error-rate", "max": 0.02}],
    },
    "progressDeadline": "5m",
}
_WINDOW = re.compile(r"\[(\d+)([sm])\]")


def counting(rps: dict[Role, float], error_rate: dict[Role, float]):
    """A Prometheus that answers count queries with the expected counts over their window."""

    def answer(q: QueryRequest) -> Measurement:
        window = _WINDOW.search(q.query)
        assert window, q.query
        amount, unit = window.groups()
        seconds = int(amount) * (60 if unit == "m" else 1)
        trials = rps[q.role] * seconds
        return Measurement.of(trials * error_rate[q.role], samples=int(trials))

    return answer


def rollout(spec=SEQUENTIAL, candidate_rps=10.0, candidate_errors=0.002, stable_errors=0.002):
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.metrics = counting(
        {Role.CANDIDATE: candidate_rps, Role.STABLE: candidate_rps * 4},
        {Role.CANDIDATE: candidate_errors, Role.STABLE: stable_errors},
    )
    world.set_spec(with_version(spec, "v2"))
    return world


def analysis_started(world: World):
    starts = [now for spec, _, now, d in world.ticks if d.status.current_step_index == 1]
    return starts[0]


def test_queries_count_events_and_trials_since_the_step_began():
    world = rollout()
    world.run_until(lambda w: any(q.role is Role.CANDIDATE for q in w.queries), max_ticks=50)
    q = world.queries[-1]
    assert "increase(speech_requests_total" in q.query and 'outcome="server_error"' in q.query
    assert q.samples_query.startswith("sum(increase(speech_requests_total")
    started = world.decisions[-2].status.step_started_at  # the status the query was planned on
    window = _WINDOW.search(q.query)
    assert window, q.query
    seconds = int(window.group(1))
    assert seconds == pytest.approx((world.now - started).total_seconds(), abs=1)


def test_a_good_candidate_promotes_as_soon_as_the_evidence_is_in():
    world = rollout(candidate_errors=0.002)
    world.run_until_phase(Phase.HEALTHY, max_ticks=200)
    assert world.status.stable_version == "v2"
    promoted = [now for _, _, now, d in world.ticks if d.status.phase is Phase.PROMOTING][0]
    # Well before the step's 10m: the step ended on the verdict, not the clock.
    assert promoted - analysis_started(world) < timedelta(minutes=5)
    gate = world.status.analysis.metrics[0]
    assert gate.verdict.value == "Pass" and gate.samples_needed == 0
    assert gate.upper < 0.02 and gate.lower <= gate.value <= gate.upper
    assert not [e for e in world.events if e.reason == "VerdictUnlikelyInTime"]


def test_a_clearly_worse_candidate_rolls_back_with_the_interval_in_the_message():
    world = rollout(candidate_errors=0.08)
    world.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    assert world.status.reason == "AnalysisFailed"
    assert re.search(r"error-rate 0\.08 \[0\.\d+, 0\.\d+\] > max 0\.02 \(n=\d+\)", world.status.message), (
        world.status.message
    )
    assert world.status.stable_version == "v1"


def test_thin_evidence_stays_inconclusive_then_ends_at_the_longest_wait():
    # 0.2 req/s at 3% against a 2% limit: about 120 requests in 10 minutes, never enough.
    world = rollout(candidate_rps=0.2, candidate_errors=0.03)
    world.run_until(lambda w: w.status.current_step_index == 1 and w.status.analysis.rounds >= 6, max_ticks=200)
    assert world.status.phase is Phase.PROGRESSING
    gate = world.status.analysis.metrics[0]
    assert gate.verdict.value == "Inconclusive" and gate.samples_needed > 0
    assert gate.seconds_to_verdict == pytest.approx(gate.samples_needed / 0.2, rel=0.05)
    assert not [e for e in world.events if e.reason.startswith("Check")]  # no event per round
    # One warning, at admission: at stable's traffic the step cannot get there in time (its first
    # round does not say it again; test_sequential_admission.py has the first-round form).
    (slow,) = [e for e in world.events if e.reason == "VerdictUnlikelyInTime"]
    assert slow.type == "Warning" and "error-rate needs ~" in slow.message
    assert "step 2 (analysis 10m): " in slow.message and "InconclusiveAnalysis" in slow.message
    world.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    assert world.status.reason == "InconclusiveAnalysis"
    assert "no verdict within 10m: error-rate" in world.status.message
    ended = [now for _, _, now, d in world.ticks if d.status.phase is Phase.ROLLING_BACK][0]
    assert ended - analysis_started(world) >= timedelta(minutes=10)


def test_relative_gate_is_judged_on_the_difference_with_stable():
    spec = copy.deepcopy(SEQUENTIAL)
    spec["analysis"]["metrics"] = [
        {"name": "error-rate", "template": "error-rate", "relativeTo": "stable", "maxIncrease": 0.01}
    ]
    worse = rollout(spec, candidate_rps=20, candidate_errors=0.06, stable_errors=0.01)
    worse.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    assert "candidate - stable 0.05 [" in worse.status.message and "> maxIncrease 0.01" in worse.status.message
    same = rollout(spec, candidate_rps=20, candidate_errors=0.01, stable_errors=0.01)
    same.run_until_phase(Phase.HEALTHY, max_ticks=300)
    assert same.status.stable_version == "v2"
    assert same.status.analysis.metrics[0].stable_samples > 0


def test_threshold_mode_status_has_no_sequential_fields():
    world = rollout({**SEQUENTIAL, "analysis": {**SEQUENTIAL["analysis"], "mode": "threshold"}})
    world.run(30)
    assert all(m.lower is None and m.samples_needed is None for m in world.status.analysis.metrics)


def parse(change):
    spec = copy.deepcopy(SEQUENTIAL)
    change(spec)
    return parse_spec(spec, name="speech", namespace="models")


def test_sequential_defaults():
    metrics = SEQUENTIAL["analysis"]["metrics"]
    a = parse(lambda s: s.__setitem__("analysis", {"mode": "sequential", "metrics": metrics})).analysis
    assert a.is_sequential and a.false_promotion_rate == 0.05 and a.false_rollback_rate == 0.05
    assert a.max_duration == timedelta(minutes=30)
    plain = parse_spec(
        {**SEQUENTIAL, "analysis": {"metrics": SEQUENTIAL["analysis"]["metrics"]}}, name="speech", namespace="models"
    ).analysis
    assert plain is not None and not plain.is_sequential


@pytest.mark.parametrize(
    "change, field, text",
    [
        (
            lambda s: s["analysis"].__setitem__("falsePromotionRate", 0),
            "spec.analysis.falsePromotionRate",
            "must be a number in (0, 0.5]",
        ),
        (lambda s: s["analysis"].__setitem__("falsePromotionRate", 0.6), "spec.analysis.falsePromotionRate", "got 0.6"),
        (lambda s: s["analysis"].__setitem__("falseRollbackRate", -0.1), "spec.analysis.falseRollbackRate", "(0, 0.5]"),
        (lambda s: s["analysis"].__setitem__("falseRollbackRate", "5%"), "spec.analysis.falseRollbackRate", "(0, 0.5]"),
        (
            lambda s: s["analysis"].__setitem__("mode", "bayesian"),
            "spec.analysis.mode",
            "must be one of threshold, sequential",
        ),
        (lambda s: s["analysis"].__setitem__("maxDuration", "500ms"), "spec.analysis.maxDuration", "at least"),
        (
            lambda s: s["analysis"]["metrics"][0].__setitem__("maxIncrease", -0.01),
            "spec.analysis.metrics[0].maxIncrease",
            ">= 0",
        ),
        (
            lambda s: s["analysis"]["metrics"][0].__setitem__("template", "latency-p99"),
            "spec.analysis.metrics[0].template",
            "counts events and trials",
        ),
        (
            lambda s: s["analysis"]["metrics"][0].update(template=None, query="up"),
            "spec.analysis.metrics[0].query",
            "got a query",
        ),
        (lambda s: s["analysis"]["metrics"][0].__setitem__("max", 1.5), "spec.analysis.metrics[0].max", "[0, 1]"),
        (
            lambda s: s["strategy"]["canary"]["steps"].__setitem__(1, {"analysis": {"checks": 3}}),
            "spec.strategy.canary.steps[1].analysis.checks",
            "not used with spec.analysis.mode sequential",
        ),
        (
            lambda s: s["strategy"]["canary"].__setitem__("steps", [{"setWeight": 20}]),
            "spec.analysis.mode",
            "needs an analysis step",
        ),
    ],
)
def test_bad_sequential_specs_are_rejected_naming_the_field(change, field, text):
    def apply(spec):
        change(spec)
        for m in spec["analysis"]["metrics"]:
            if m.get("template") is None:
                m.pop("template", None)

    with pytest.raises(SpecError) as err:
        parse(apply)
    assert err.value.field == field, str(err.value)
    assert text in err.value.message


SHADOW = {
    **SEQUENTIAL,
    "strategy": {"shadow": {"mirrorPercent": 100, "duration": "10m", "then": "stop"}},
    "analysis": {
        **SEQUENTIAL["analysis"],
        "metrics": [{"name": "agreement", "template": "shadow-agreement", "min": 0.9}],
    },
}


@pytest.mark.parametrize(
    "agreement, phase, reason", [(0.99, Phase.STOPPED, None), (0.7, Phase.ROLLED_BACK, "AnalysisFailed")]
)
def test_a_sequential_shadow_is_decided_by_its_paired_agreement(agreement, phase, reason):
    world = rollout(SHADOW, candidate_rps=5, candidate_errors=agreement)
    world.run_until_phase(phase, max_ticks=300)
    gate = world.status.analysis.metrics[0]
    assert gate.lower is not None and gate.upper is not None
    if reason:
        assert world.status.reason == reason and "< min 0.9" in world.status.message
    else:
        assert gate.verdict.value == "Pass" and gate.lower > 0.9
        stopped = [now for _, _, now, d in world.ticks if d.status.phase is Phase.STOPPED][0]
        assert stopped - analysis_started(world) < timedelta(minutes=10)


def test_a_sequential_blue_green_previews_and_bakes_on_evidence():
    spec = {
        **SEQUENTIAL,
        "strategy": {"blueGreen": {"previewDuration": "10m", "postPromotionDuration": "10m", "scaleDownDelay": "30s"}},
    }
    world = rollout(spec, candidate_rps=10, candidate_errors=0.001)
    world.run_until(lambda w: w.status.phase is Phase.HEALTHY and w.status.stable_version == "v2", max_ticks=400)
    started = [now for _, _, now, d in world.ticks if d.status.candidate_version == "v2"][0]
    # Both analysis steps (preview and bake) ended on their verdict, long before 2 x 10m.
    assert world.now - started < timedelta(minutes=8)
    assert [h.outcome for h in world.status.history][-1] == "Promoted"
