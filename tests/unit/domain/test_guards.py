"""Guards a mutation could remove without any other domain test failing.

Each test here targets one condition found by the mutation run (see tests/README.md): it builds
the situation the guard exists for, calls decide() through the public domain API, and asserts
what the guard protects. Removing or inverting the guard makes the test fail.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from domain_sim import CANARY, World, with_version
from rollout_operator.domain import (DeleteVersion, Phase, ScaleDownVersion, TrafficSplit,
                                     VersionWeight)

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
