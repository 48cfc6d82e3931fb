"""The standing actions each tick asks for: level-based ensures in a fixed order, the right
provider, and clean-up only of versions nothing (persisted or new) can route to."""

from datetime import UTC, timedelta

import pytest

from rollout_operator.domain import (
    DeleteVersion,
    EmitEvent,
    EnsureRouter,
    EnsureVersion,
    Phase,
    RemoveNetworkPolicies,
    ScaleDownVersion,
    SetTraffic,
    WorkloadState,
    status_to_dict,
)
from tests.support.domain_sim import CANARY, World, with_version

pytestmark = pytest.mark.unit

GATEWAY = {**CANARY, "trafficRouting": {"gatewayAPI": {"httpRoute": "speech"}}}


def kinds(decision):
    return [type(a).__name__ for a in decision.actions]


def test_every_tick_repeats_the_ensures_in_a_fixed_order():
    world = World({**CANARY, "trafficRouting": {"router": {"stickyHeader": "x-user"}}})
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(world.spec_dict, "v2"))
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    d = world.tick()
    assert kinds(d)[:4] == ["EnsureRouter", "EnsureVersion", "EnsureVersion", "SetTraffic"]
    assert d.actions[0] == EnsureRouter("modelrollout/router:dev", 1)
    assert d.status.traffic.sticky_header == "x-user"  # the router reads it with the split
    assert d.actions[1] == EnsureVersion("v1", "file:///models/v1.onnx", 2, "modelrollout/model-server:dev")
    assert d.actions[2] == EnsureVersion("v2", "file:///models/v2.onnx", 2, "modelrollout/model-server:dev")
    split = d.actions[3]
    assert isinstance(split, SetTraffic) and split.candidate is not None and split.stable is not None, split
    assert split.candidate.weight == 10 and split.stable.weight == 90
    events = [i for i, a in enumerate(d.actions) if isinstance(a, EmitEvent)]
    assert all(i >= 4 for i in events)  # events describe what the ensures did


def test_the_sticky_header_travels_with_the_split_and_goes_when_the_spec_drops_it():
    world = World({**CANARY, "trafficRouting": {"router": {"stickyHeader": "x-user"}}})
    world.run_until_phase(Phase.HEALTHY)
    assert status_to_dict(world.status)["traffic"]["stickyHeader"] == "x-user"
    world.set_spec(with_version(world.spec_dict, "v2"))
    world.run_until(lambda w: w.status.current_step_index == 1 and w.status.analysis.step_passes >= 1)
    before = world.status
    world.set_spec({**world.spec_dict, "trafficRouting": {"router": {}}})
    d = world.tick(timedelta(seconds=1))
    assert "stickyHeader" not in status_to_dict(d.status)["traffic"]
    # A header change is not a new split: the step keeps its passing rounds and its schedule.
    assert d.status.traffic.candidate_weight == before.traffic.candidate_weight == 10
    assert d.status.analysis.step_passes == before.analysis.step_passes
    assert d.status.next_check_at == before.next_check_at


def test_gateway_api_rollouts_get_no_router_and_still_a_split_every_tick():
    world = World(GATEWAY)
    world.run_until_phase(Phase.HEALTHY)
    d = world.tick()
    assert not any(isinstance(a, EnsureRouter) for a in d.actions)
    assert SetTraffic(stable=d.status.traffic.stable) in d.actions


def test_only_versions_of_this_rollout_that_nothing_needs_are_deleted():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    world.workloads["v0"] = WorkloadState(True, 2, 2, True)  # left over from long ago
    d = world.tick()
    assert DeleteVersion("v0") in d.actions
    assert not any(isinstance(a, (DeleteVersion, ScaleDownVersion)) and a.version == "v1" for a in d.actions)


def test_nothing_is_scaled_down_twice():
    world = World(CANARY)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(CANARY, "v2"))
    world.run_until_phase(Phase.HEALTHY)
    world.run(3)
    downs = [a for d in world.decisions for a in d.actions if isinstance(a, ScaleDownVersion)]
    assert downs == [ScaleDownVersion("v1")]


def test_a_gateway_api_rollout_asks_every_tick_for_the_routers_network_policies_to_be_gone():
    """A rollout switched from the built-in router keeps `NAME.model-servers`, which would block
    the gateway: the domain asks for its removal, before the split is set."""
    world = World(GATEWAY)
    world.run_until_phase(Phase.HEALTHY)
    d = world.tick()
    assert RemoveNetworkPolicies() in d.actions
    assert kinds(d).index("RemoveNetworkPolicies") < kinds(d).index("SetTraffic")


def test_the_built_in_router_keeps_its_policies_unless_the_operator_turns_them_off():
    from datetime import datetime

    from rollout_operator.domain import Observations, PodPolicy, RolloutStatus, decide, parse_spec

    now = datetime(2026, 3, 1, tzinfo=UTC)
    for policy, wanted in ((PodPolicy(), True), (PodPolicy(network_policies=False), False)):
        spec = parse_spec(CANARY, name="speech", namespace="models", policy=policy)
        d = decide(spec, RolloutStatus(), Observations(workloads={}, generation=1), now)
        (router,) = [a for a in d.actions if isinstance(a, EnsureRouter)]
        assert router.network_policies is wanted
        assert (RemoveNetworkPolicies() in d.actions) is not wanted
