"""Guards a mutation could remove without any other domain test failing.

Each test here targets one condition found by the mutation run (see tests/README.md): it builds
the situation the guard exists for, calls decide() through the public domain API, and asserts
what the guard protects. Removing or inverting the guard makes the test fail.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from rollout_operator.domain import (
    Criteria,
    DeleteVersion,
    Measurement,
    Phase,
    ScaleDownVersion,
    SpecError,
    TrafficSplit,
    Verdict,
    VersionWeight,
    evaluate,
    parse_spec,
)
from tests.support.domain_sim import CANARY, World, with_version

pytestmark = pytest.mark.unit


def rolling_back_world() -> World:
    """A canary of v2 rolled back by an abort at its first step (phase RollingBack)."""
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    world.request("abort")
    world.tick()
    assert world.status.phase is Phase.ROLLING_BACK
    return world


def test_a_rollback_waits_while_the_stored_status_still_routes_to_the_candidate():
    world = rolling_back_world()
    # The stored status still sends 10% to v2 (the router may be acting on it right now).
    still_routed = TrafficSplit(stable=VersionWeight("v1", 90), candidate=VersionWeight("v2", 10))
    world.status = replace(world.status, traffic=still_routed)
    d = world.tick()
    assert d.status.phase is Phase.ROLLING_BACK
    assert "RolledBack" not in [e.reason for e in d.events]
    assert not [a for a in d.actions if isinstance(a, (ScaleDownVersion, DeleteVersion))]


def test_a_rollback_finishes_once_the_stored_status_routes_nothing_to_the_candidate():
    world = rolling_back_world()
    d = world.tick()
    assert d.status.phase is Phase.ROLLED_BACK
    assert "RolledBack" in [e.reason for e in d.events]


# --- Failed: only a retry request restarts the first deploy --------------------------------

def failed_world() -> World:
    world = World(CANARY, never_ready={"v1"})
    world.run_until_phase(Phase.FAILED)
    return world


def test_a_failed_first_deploy_stays_failed_without_a_retry():
    world = failed_world()
    world.never_ready.clear()  # the pods would come up now, but nobody asked to try again
    world.run(3)
    assert world.status.phase is Phase.FAILED
    assert "Retry" not in world.reasons()


def test_a_retry_restarts_a_failed_first_deploy_and_says_who_asked():
    world = failed_world()
    world.request("retry", by="bob")
    d = world.tick()
    assert d.status.phase is Phase.INITIALIZING
    retry = [e for e in d.events if e.reason == "Retry"]
    assert [e.message for e in retry] == ["retrying v1 (requested by bob)"]


# --- Relative thresholds: the bound itself passes, as it does for max/min ------------------
# Values exact in binary, so the delta equals the bound exactly.

def test_a_candidate_exactly_max_increase_above_stable_passes():
    criteria = Criteria(relative_to="stable", max_increase=0.25, min_samples=50)
    result = evaluate(Measurement.of(0.5, 100), criteria, Measurement.of(0.25, 100))
    assert result.verdict is Verdict.PASS, result.message


def test_a_candidate_exactly_max_decrease_below_stable_passes():
    criteria = Criteria(relative_to="stable", max_decrease=0.25, min_samples=50)
    result = evaluate(Measurement.of(0.5, 100), criteria, Measurement.of(0.75, 100))
    assert result.verdict is Verdict.PASS, result.message


# --- Custom queries checked at admission ------------------------------------------------------

def with_query(query: str) -> dict:
    spec = copy.deepcopy(CANARY)
    spec["analysis"]["metrics"] = [{"name": "custom", "query": query, "max": 1}]
    return spec


def parse(spec: dict):
    return parse_spec(spec, name="speech", namespace="models")


@pytest.mark.parametrize("query", [
    '(speech_requests_total{version="{{candidate}}"}[{{window}}])',
    '((speech_requests_total[1m]))',
])
def test_a_range_vector_in_parentheses_is_still_rejected(query):
    with pytest.raises(SpecError) as err:
        parse(with_query(query))
    assert "not a range vector" in err.value.message


def test_a_variable_that_selects_nothing_is_rejected_even_when_the_query_parses():
    # In a comment the variable still parses once rendered, next to a quoted label value that
    # is not it: only the check that some label value holds the variable rejects it.
    with pytest.raises(SpecError) as err:
        parse(with_query('sum(x{job="a"}) # {{model}}'))
    assert "{{model}} must be inside a double-quoted label value" in err.value.message


@pytest.mark.parametrize("query", [
    # An `or` group of label matchers (Prometheus 3): its values count as quoted.
    'sum(rate(x{version="{{candidate}}" or version="{{stable}}"}[1m]))',
    # A string literal argument is a double-quoted value too.
    'label_replace(x{job="a"}, "dst", "{{candidate}}", "src", "(.*)")',
])
def test_a_variable_in_any_double_quoted_value_is_accepted(query):
    spec = parse(with_query(query))
    assert spec.metrics[0].query == query
