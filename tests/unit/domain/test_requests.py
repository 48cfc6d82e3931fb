"""User intents (spec.paused, spec.requests counters): each bump acted on once, with who asked."""

from datetime import timedelta

import pytest

from rollout_operator.domain import Measurement, Phase
from tests.support.domain_sim import CANARY, World, condition_of, with_version

pytestmark = pytest.mark.unit

MANUAL = {**CANARY, "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}]}}}


def in_rollout(spec=CANARY, weight=10) -> World:
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(spec, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == weight)
    return world


def test_abort_rolls_back_with_reason_aborted_and_who_asked():
    world = in_rollout()
    world.request("abort", by="bob")
    world.run_until_phase(Phase.ROLLED_BACK)
    assert world.status.reason == "Aborted"
    assert "aborted by bob" in world.status.message
    assert world.status.history[-1].by == "bob"
    assert world.status.handled_requests.abort == 1
    assert condition_of(world.status, "RolledBack").reason == "Aborted"


def test_retry_after_rollback_runs_the_same_version_again_from_step_one():
    world = in_rollout()
    world.request("abort")
    world.run_until_phase(Phase.ROLLED_BACK)
    world.request("retry", by="carol")
    world.tick()
    assert "Retry" in world.reasons()
    assert any(e.message == "retrying v2 from step 1 (requested by carol)" for e in world.events if e.reason == "Retry")
    assert world.status.last_request == "retry by carol"
    assert world.status.phase is Phase.PROGRESSING
    assert world.status.candidate_version == "v2" and world.status.current_step_index == 0
    assert all(m.failures == 0 for m in world.status.analysis.metrics)
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v2"


def test_a_request_is_acted_on_once_per_bump():
    world = in_rollout()
    world.request("abort")
    world.run_until_phase(Phase.ROLLED_BACK)
    world.request("retry")
    world.run_until_phase(Phase.HEALTHY)
    # The old abort counter is still 1 in spec; it must not abort anything again.
    world.set_spec(with_version(world.spec_dict, "v3"))
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v3"
    assert world.reasons().count("Aborted") == 1


def test_pause_step_waits_for_promote_then_continues():
    world = in_rollout(MANUAL)
    world.run_until_phase(Phase.PAUSED)
    world.run(20)
    assert world.status.phase is Phase.PAUSED and world.status.traffic.candidate_weight == 10
    world.request("promote", by="dana")
    world.run_until(lambda w: w.status.traffic.candidate_weight == 60)
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v2"


def test_spec_paused_freezes_the_cursor_and_resume_continues():
    world = in_rollout()
    world.set_spec({**world.spec_dict, "paused": True})
    world.tick()
    assert world.status.phase is Phase.PAUSED and world.status.reason == "PausedByUser"
    index = world.status.current_step_index
    for _ in range(20):
        world.tick(timedelta(minutes=1))
    assert world.status.current_step_index == index and world.status.phase is Phase.PAUSED
    world.set_spec({**world.spec_dict, "paused": False})
    world.tick()
    status = world.status  # a fresh name: mypy would hold world.status.phase at PAUSED from above
    assert status.phase is Phase.PROGRESSING and "Resumed" in world.reasons()
    world.run_until_phase(Phase.HEALTHY)


def test_checks_keep_running_while_paused_and_can_still_roll_back():
    world = in_rollout()
    world.set_spec({**world.spec_dict, "paused": True})
    world.tick()
    world.metrics = lambda q: Measurement.of(0.5, 500)
    world.run_until_phase(Phase.ROLLING_BACK)
    assert world.status.reason == "AnalysisFailed"


def test_promote_full_skips_remaining_steps():
    world = in_rollout(MANUAL)
    world.request("promoteFull", by="erin")
    world.tick(timedelta(seconds=1))
    assert world.status.phase is Phase.PROMOTING
    assert world.status.traffic.candidate_weight == 100
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v2"


def test_requests_that_do_not_apply_are_recorded_and_explained():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    world.request("promote", by="frank")
    world.tick()
    assert world.status.handled_requests.promote == 1
    ignored = [e for e in world.events if e.reason == "RequestIgnored"]
    assert len(ignored) == 1 and "promote by frank ignored" in ignored[0].message
    world.run(3)
    assert len([e for e in world.events if e.reason == "RequestIgnored"]) == 1


def test_promote_full_while_user_paused_is_ignored_with_a_reason():
    world = in_rollout()
    world.set_spec({**world.spec_dict, "paused": True})
    world.tick()
    world.request("promoteFull")
    world.tick()
    assert world.status.phase is Phase.PAUSED
    assert any("spec.paused is true" in e.message for e in world.events)


def test_a_new_version_applied_while_paused_gets_no_traffic_until_resumed():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version({**CANARY, "paused": True}, "v2"))
    for _ in range(10):
        world.tick(timedelta(minutes=1))
    assert world.status.phase is Phase.PAUSED and world.status.candidate_version == "v2"
    assert all(d.status.traffic.candidate_weight == 0 for d in world.decisions)
    assert world.status.step_started_at is None
    world.set_spec({**world.spec_dict, "paused": False})
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v2"


def test_old_stable_survives_a_crash_during_promotion_followed_by_an_abort():
    """Found by the random walks: finalizing a promotion must not scale down the old stable
    in the same tick, because if that status write is lost an abort routes back to it."""
    world = in_rollout()
    world.request("promoteFull")
    world.tick(timedelta(seconds=1))
    assert world.status.phase is Phase.PROMOTING
    saved = world.status
    decision = world.tick()  # finalizes the promotion ... but the write is lost:
    assert decision.status.phase is Phase.HEALTHY
    assert not any(
        getattr(a, "version", None) == "v1" and type(a).__name__ == "ScaleDownVersion" for a in decision.actions
    )
    world.status = saved
    world.request("abort")
    world.tick()
    assert world.status.phase is Phase.ROLLING_BACK
    assert world.status.traffic.stable is not None and world.status.traffic.stable.version == "v1"
    assert world.workloads["v1"].ready_replicas == 2


def test_quiet_traffic_during_an_approval_pause_does_not_time_the_rollout_out():
    world = in_rollout(MANUAL)
    world.run_until_phase(Phase.PAUSED)
    world.metrics = lambda q: Measurement.of(0.0, samples=2)  # night: hardly any requests
    for _ in range(40):
        world.tick(timedelta(minutes=1))
    assert world.status.phase is Phase.PAUSED
    assert all(m.inconclusives == 0 for m in world.status.analysis.metrics)
    world.metrics = lambda q: Measurement.of(0.9, samples=500)  # but a real failure still counts
    world.run_until_phase(Phase.ROLLING_BACK)
    assert world.status.reason == "AnalysisFailed"
