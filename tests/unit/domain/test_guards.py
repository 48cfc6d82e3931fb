"""Guards a mutation could remove without any other domain test failing.

Each test here targets one condition found by the mutation run (see tests/README.md): it builds
the situation the guard exists for, calls decide() through the public domain API, and asserts
what the guard protects. Removing or inverting the guard makes the test fail.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta

import pytest

from rollout_operator.domain import (
    Criteria,
    DeleteVersion,
    EnsurePreviewService,
    EnsureVersion,
    Measurement,
    Phase,
    RemovePreviewService,
    ScaleDownVersion,
    SetTraffic,
    SpecError,
    TrafficSplit,
    Verdict,
    VersionWeight,
    WorkloadState,
    evaluate,
    parse_spec,
)
from tests.support.domain_sim import BLUE_GREEN, CANARY, SHADOW, World, with_version

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


@pytest.mark.parametrize(
    "query",
    [
        '(speech_requests_total{version="{{candidate}}"}[{{window}}])',
        "((speech_requests_total[1m]))",
    ],
)
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


@pytest.mark.parametrize(
    "query",
    [
        # An `or` group of label matchers (Prometheus 3): its values count as quoted.
        'sum(rate(x{version="{{candidate}}" or version="{{stable}}"}[1m]))',
        # A string literal argument is a double-quoted value too.
        'label_replace(x{job="a"}, "dst", "{{candidate}}", "src", "(.*)")',
    ],
)
def test_a_variable_in_any_double_quoted_value_is_accepted(query):
    spec = parse(with_query(query))
    assert spec.metrics[0].query == query


# --- Standing actions and cleanup ---------------------------------------------------------------


def rolled_out(spec: dict, until) -> World:
    """A world where v1 is Healthy, then spec.model.version moved to v2, run until `until`."""
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(spec, "v2"))
    world.run_until(until)
    return world


def test_the_traffic_action_carries_the_shadow_mirror():
    world = rolled_out(SHADOW, lambda w: w.status.traffic.mirror is not None)
    d = world.tick()
    (traffic,) = [a for a in d.actions if isinstance(a, SetTraffic)]
    assert traffic.mirror == world.status.traffic.mirror
    assert traffic.mirror is not None and traffic.mirror.version == "v2" and traffic.mirror.percent == 50


def test_promoting_from_a_smaller_preview_ensures_the_candidate_at_full_size():
    spec = {**BLUE_GREEN, "strategy": {"blueGreen": {"autoPromote": False, "previewReplicas": 1}}}
    world = rolled_out(spec, lambda w: w.status.step_started_at is not None)
    assert world.workloads["v2"].desired_replicas == 1  # the preview runs one pod
    # Two pods are Ready all the same (scaled up by hand, say): promoteFull is allowed.
    world.workloads["v2"] = WorkloadState(True, 2, 2, True)
    world.request("promoteFull")
    d = world.tick()
    assert d.status.phase is Phase.PROMOTING
    ensured = {a.version: a.replicas for a in d.actions if isinstance(a, EnsureVersion)}
    assert ensured["v2"] == 2  # not back to the preview's one pod while it takes all traffic


def test_after_a_blue_green_rollback_the_preview_service_is_removed_not_ensured():
    world = rolled_out(BLUE_GREEN, lambda w: w.status.step_started_at is not None)
    world.request("abort")
    world.run_until_phase(Phase.ROLLED_BACK)
    d = world.tick()
    assert not [a for a in d.actions if isinstance(a, EnsurePreviewService)]


def test_a_rolled_back_candidate_is_scaled_down_once_even_with_one_replica():
    spec = {**CANARY, "server": {"replicas": 1}}
    world = rolled_out(spec, lambda w: w.status.traffic.candidate_weight == 10)
    world.request("abort")
    world.run_until_phase(Phase.ROLLED_BACK)
    world.run(3)
    downs = [a for d in world.decisions for a in d.actions if a == ScaleDownVersion("v2")]
    assert len(downs) == 1  # scaled to 0 once; never asked again once it is at 0
    assert world.workloads["v2"].desired_replicas == 0


def test_the_previous_stable_is_scaled_down_after_a_promotion_even_with_one_replica():
    spec = {**CANARY, "server": {"replicas": 1}}
    world = rolled_out(spec, lambda w: w.status.phase is Phase.HEALTHY and w.status.stable_version == "v2")
    world.run(2)
    assert world.workloads["v1"].desired_replicas == 0


def test_the_previous_stable_is_scaled_down_at_the_moment_its_delay_ends():
    world = rolled_out(BLUE_GREEN, lambda w: w.status.phase is Phase.HEALTHY and w.status.stable_version == "v2")
    due = world.status.scale_down_at
    world.run_until(lambda w: any(a == ScaleDownVersion("v1") for a in w.decisions[-1].actions))
    assert world.now == due
    assert world.decisions[-1].requeue_after == timedelta(seconds=60)  # nothing left to wake for


def test_a_version_still_routed_by_the_stored_status_does_not_stop_the_cleanup_of_others():
    world = rolling_back_world()
    # An old version of this rollout that nothing needs, sorting after the candidate.
    world.workloads["v9"] = WorkloadState(True, 2, 2, True)
    still_routed = TrafficSplit(stable=VersionWeight("v1", 90), candidate=VersionWeight("v2", 10))
    world.status = replace(world.status, traffic=still_routed)
    d = world.tick()
    assert DeleteVersion("v9") in d.actions
    assert not [a for a in d.actions if isinstance(a, (ScaleDownVersion, DeleteVersion)) and a.version == "v2"]


# --- Requeue ------------------------------------------------------------------------------------

FOLLOW_UP = timedelta(seconds=1)


def test_a_rollback_still_waiting_for_its_traffic_is_followed_up_quickly():
    world = rolling_back_world()
    still_routed = TrafficSplit(stable=VersionWeight("v1", 90), candidate=VersionWeight("v2", 10))
    world.status = replace(world.status, traffic=still_routed)
    d = world.tick()
    assert d.status.phase is Phase.ROLLING_BACK and d.requeue_after == FOLLOW_UP


def test_moving_to_the_next_step_is_followed_up_quickly():
    world = rolled_out(CANARY, lambda w: w.status.current_step_index == 1)
    before = world.status.current_step_index
    world.run_until(lambda w: w.status.current_step_index != before)
    assert world.status.phase is Phase.PROGRESSING
    assert world.decisions[-1].requeue_after == FOLLOW_UP


# Blue-green's first step gives the candidate no user traffic: its traffic is "at target" while
# it is still not Ready, so only the not-started check keeps the poll going.
@pytest.mark.parametrize("spec", [CANARY, BLUE_GREEN], ids=["canary", "blue-green"])
def test_a_candidate_not_ready_yet_is_polled_every_few_seconds(spec):
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.never_ready.add("v2")
    world.set_spec(with_version(spec, "v2"))
    world.run(3)
    assert world.status.phase is Phase.PROGRESSING and world.status.step_started_at is None
    assert world.decisions[-1].requeue_after == timedelta(seconds=5)


# --- Check rounds -------------------------------------------------------------------------------


# Blue-green counts as exposed once its step started (the preview Service has test traffic), so
# only the not-started check keeps a preview that is not Ready from being measured.
@pytest.mark.parametrize("spec", [CANARY, BLUE_GREEN], ids=["canary", "blue-green"])
def test_no_check_runs_while_the_candidate_takes_no_traffic_yet(spec):
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.never_ready.add("v2")
    world.set_spec(with_version(spec, "v2"))
    world.run(10)
    assert world.status.phase is Phase.PROGRESSING
    assert world.queries == []


def test_a_check_round_renders_the_sample_count_query_for_the_candidate():
    world = rolled_out(CANARY, lambda w: bool(w.queries))
    q = world.queries[0]
    assert q.version == "v2" and q.samples_query
    assert 'version="v2"' in q.samples_query and "{{" not in q.samples_query


def test_a_fixed_mode_check_reads_the_analysis_window_not_the_time_since_the_step_began():
    # CANARY: window 1m, checks every 30s. Only sequential mode counts since the step began.
    world = rolled_out(CANARY, lambda w: bool(w.queries))
    for q in world.queries:
        assert "[1m]" in q.query and "[1m]" in q.samples_query, q
        assert "[30s]" not in q.query, q


def test_a_blue_green_rollout_at_rest_asks_for_no_preview_removal():
    world = World(BLUE_GREEN)
    world.run_until_phase(Phase.HEALTHY)
    d = world.tick()
    assert not [a for a in d.actions if isinstance(a, (RemovePreviewService, EnsurePreviewService))]
