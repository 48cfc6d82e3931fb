"""requeue_after: the time to the next interesting moment (check, step end, deadline,
delayed scale-down), short right after a transition, and bounded."""

from datetime import timedelta

import pytest

from rollout_operator.domain import Phase, SpecError, decide_invalid
from tests.support.domain_sim import BLUE_GREEN, CANARY, World, with_version

pytestmark = pytest.mark.unit


def test_idle_healthy_rollout_looks_again_after_the_idle_bound():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    assert world.tick().requeue_after == timedelta(seconds=60)


def test_a_transition_is_followed_up_quickly():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(CANARY, "v2"))
    assert world.tick().requeue_after == timedelta(seconds=1)


def test_waiting_for_pods_polls_every_few_seconds():
    world = World(CANARY, never_ready={"v1"})
    world.tick()
    assert world.tick().requeue_after == timedelta(seconds=5)


def test_during_a_step_the_next_check_is_the_next_moment():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    d = world.tick(timedelta(seconds=1))
    next_check = world.status.next_check_at
    assert next_check is not None and d.requeue_after == next_check - world.now
    assert timedelta(seconds=1) <= d.requeue_after <= timedelta(seconds=30)


def test_a_pause_ending_before_the_next_check_wakes_at_its_end():
    spec = {**CANARY, "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "10s"}}]}}}
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(spec, "v2"))
    world.run_until(lambda w: w.status.current_step_index == 1)
    d = world.tick(timedelta(seconds=2))
    started = world.status.step_started_at
    assert started is not None and d.requeue_after == started + timedelta(seconds=10) - world.now


def test_blue_green_wakes_for_the_delayed_scale_down():
    world = World(BLUE_GREEN)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(BLUE_GREEN, "v2"))
    world.run_until(lambda w: w.status.phase is Phase.HEALTHY and w.status.stable_version == "v2")
    d = world.tick(timedelta(seconds=5))
    assert d.requeue_after == timedelta(seconds=60)  # 2m away: the bound applies
    d = world.tick(timedelta(seconds=70))
    scale_down_at = world.status.scale_down_at
    assert scale_down_at is not None and d.requeue_after == scale_down_at - world.now < timedelta(seconds=60)


def test_invalid_spec_waits_for_a_change():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    d = decide_invalid(world.status, SpecError("spec.x", "bad"), 2, world.now)
    assert d.requeue_after == timedelta(seconds=60)
