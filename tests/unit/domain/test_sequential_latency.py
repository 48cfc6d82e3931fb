"""The slow-requests template (issue 14): the share of requests slower than a latency bound the
gate sets, as counts since the step began in sequential mode and as a rate ratio over the
window in threshold mode; the bound must be a bucket edge of the server's latency histogram."""

import copy
import re
from typing import Any

import pytest

from rollout_operator.domain import Measurement, Phase, QueryRequest, Role, SpecError, parse_spec
from rollout_operator.domain.sequential_gates import SEQUENTIAL_TEMPLATES
from rollout_operator.domain.templates import LATENCY_BOUNDS, TEMPLATES, check_query, render
from tests.support.domain_sim import World, with_version

pytestmark = pytest.mark.unit

VARS = dict(
    namespace="models",
    rollout="speech",
    model="speech-commands",
    version="v2",
    candidate="v2",
    stable="v1",
    window="90s",
    bound="0.25",
)
SLOW = {"name": "slow", "template": "slow-requests", "bound": 0.5, "max": 0.05}
SEQUENTIAL: dict[str, Any] = {
    "model": {"name": "speech-commands", "version": "v1", "uri": "file:///models/v1.onnx"},
    "strategy": {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"duration": "10m"}}]}},
    "analysis": {
        "mode": "sequential",
        "interval": "30s",
        "falsePromotionRate": 0.05,
        "falseRollbackRate": 0.05,
        "metrics": [SLOW],
    },
    "progressDeadline": "5m",
}
_WINDOW = re.compile(r"\[(\d+)([sm])\]")
_COUNT = 'sum(increase(speech_request_duration_seconds_count{namespace="models",model="speech-commands",version="v2",stage="total"}[90s]))'
_FAST = (
    'sum(increase(speech_request_duration_seconds_bucket{namespace="models",model="speech-commands",version="v2",'
    'stage="total",le="0.25"}[90s]))'
)


def parse(spec: dict[str, Any]):
    return parse_spec(spec, name="speech", namespace="models")


def with_metric(metric: dict[str, Any], mode: str = "sequential") -> dict[str, Any]:
    spec = copy.deepcopy(SEQUENTIAL)
    spec["analysis"]["metrics"] = [metric]
    spec["analysis"]["mode"] = mode
    return spec


def test_sequential_slow_requests_counts_requests_above_the_bound_since_the_step_began():
    t = SEQUENTIAL_TEMPLATES["slow-requests"]
    assert render(t.query, VARS) == f"({_COUNT} - {_FAST})"
    assert render(t.samples, VARS) == _COUNT
    check_query(t.query, t.arguments)
    check_query(t.samples, t.arguments)


def test_threshold_slow_requests_is_the_same_ratio_over_the_window():
    t = TEMPLATES["slow-requests"]
    rate_count = _COUNT.replace("increase(", "rate(")
    assert render(t.query, VARS) == f"({rate_count} - {_FAST.replace('increase(', 'rate(')}) / {rate_count}"
    assert render(t.samples, VARS) == _COUNT
    check_query(t.query, t.arguments)


def test_a_bucket_edge_parses_in_both_modes():
    for mode in ("sequential", "threshold"):
        (metric,) = parse(with_metric(SLOW, mode)).metrics
        assert metric.template == "slow-requests" and metric.bound == 0.5
    (metric,) = parse(with_metric({**SLOW, "bound": 1})).metrics  # an integer edge is the edge 1.0
    assert metric.bound == 1.0


def test_relative_to_stable_parses_like_the_other_rate_templates():
    gate = {"name": "slow", "template": "slow-requests", "bound": 0.1, "relativeTo": "stable", "maxIncrease": 0.02}
    (metric,) = parse(with_metric(gate)).metrics
    assert metric.relative_to == "stable" and metric.max_increase == 0.02 and metric.bound == 0.1


ALLOWED = "0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5"


@pytest.mark.parametrize("bound", [0.3, 0.75, 10, 0, -0.5, "0.5", True])
@pytest.mark.parametrize("mode", ["sequential", "threshold"])
def test_a_bound_between_edges_is_rejected_naming_the_field_and_the_edges(bound, mode):
    with pytest.raises(SpecError) as err:
        parse(with_metric({**SLOW, "bound": bound}, mode))
    assert err.value.field == "spec.analysis.metrics[0].bound", str(err.value)
    if not isinstance(bound, (str, bool)):
        assert ALLOWED in str(err.value) and "speech_request_duration_seconds" in str(err.value)


def test_slow_requests_needs_a_bound():
    gate = {k: v for k, v in SLOW.items() if k != "bound"}
    with pytest.raises(SpecError) as err:
        parse(with_metric(gate))
    assert err.value.field == "spec.analysis.metrics[0].bound" and ALLOWED in str(err.value)


def test_a_bound_on_another_template_is_rejected():
    with pytest.raises(SpecError) as err:
        parse(with_metric({"name": "e", "template": "error-rate", "max": 0.02, "bound": 0.5}))
    assert err.value.field == "spec.analysis.metrics[0].bound" and "slow-requests" in str(err.value)


def test_every_allowed_bound_renders_its_le_label():
    for edge, le in LATENCY_BOUNDS.items():
        (metric,) = parse(with_metric({**SLOW, "bound": edge})).metrics
        assert metric.bound == edge and float(le) == edge


# --- through decide() -----------------------------------------------------------------------


def counting(rps: dict[Role, float], slow_share: dict[Role, float]):
    """A Prometheus that answers slow-requests count queries: trials at `rps` over the query's
    window, events the `slow_share` of them (only for the count-minus-bucket query at le 0.5)."""

    def answer(q: QueryRequest) -> Measurement:
        assert 'le="0.5"' in q.query and "speech_request_duration_seconds_count" in q.query, q.query
        assert q.samples_query.startswith("sum(increase(speech_request_duration_seconds_count"), q.samples_query
        window = _WINDOW.search(q.query)
        assert window, q.query
        amount, unit = window.groups()
        trials = rps[q.role] * int(amount) * (60 if unit == "m" else 1)
        return Measurement.of(trials * slow_share[q.role], samples=int(trials))

    return answer


def rollout(spec: dict[str, Any], candidate_slow: float, stable_slow: float) -> World:
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.metrics = counting(
        {Role.CANDIDATE: 10.0, Role.STABLE: 40.0}, {Role.CANDIDATE: candidate_slow, Role.STABLE: stable_slow}
    )
    world.set_spec(with_version(spec, "v2"))
    return world


def test_a_slower_candidate_rolls_back_with_the_interval():
    world = rollout(SEQUENTIAL, candidate_slow=0.12, stable_slow=0.01)
    world.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    assert re.search(r"slow 0\.12 \[0\.\d+, 0\.\d+\] > max 0\.05 \(n=\d+\)", world.status.message), world.status.message


def test_an_equally_fast_candidate_promotes():
    world = rollout(SEQUENTIAL, candidate_slow=0.01, stable_slow=0.01)
    world.run_until_phase(Phase.HEALTHY, max_ticks=200)
    assert world.status.stable_version == "v2"


RELATIVE = with_metric(
    {"name": "slow", "template": "slow-requests", "bound": 0.5, "relativeTo": "stable", "maxIncrease": 0.02}
)


def test_relative_to_stable_fails_a_slower_candidate_and_passes_an_equal_one():
    worse = rollout(RELATIVE, candidate_slow=0.10, stable_slow=0.01)
    worse.run_until_phase(Phase.ROLLED_BACK, max_ticks=200)
    assert "candidate - stable 0.09 [" in worse.status.message and "> maxIncrease 0.02" in worse.status.message
    same = rollout(RELATIVE, candidate_slow=0.01, stable_slow=0.01)
    same.run_until_phase(Phase.HEALTHY, max_ticks=200)
    assert same.status.stable_version == "v2"


def ratio(slow_share: dict[Role, float], rps: float = 10.0):
    """A Prometheus that answers the threshold-mode slow-requests ratio over a 1m window."""

    def answer(q: QueryRequest) -> Measurement:
        assert 'le="0.5"' in q.query and q.query.startswith("(sum(rate(speech_request_duration_seconds_count"), q.query
        assert q.samples_query.startswith("sum(increase(speech_request_duration_seconds_count"), q.samples_query
        return Measurement.of(slow_share[q.role], samples=int(rps * 60))

    return answer


THRESHOLD = copy.deepcopy(RELATIVE)
THRESHOLD["analysis"]["mode"] = "threshold"
THRESHOLD["strategy"]["canary"]["steps"] = [{"setWeight": 20}, {"analysis": {"checks": 2}}]


def test_threshold_mode_relative_to_stable_renders_the_bound_for_both_versions():
    for candidate, phase in ((0.10, Phase.ROLLED_BACK), (0.01, Phase.HEALTHY)):
        world = World(THRESHOLD)
        world.run_until_phase(Phase.HEALTHY)
        world.metrics = ratio({Role.CANDIDATE: candidate, Role.STABLE: 0.01})
        world.set_spec(with_version(THRESHOLD, "v2"))
        world.run_until_phase(phase, max_ticks=200)
        roles = {q.role for q in world.queries}
        assert roles == {Role.CANDIDATE, Role.STABLE}
        assert world.status.stable_version == ("v1" if phase is Phase.ROLLED_BACK else "v2")
