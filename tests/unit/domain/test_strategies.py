"""Blue-green and shadow presets driven through the same step machine as canary."""

from datetime import timedelta

import pytest

from rollout_operator.domain import (
    EnsurePreviewService,
    EnsureVersion,
    Measurement,
    Phase,
    RemovePreviewService,
    ScaleDownVersion,
)
from tests.support.domain_sim import BLUE_GREEN, SHADOW, World, with_version

pytestmark = pytest.mark.unit


def started(spec, version="v2") -> World:
    world = World(spec)
    world.run_until_phase(Phase.HEALTHY)
    world.set_spec(with_version(spec, version))
    return world


def test_blue_green_previews_then_switches_atomically_and_keeps_old_for_the_delay():
    world = started(BLUE_GREEN)
    world.run_until(lambda w: w.status.step_started_at is not None)
    assert EnsurePreviewService("v2") in world.decisions[-1].actions
    splits = []

    def record_split(w: World) -> bool:
        splits.append(w.status.traffic.candidate_weight)
        return w.status.phase is Phase.HEALTHY

    world.run_until(record_split, max_ticks=100)
    # Only 0 and 100 ever: the switch is one status write.
    assert set(splits) == {0, 100}
    assert world.status.stable_version == "v2"
    assert RemovePreviewService() in world.decisions[-1].actions
    promoted_at = world.now
    # v1 keeps running for scaleDownDelay (2m), then is scaled to zero.
    world.run_until(lambda w: any(isinstance(a, ScaleDownVersion) for a in w.decisions[-1].actions))
    assert world.now - promoted_at >= timedelta(minutes=2)
    assert ScaleDownVersion("v1") in world.decisions[-1].actions


def test_blue_green_post_promotion_failure_switches_back_to_the_still_running_stable():
    world = started(BLUE_GREEN)
    world.run_until(lambda w: w.status.traffic.candidate_weight == 100)
    assert world.workloads["v1"].ready_replicas == 2  # old colour is still up
    world.metrics = lambda q: Measurement.of(0.2 if q.metric == "error-rate" else 0.1, 500)
    world.run_until_phase(Phase.ROLLING_BACK)
    stable = world.status.traffic.stable
    assert stable is not None and stable.version == "v1" and stable.weight == 100
    assert "error-rate 0.2 > max 0.01" in world.status.message


def test_blue_green_without_auto_promote_waits_for_a_person():
    spec = {**BLUE_GREEN, "strategy": {"blueGreen": {"autoPromote": False, "previewDuration": "1m"}}}
    world = started(spec)
    world.run_until_phase(Phase.PAUSED)
    assert world.status.paused_by == "step" and world.status.reason == "WaitingForPromote"
    world.run(10)
    assert world.status.phase is Phase.PAUSED and world.status.traffic.candidate_weight == 0
    world.request("promote", by="carol")
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v2"
    assert any(e.reason == "PromoteRequested" and "carol" in e.message for e in world.events)
    assert world.status.last_request == "promote by carol"
    assert world.status.last_request_at is not None


def test_blue_green_preview_replicas_scale_up_before_the_switch():
    spec = {**BLUE_GREEN, "strategy": {"blueGreen": {"previewReplicas": 1, "previewDuration": "1m"}}}
    world = started(spec)
    world.run_until(lambda w: w.status.step_started_at is not None)
    sizes = [a.replicas for a in world.decisions[-1].actions if isinstance(a, EnsureVersion) and a.version == "v2"]
    assert sizes == [1]
    world.run_until(lambda w: w.status.traffic.candidate_weight == 100)
    assert world.workloads["v2"].ready_replicas == 2


def test_shadow_mirrors_without_user_traffic_and_stops_with_a_report():
    world = started(SHADOW)
    world.run_until(lambda w: w.status.traffic.mirror is not None)
    assert world.status.traffic.mirror is not None and world.status.traffic.mirror.percent == 50
    assert world.status.traffic.candidate_weight == 0
    world.run_until_phase(Phase.STOPPED)
    s = world.status
    assert s.stable_version == "v1" and s.traffic.candidate is None and s.traffic.mirror is None
    assert "agreement 0.97" in s.message and "not promoted" in s.message
    assert s.history[-1].outcome == "Stopped"
    # Scaled down on the next tick, once the Stopped status is the persisted one.
    assert ScaleDownVersion("v2") not in world.decisions[-1].actions
    world.tick()
    assert ScaleDownVersion("v2") in world.decisions[-1].actions
    assert world.workloads["v2"].desired_replicas == 0
    agreement = [q for q in world.queries if q.metric == "agreement"][0]
    assert 'stable_version="v1"' in agreement.query and 'candidate_version="v2"' in agreement.query


def test_shadow_fails_on_agreement_even_when_error_rate_is_fine():
    world = started(SHADOW, "v4")
    world.metrics = lambda q: Measurement.of(0.31 if q.metric == "agreement" else 0.0, 900)
    world.run_until_phase(Phase.ROLLED_BACK)
    assert world.status.reason == "AnalysisFailed"
    assert "agreement 0.31 < min 0.9" in world.status.message
    assert all(d.status.traffic.candidate_weight == 0 for d in world.decisions)


def test_shadow_then_canary_stops_mirroring_before_real_traffic():
    spec = {
        **SHADOW,
        "strategy": {
            "shadow": {
                "mirrorPercent": 100,
                "duration": "1m",
                "then": "canary",
                "canary": {"steps": [{"setWeight": 20}]},
            }
        },
    }
    world = started(spec)
    both = []

    def record_both(w: World) -> bool:
        both.append((w.status.traffic.candidate_weight, w.status.traffic.mirror))
        return w.status.phase is Phase.HEALTHY

    world.run_until(record_both, max_ticks=100)
    assert world.status.stable_version == "v2"
    assert not any(weight > 0 and mirror is not None for weight, mirror in both)
    assert (20, None) in both


def test_shadow_then_promote_goes_from_mirror_to_full_traffic():
    spec = {**SHADOW, "strategy": {"shadow": {"mirrorPercent": 10, "duration": "1m", "then": "promote"}}}
    world = started(spec)
    world.run_until_phase(Phase.HEALTHY)
    assert world.status.stable_version == "v2" and world.status.traffic.mirror is None
