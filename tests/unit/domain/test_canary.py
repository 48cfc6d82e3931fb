"""Canary rollouts through decide(): first deploy, steps, promotion, rollback on failing gates."""

from datetime import timedelta

import pytest

from rollout_operator.domain import (
    DeleteVersion,
    EnsureVersion,
    Measurement,
    Phase,
    ScaleDownVersion,
    SetTraffic,
    Verdict,
    WorkloadState,
)
from tests.support.domain_sim import CANARY, World, condition_of, with_version

pytestmark = pytest.mark.unit


def healthy_world(spec=CANARY) -> World:
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    return world


def test_first_deploy_routes_nothing_until_ready_then_serves_100_percent():
    world = World(CANARY, never_ready={"v1"})
    d = world.tick()
    assert world.status.phase is Phase.INITIALIZING
    assert world.status.traffic.stable is None
    assert EnsureVersion("v1", "file:///models/v1.onnx", 2, "modelrollout/model-server:dev") in d.actions
    assert not any(isinstance(a, SetTraffic) for a in d.actions)
    world.never_ready.clear()
    world.run_until_phase(Phase.HEALTHY)
    status = world.status  # a fresh name: mypy would hold the `stable is None` narrowed above
    stable = status.traffic.stable
    assert stable is not None and stable.version == "v1" and stable.weight == 100
    assert world.status.candidate_version is None
    assert condition_of(world.status, "Ready").status == "True"
    assert condition_of(world.status, "Promoted").status == "True"


def test_first_version_never_ready_fails_at_the_progress_deadline():
    world = World(CANARY, never_ready={"v1"})
    world.run_until_phase(Phase.FAILED)
    assert world.status.reason == "ProgressDeadlineExceeded"
    started_at = world.status.rollout_started_at
    assert started_at is not None and world.now - started_at >= timedelta(minutes=5)
    assert "0/2 pods ready" in world.status.message
    assert condition_of(world.status, "Ready").status == "False"


def test_version_change_walks_every_step_and_promotes_once():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    weights = []

    def record_weight(w: World) -> bool:
        weights.append(w.status.traffic.candidate_weight)
        return w.status.phase is Phase.HEALTHY

    world.run_until(record_weight, max_ticks=100)
    assert world.status.stable_version == "v2"
    assert world.status.previous_stable_version == "v1"
    # Traffic moved through the canary weights in order, then all of it to v2.
    seen = [w for i, w in enumerate(weights) if i == 0 or weights[i - 1] != w]
    assert seen == [0, 10, 50, 100, 0]
    assert [h.outcome for h in world.status.history] == ["Promoted", "Promoted"]
    assert world.reasons().count("Promoted") == 1
    assert condition_of(world.status, "Promoted").status == "True"
    assert condition_of(world.status, "Promoted").reason == "Promoted"
    # v1 is scaled to zero (kept), not deleted, once nothing routes to it.
    world.run(2)
    assert world.workloads["v1"].desired_replicas == 0


def test_each_traffic_step_waits_for_a_passing_check_at_that_weight():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    entered = world.now
    world.run_until(lambda w: w.status.current_step_index == 1)
    # Step 1 (setWeight 10) completes only after one interval and a pass.
    assert world.now - entered >= timedelta(seconds=30)
    assert world.status.analysis.last_verdict is Verdict.PASS
    assert all(q.version == "v2" for q in world.queries)


def test_failing_gate_rolls_back_at_failure_limit_in_the_same_write_as_rolling_back():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v3"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    world.metrics = lambda q: Measurement.of(0.84 if q.metric == "p99-latency" else 0.001, 400)
    world.run_until_phase(Phase.ROLLING_BACK)
    s = world.status
    assert s.traffic.candidate is None and s.traffic.stable is not None and s.traffic.stable.weight == 100
    assert s.reason == "AnalysisFailed"
    assert "p99-latency 0.84 > max 0.5 (n=400) (2/2 failures)" in s.message
    rollback_event = [e for e in world.events if e.reason == "AnalysisFailed"][-1]
    assert "rolling back to v1" in rollback_event.message and rollback_event.type == "Warning"
    # The first failure (1/2) only warned; the candidate kept its share meanwhile.
    assert any(e.reason == "CheckFail" and "(1/2 failures)" in e.message for e in world.events)
    # Scale-down waits for the next tick (after the stable-only status is persisted).
    assert not any(isinstance(a, ScaleDownVersion) for a in world.decisions[-1].actions)
    world.tick()
    assert ScaleDownVersion("v3") in world.decisions[-1].actions
    assert world.status.phase is Phase.ROLLED_BACK
    assert condition_of(world.status, "RolledBack").status == "True"
    assert condition_of(world.status, "RolledBack").reason == "AnalysisFailed"
    assert world.status.history[-1].outcome == "RolledBack"
    # It stays rolled back while the spec still names v3: no new attempt on its own.
    world.run(5)
    assert world.status.phase is Phase.ROLLED_BACK and world.status.stable_version == "v1"
    assert world.workloads["v3"].desired_replicas == 0  # kept for a quick retry


def test_prometheus_outage_never_promotes_and_rolls_back_at_the_error_limit():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    world.metrics = lambda q: Measurement.error("connection refused")
    world.run_until(lambda w: w.status.phase is not Phase.PROGRESSING, max_ticks=100)
    assert world.status.phase is Phase.ROLLING_BACK
    assert world.status.reason == "AnalysisError"
    assert "3/3 consecutive errors" in world.status.message
    assert max(d.status.traffic.candidate_weight for d in world.decisions) == 10
    assert "Promoted" not in world.reasons()[1:]


def test_an_error_streak_broken_by_a_good_answer_does_not_roll_back():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    calls = {"n": 0}

    def flaky(q):
        calls["n"] += 1
        # Two error rounds, then a good one, repeated: never three in a row.
        return (
            Measurement.error("timeout")
            if ((calls["n"] - 1) // 2) % 3 != 2
            else Measurement.of(0.001 if q.metric == "error-rate" else 0.2, 500)
        )

    world.metrics = flaky
    world.run_until_phase(Phase.HEALTHY, max_ticks=300)
    assert world.status.stable_version == "v2"
    assert any(e.reason == "CheckError" and "(2/3 errors)" in e.message for e in world.events)


def test_candidate_never_ready_rolls_back_with_the_deadline_reason():
    world = healthy_world()
    world.never_ready.add("v2")
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until_phase(Phase.ROLLED_BACK)
    assert world.status.reason == "ProgressDeadlineExceeded"
    assert "v2 not Ready within progressDeadline (0/2 pods ready)" in world.status.message
    assert all(d.status.traffic.candidate_weight == 0 for d in world.decisions)


def test_too_few_samples_hold_the_step_and_end_at_the_inconclusive_limit():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    world.metrics = lambda q: Measurement.of(0.0, samples=12)
    world.run_until(lambda w: w.status.phase is not Phase.PROGRESSING, max_ticks=100)
    assert world.status.reason == "InconclusiveAnalysis"
    assert "12 samples < minSamples 50" in world.status.message
    assert max(d.status.current_step_index or 0 for d in world.decisions) == 0


def test_candidate_losing_all_pods_loses_its_traffic_until_it_recovers():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    world.workloads["v2"] = WorkloadState(True, 2, 0, True)
    world.never_ready.add("v2")
    world.tick(timedelta(seconds=1))
    assert world.status.traffic.candidate_weight == 0
    world.never_ready.clear()
    world.workloads["v2"] = WorkloadState(True, 2, 2, True)
    world.tick(timedelta(seconds=1))
    assert world.status.traffic.candidate_weight == 10


def test_new_version_during_rollout_abandons_candidate_then_starts_the_new_one():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 50)
    world.set_spec(with_version(CANARY, "v3"))
    world.tick(timedelta(seconds=1))
    assert world.status.phase is Phase.ROLLING_BACK and world.status.reason == "Superseded"
    assert world.status.traffic.candidate is None
    world.tick()
    status = world.status  # a fresh name: mypy would hold world.status.phase at ROLLING_BACK from above
    assert status.phase is Phase.PROGRESSING and status.candidate_version == "v3"
    assert DeleteVersion("v2") in world.decisions[-1].actions
    assert world.status.history[-1].outcome == "Superseded"
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v3" and "v2" not in world.workloads


def test_spec_reverted_to_stable_mid_rollout_returns_to_healthy():
    world = healthy_world()
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    world.set_spec(with_version(CANARY, "v1"))
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v1" and world.status.candidate_version is None
    assert world.status.traffic.stable is not None and world.status.traffic.stable.weight == 100


def test_old_superseded_versions_are_deleted_and_one_previous_is_kept():
    world = healthy_world()
    for version in ("v2", "v3"):
        world.set_spec(with_version(CANARY, version))

        def promoted(w: World, v: str = version) -> bool:
            return w.status.phase is Phase.HEALTHY and w.status.stable_version == v

        world.run_until(promoted)
    world.run(2)
    assert set(world.workloads) == {"v2", "v3"}
    assert world.workloads["v2"].desired_replicas == 0


def test_relative_threshold_fails_when_candidate_is_worse_than_stable_by_more_than_allowed():
    spec = {
        **CANARY,
        "analysis": {
            **CANARY["analysis"],
            "metrics": [{"name": "unknown", "template": "unknown-rate", "relativeTo": "stable", "maxIncrease": 0.05}],
        },
    }
    world = healthy_world(spec)
    world.set_spec(with_version(spec, "v2"))
    world.metrics = lambda q: Measurement.of(0.31 if q.version == "v2" else 0.12, 800)
    world.run_until_phase(Phase.ROLLING_BACK, max_ticks=100)
    assert "0.31 vs stable 0.12 (delta +0.19) > maxIncrease 0.05" in world.status.message
    roles = {(q.version, q.role.value) for q in world.queries}
    assert roles == {("v2", "candidate"), ("v1", "stable")}
    same = [q for q in world.queries if q.role.value == "stable"][0]
    cand = [q for q in world.queries if q.role.value == "candidate"][0]
    assert same.query.replace('version="v1"', 'version="v2"') == cand.query


def test_a_step_held_by_inconclusive_checks_ends_at_its_deadline():
    spec = {**CANARY, "analysis": {**CANARY["analysis"], "inconclusiveLimit": 1000}}
    world = healthy_world(spec)
    world.set_spec(with_version(spec, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    entered = world.status.step_started_at
    assert entered is not None
    world.metrics = lambda q: Measurement.of(0.0, samples=7)
    world.run_until_phase(Phase.ROLLING_BACK)
    assert world.status.reason == "ProgressDeadlineExceeded"
    assert world.now - entered >= timedelta(minutes=5)
    assert "step 1/5 (setWeight 10) did not complete within progressDeadline" in world.status.message
    assert "7 samples < minSamples 50" in world.status.message or "n=7" in world.status.message


@pytest.mark.parametrize("on_no_data, outcome", [("fail", Phase.ROLLED_BACK), ("pass", Phase.HEALTHY)])
def test_no_data_in_a_rollout_follows_on_no_data(on_no_data, outcome):
    spec = {**CANARY, "analysis": {**CANARY["analysis"], "onNoData": on_no_data}}
    world = healthy_world(spec)
    world.set_spec(with_version(spec, "v2"))
    world.metrics = lambda q: Measurement.no_data()
    world.run_until(lambda w: w.status.phase in (Phase.ROLLED_BACK, Phase.HEALTHY))
    assert world.status.phase is outcome
    if outcome is Phase.ROLLED_BACK:
        assert "no data for candidate (onNoData: fail)" in world.status.message
    else:  # the user said no data is fine: it promotes (a query *error* never would)
        assert world.status.stable_version == "v2"


def test_history_is_bounded_by_history_limit_keeping_the_newest():
    spec = {**CANARY, "historyLimit": 2}
    world = healthy_world(spec)
    for version in ("v2", "v3", "v4"):
        world.set_spec(with_version(spec, version))

        def promoted(w: World, v: str = version) -> bool:
            return w.status.stable_version == v and w.status.phase is Phase.HEALTHY

        world.run_until(promoted)
    assert [h.version for h in world.status.history] == ["v3", "v4"]
    assert all(h.outcome == "Promoted" and h.finished_at for h in world.status.history)
