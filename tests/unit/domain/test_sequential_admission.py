"""The admission forecast of sequential mode: at the tick that starts a rollout, one warning when
an analysis step cannot reach a verdict within its longest wait at stable's traffic now."""

import copy
import re
from typing import Any

import pytest

from rollout_operator.domain import Measurement, Phase, QueryRequest, Role
from rollout_operator.domain.sequential import Outcome, Side, evaluate_rate
from rollout_operator.domain.sequential_gates import compute_rates
from tests.support.domain_sim import World, with_version

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "model": {"name": "speech-commands", "version": "v1", "uri": "file:///models/v1.onnx"},
    "strategy": {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"duration": "10m"}}]}},
    "analysis": {
        "mode": "sequential",
        "interval": "30s",
        "window": "1m",
        "falsePromotionRate": 0.05,
        "falseRollbackRate": 0.05,
        "metrics": [{"name": "error-rate", "template": "error-rate", "max": 0.02}],
    },
    "progressDeadline": "5m",
}
_WINDOW = re.compile(r"\[(\d+)([sm])\]")
_FORECAST = re.compile(
    r"step 2 \(analysis 10m\): error-rate needs ~(\d+) samples, about (\d+) "
    r"expected at ([\d.]+) req/s × 20% weight; expect InconclusiveAnalysis"
)


def steady(total_rps: float, error_rate: float, candidate_share: float = 0.2):
    """Prometheus with every version at `error_rate`: stable's queries see all `total_rps` (as
    before the rollout), the candidate's its 20% weight of it."""

    def answer(q: QueryRequest) -> Measurement:
        window = _WINDOW.search(q.query)
        assert window, q.query
        amount, unit = window.groups()
        rps = total_rps * (candidate_share if q.role is Role.CANDIDATE else 1.0)
        trials = rps * int(amount) * (60 if unit == "m" else 1)
        return Measurement.of(trials * error_rate, samples=int(trials))

    return answer


def start(spec=SPEC, metrics=None) -> World:
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.metrics = metrics or steady(2.0, 0.002)
    world.set_spec(with_version(spec, "v2"))
    return world


def admission(world: World):
    """The decision of the tick that moved Healthy -> Progressing, and the queries it ran."""
    world.run_until(lambda w: w.status.phase is Phase.PROGRESSING)
    (_, obs, _, decision) = world.ticks[-1]
    return decision, obs


def forecasts(world: World):
    return [e for e in world.events if e.reason == "VerdictUnlikelyInTime"]


def samples_to_pass(value: float, threshold: float, analysis_steps: int = 1) -> int:
    """Brute force: the fewest trials at which `value` passes `max threshold` (doubling, then
    bisection), straight from sequential.evaluate_rate at the rates the rounds use."""
    spec = World(SPEC).spec
    rates = compute_rates(spec.analysis, analysis_steps)

    def passes(n: int) -> bool:
        return evaluate_rate(value * n, n, threshold, Side.AT_MOST, rates).outcome is Outcome.PASS

    high = 1
    while not passes(high):
        high *= 2
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if passes(mid) else (mid, high)
    return high


def test_low_traffic_warns_at_admission_with_the_numbers():
    world = start(metrics=steady(2.0, 0.002))
    decision, obs = admission(world)
    stable = obs.measurements["error-rate"].stable
    assert stable is not None and stable.samples == 120  # 2 req/s over the 1m window
    (event,) = [e for e in decision.events if e.reason == "VerdictUnlikelyInTime"]
    assert event.type == "Warning"
    assert any(e.reason == "RolloutStarted" for e in decision.events)  # the same tick
    match = _FORECAST.search(event.message)
    assert match, event.message
    needed, expected, rate = int(match.group(1)), int(match.group(2)), float(match.group(3))
    assert rate == 2.0
    assert expected == 240  # 2 req/s x 20% x 600 s
    # The estimate's own search stops within 10%; never below what a verdict needs.
    truth = samples_to_pass(0.002, 0.02)
    assert truth > expected
    assert truth <= needed <= truth * 1.12, (needed, truth)
    assert decision.status.analysis.metrics[0].warned_steps == (1,)


def test_high_traffic_does_not_warn():
    world = start(metrics=steady(200.0, 0.002))
    decision, obs = admission(world)
    assert obs.measurements["error-rate"].stable.samples == 12000  # the forecast was asked
    assert not forecasts(world)
    assert decision.status.analysis.metrics[0].warned_steps == ()


def test_the_warning_is_not_repeated_at_the_steps_first_round_or_after():
    world = start(metrics=steady(2.0, 0.002))
    admission(world)
    assert len(forecasts(world)) == 1
    # Through the analysis step's first rounds (status goes through JSON every tick: a restart
    # reads the same memory) until the step ends on its longest wait.
    world.run_until(lambda w: w.status.current_step_index == 1 and w.status.analysis.rounds >= 3, max_ticks=200)
    gate = world.status.analysis.metrics[0]
    assert gate.verdict is not None and gate.verdict.value == "Inconclusive" and gate.warned_steps == (1,)
    world.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    assert world.status.reason == "InconclusiveAnalysis"
    (only,) = forecasts(world)
    assert _FORECAST.search(only.message)


def test_the_first_round_still_warns_when_admission_had_nothing_to_go_on():
    def metrics(q: QueryRequest) -> Measurement:
        if q.role is Role.STABLE:
            return Measurement.no_data()
        return steady(0.4, 0.002, candidate_share=1.0)(q)

    world = start(metrics=metrics)
    admission(world)
    assert not forecasts(world)
    world.run_until(lambda w: w.status.current_step_index == 1 and w.status.analysis.rounds >= 2, max_ticks=200)
    (first_round,) = forecasts(world)
    assert "but analysis 10m waits at most 10m" in first_round.message


def test_threshold_mode_does_not_forecast():
    threshold = copy.deepcopy(SPEC)
    threshold["analysis"]["mode"] = "threshold"
    for key in ("falsePromotionRate", "falseRollbackRate"):
        del threshold["analysis"][key]
    world = start(threshold, metrics=steady(2.0, 0.002))
    decision, obs = admission(world)
    assert not obs.measurements  # nothing planned at admission
    assert not forecasts(world)
    # The same traffic in sequential mode does warn: it is the mode that decides.
    sequential = start(metrics=steady(2.0, 0.002))
    admission(sequential)
    assert len(forecasts(sequential)) == 1


@pytest.mark.parametrize(
    "baseline", [Measurement.no_data(), Measurement.of(0.0, samples=0), Measurement.error("connection refused")]
)
def test_no_stable_rate_says_nothing(baseline):
    world = start(metrics=lambda q: baseline)
    decision, obs = admission(world)
    assert obs.measurements["error-rate"].stable == baseline  # asked, and got nothing usable
    assert not [e for e in decision.events if e.reason == "VerdictUnlikelyInTime"]
    assert decision.status.analysis.metrics[0].warned_steps == ()


def test_shadow_counts_stables_requests_at_the_mirror_share():
    spec = copy.deepcopy(SPEC)
    spec["strategy"] = {"shadow": {"mirrorPercent": 50, "duration": "5m", "then": "stop"}}
    spec["analysis"]["metrics"] = [{"name": "agreement", "template": "shadow-agreement", "min": 0.99}]
    world = start(spec, metrics=steady(0.1, 0.0))
    decision, obs = admission(world)
    (query,) = [q for q in world.queries if q.role is Role.STABLE]
    # No comparisons exist before the candidate does: the forecast counts stable's requests.
    assert query.query.startswith("sum(increase(speech_requests_total{") and 'version="v1"' in query.query
    assert obs.measurements["agreement"].stable.samples == 6
    (event,) = [e for e in decision.events if e.reason == "VerdictUnlikelyInTime"]
    # 0.1 req/s x 50% mirror x 300 s = 15 comparisons; even full agreement needs more than that.
    match = re.search(
        r"step 2 \(analysis 5m\): agreement needs ~(\d+) samples, about 15 expected "
        r"at 0\.1 req/s × 50% mirror",
        event.message,
    )
    assert match, event.message
    assert int(match.group(1)) > 15
