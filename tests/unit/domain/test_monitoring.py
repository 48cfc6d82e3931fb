"""spec.monitoring through parse_spec and decide(): gates on the stable version while Healthy,
the Degraded condition's lifecycle (set after failureLimit rounds with the gate's numbers, no
event while it stays breached, Recovered, set again), never while a rollout is in flight, never
a traffic change, and the events' notification kinds."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from rollout_operator.domain import (
    Measurement,
    Phase,
    QueryRequest,
    Role,
    SetTraffic,
    SpecError,
    Verdict,
    VersionWeight,
    parse_spec,
    status_to_dict,
)
from rollout_operator.domain.notifications import EventKind, compute_event_kind
from tests.support.domain_sim import CANARY, World, condition_of, with_version

pytestmark = pytest.mark.unit

MONITORED: dict[str, Any] = {
    **copy.deepcopy(CANARY),
    "monitoring": {
        "interval": "1m",
        "window": "5m",
        "minSamples": 50,
        "failureLimit": 2,
        "metrics": [
            {"name": "unknown-rate", "template": "unknown-rate", "max": 0.2},
            {"name": "error-rate", "template": "error-rate", "max": 0.05},
        ],
    },
}


class Script:
    """Stable's answers per monitoring gate; analysis gates always healthy."""

    def __init__(self) -> None:
        self.unknown = (0.05, 412)
        self.errors = (0.001, 412)

    def __call__(self, q: QueryRequest) -> Measurement:
        if q.metric == "unknown-rate":
            return Measurement.of(self.unknown[0], samples=self.unknown[1])
        if q.metric == "error-rate" and q.role is Role.STABLE:
            return Measurement.of(self.errors[0], samples=self.errors[1])
        return Measurement.of(0.001 if q.metric == "error-rate" else 0.2, samples=500)


def healthy(spec: dict[str, Any] = MONITORED) -> tuple[World, Script]:
    script = Script()
    world = World(copy.deepcopy(spec), metrics=script)
    world.run_until_phase(Phase.HEALTHY)
    return world, script


def monitoring_queries(world: World) -> list[QueryRequest]:
    return [q for q in world.queries if q.role is Role.STABLE and q.metric == "unknown-rate"]


# parse_spec


def parse(monitoring: Any) -> Any:
    return parse_spec({**copy.deepcopy(CANARY), "monitoring": monitoring}, name="speech", namespace="models")


def gate(**fields: Any) -> dict[str, Any]:
    return {"name": "unknown-rate", "template": "unknown-rate", "max": 0.2, **fields}


@pytest.mark.parametrize(
    ("monitoring", "field", "words"),
    [
        ({"metrics": [gate(relativeTo="stable", maxIncrease=0.1)]}, "spec.monitoring.metrics[0].relativeTo", "alone"),
        ({"metrics": [gate(maxIncrease=0.1)]}, "spec.monitoring.metrics[0].maxIncrease", "absolute threshold"),
        ({"metrics": [gate(maxDecrease=0.1)]}, "spec.monitoring.metrics[0].maxDecrease", "absolute threshold"),
        (
            {"metrics": [{"name": "agree", "template": "shadow-agreement", "min": 0.9}]},
            "spec.monitoring.metrics[0].template",
            "no candidate",
        ),
        (
            {
                "metrics": [
                    {"name": "q", "query": 'sum(rate(x{version="{{candidate}}"}[{{window}}]))', "max": 1},
                ]
            },
            "spec.monitoring.metrics[0].query",
            "{{version}}",
        ),
        ({"metrics": []}, "spec.monitoring.metrics", "1..20 gates"),
        ({}, "spec.monitoring.metrics", "1..20 gates"),
        ({"metrics": [gate()] * 21}, "spec.monitoring.metrics", "got 21"),
        ({"metrics": [gate(), gate()]}, "spec.monitoring.metrics[1].name", "unique"),
        ({"metrics": [gate(max=None)]}, "spec.monitoring.metrics[0]", "needs a threshold"),
        ({"interval": "0s", "metrics": [gate()]}, "spec.monitoring.interval", "at least 1s"),
        ({"window": "soon", "metrics": [gate()]}, "spec.monitoring.window", ""),
        ({"failureLimit": 0, "metrics": [gate()]}, "spec.monitoring.failureLimit", ""),
        ({"onNoData": "ignore", "metrics": [gate()]}, "spec.monitoring.onNoData", "hold"),
        ({"minSamples": -1, "metrics": [gate()]}, "spec.monitoring.minSamples", ""),
        ("yes", "spec.monitoring", "object"),
        ({"metrics": [gate(slices={"label": "speaker"})]}, "spec.monitoring.metrics[0].slices.label", ""),
    ],
)
def test_parse_errors_name_the_field(monitoring, field, words):
    with pytest.raises(SpecError) as err:
        parse(monitoring)
    assert err.value.field == field, str(err.value)
    assert words in err.value.message


def test_parse_defaults_and_slices_as_in_analysis():
    spec = parse({"metrics": [gate(slices={"values": ["young", "old"]})]})
    m = spec.monitoring
    assert m is not None
    assert (m.interval, m.window, m.min_samples, m.failure_limit) == (
        timedelta(minutes=1),
        timedelta(minutes=5),
        50,
        2,
    )
    assert m.metrics[0].slices is not None and m.metrics[0].slices.values == ("young", "old")
    assert parse_spec(CANARY, name="speech", namespace="models").monitoring is None


# the Degraded condition's lifecycle


def test_a_healthy_stable_is_queried_with_its_own_version_and_window_and_reads_not_degraded():
    world, _ = healthy()
    world.tick()
    q = monitoring_queries(world)[-1]
    assert q.version == "v1" and 'version="v1"' in q.query and "[5m]" in q.query
    c = condition_of(world.status, "Degraded")
    assert (c.status, c.reason) == ("False", "GatesPass")
    assert "unknown-rate 0.05 within <= 0.2 (n=412)" in c.message and c.message.endswith("on stable v1")


def test_condition_set_after_failure_limit_rounds_with_numbers_then_unchanged_then_cleared_then_set_again():
    world, script = healthy()
    world.tick()
    script.unknown = (0.31, 412)
    d = world.tick()  # 1st failing round: below failureLimit 2
    assert condition_of(world.status, "Degraded").status == "False"
    assert not [e for e in d.events if e.reason == "Degraded"]
    d = world.tick()  # 2nd: Degraded
    c = condition_of(world.status, "Degraded")
    assert (c.status, c.reason) == ("True", "unknown-rate")
    assert c.message == "unknown-rate 0.31 > max 0.2 (n=412) for 2 rounds on stable v1"
    assert [(e.type, e.reason, e.message) for e in d.events] == [("Warning", "Degraded", c.message)]
    set_at = c.last_transition_time
    degraded_events = len([e for e in world.events if e.reason == "Degraded"])
    for _ in range(3):  # still breached: the numbers move, no event, no transition
        script.unknown = (0.4, 500)
        world.tick()
    c = condition_of(world.status, "Degraded")
    assert c.status == "True" and c.last_transition_time == set_at
    assert c.message.startswith("unknown-rate 0.4 > max 0.2 (n=500) for 5 rounds")
    assert len([e for e in world.events if e.reason == "Degraded"]) == degraded_events
    script.unknown = (0.02, 400)
    d = world.tick()
    c = condition_of(world.status, "Degraded")
    assert (c.status, c.reason) == ("False", "Recovered")
    assert "unknown-rate 0.02 within <= 0.2 (n=400)" in c.message
    assert [(e.type, e.reason) for e in d.events] == [("Normal", "Recovered")]
    world.tick()
    assert condition_of(world.status, "Degraded").reason == "Recovered"
    assert not [e for e in world.decisions[-1].events if e.reason in ("Recovered", "Degraded")]
    script.unknown = (0.5, 300)
    world.tick()
    d = world.tick()
    assert condition_of(world.status, "Degraded").status == "True"
    assert [e.reason for e in d.events] == ["Degraded"]


def test_two_breached_gates_are_both_in_the_message_reason_the_first():
    world, script = healthy()
    script.unknown = (0.31, 412)
    script.errors = (0.2, 412)
    world.run(3)
    c = condition_of(world.status, "Degraded")
    assert c.reason == "unknown-rate"
    assert "unknown-rate 0.31 > max 0.2 (n=412)" in c.message and "error-rate 0.2 > max 0.05 (n=412)" in c.message


def test_a_pass_resets_the_failing_count_so_alternating_rounds_never_degrade():
    world, script = healthy()
    for value in (0.31, 0.05, 0.31, 0.05, 0.31):
        script.unknown = (value, 412)
        world.tick()
    assert condition_of(world.status, "Degraded").status == "False"
    assert "Degraded" not in world.reasons()


@pytest.mark.parametrize(
    "evidence",
    [(0.02, 10), "error"],
    ids=["too-few-samples", "query-error"],
)
def test_no_evidence_neither_clears_nor_counts(evidence):
    world, script = healthy()
    script.unknown = (0.31, 412)
    world.run(3)
    assert condition_of(world.status, "Degraded").status == "True"
    if evidence == "error":
        world.metrics = lambda q: Measurement.error("prometheus down") if q.metric == "unknown-rate" else script(q)
    else:
        script.unknown = evidence
    world.run(3)
    c = condition_of(world.status, "Degraded")
    assert c.status == "True"
    g = next(m for m in world.status.monitoring.metrics if m.name == "unknown-rate")
    assert g.verdict in (Verdict.INCONCLUSIVE, Verdict.ERROR) and g.failures == 3
    assert "Recovered" not in world.reasons()


def test_unknown_until_every_gate_has_evidence():
    world, script = healthy()
    script.unknown = (0.05, 3)
    world.run(2)
    c = condition_of(world.status, "Degraded")
    assert (c.status, c.reason) == ("Unknown", "NotChecked")
    assert "stable has 3 samples < minSamples 50" in c.message


def test_monitoring_never_changes_traffic():
    world, script = healthy()
    script.unknown = (0.9, 412)
    world.run(6)
    assert condition_of(world.status, "Degraded").status == "True"
    assert world.status.phase is Phase.HEALTHY
    for _, _, _, decision in world.ticks[-6:]:
        traffic = [a for a in decision.actions if isinstance(a, SetTraffic)]
        assert traffic and all(
            t.stable is not None and t.stable.version == "v1" and t.stable.weight == 100 for t in traffic
        )
        assert all(t.candidate is None and t.mirror is None for t in traffic)


def test_a_round_is_due_every_interval_and_the_requeue_waits_for_it():
    world, _ = healthy()
    d = world.tick()
    assert d.requeue_after == timedelta(minutes=1)
    before = len(monitoring_queries(world))
    world.tick(timedelta(seconds=20))
    assert len(monitoring_queries(world)) == before, "not due before nextCheckAt"
    world.tick(timedelta(seconds=40))
    assert len(monitoring_queries(world)) == before + 1


def test_not_evaluated_while_a_rollout_is_in_flight_and_reset_for_the_new_stable():
    world, script = healthy()
    script.unknown = (0.31, 412)
    world.run(3)
    degraded = world.status.monitoring
    assert degraded.degraded is True
    world.set_spec(with_version(world.spec_dict, "v2"))
    world.tick()
    assert world.status.phase is Phase.PROGRESSING
    asked = len(monitoring_queries(world))
    world.run_until(lambda w: w.status.phase is Phase.PROMOTING)
    in_flight = [t for t in world.ticks if t[3].status.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)]
    assert in_flight
    assert len(monitoring_queries(world)) == asked, "no monitoring query while the rollout is in flight"
    assert world.status.monitoring == degraded, "the readings stay as they were, unevaluated"
    world.tick()
    status = world.status  # a fresh name: mypy holds the phase narrowed above
    assert status.phase is Phase.HEALTHY and status.stable_version == "v2"
    c = condition_of(world.status, "Degraded")
    assert (c.status, c.reason) == ("Unknown", "NotChecked") and "v2" in c.message
    script.unknown = (0.05, 412)
    world.tick()
    assert monitoring_queries(world)[-1].version == "v2"
    assert condition_of(world.status, "Degraded").status == "False"
    assert "Recovered" not in world.reasons(), "a new stable is not a recovery of the old one"


def test_without_spec_monitoring_there_is_no_condition_and_no_status_key_and_removing_it_drops_them():
    world, _ = healthy(CANARY)
    world.run(2)
    assert world.status.condition("Degraded") is None
    assert "monitoring" not in status_to_dict(world.status)
    world, _ = healthy()
    world.tick()
    assert "monitoring" in status_to_dict(world.status)
    spec = copy.deepcopy(world.spec_dict)
    del spec["monitoring"]
    world.set_spec(spec)
    world.tick()
    assert world.status.condition("Degraded") is None
    assert "monitoring" not in status_to_dict(world.status)


def test_per_slice_monitoring_gate_names_the_slice():
    spec = copy.deepcopy(MONITORED)
    spec["monitoring"]["metrics"] = [gate(minSamples=10, slices={"values": ["young", "old"]})]

    def answers(q: QueryRequest) -> Measurement:
        if q.role is Role.STABLE and q.slice_label:
            return Measurement.by_slice(
                {"young": Measurement.of(0.6, samples=400), "old": Measurement.of(0.05, samples=400)}
            )
        return Measurement.of(0.001, samples=500)

    world = World(spec, metrics=answers)
    world.run_until_phase(Phase.HEALTHY)
    world.run(2)
    c = condition_of(world.status, "Degraded")
    assert c.status == "True" and c.message.startswith("unknown-rate[young] 0.6 > max 0.2 (n=400)")


def test_the_two_events_map_to_the_degraded_and_recovered_notification_kinds():
    assert compute_event_kind("Warning", "Degraded", Phase.HEALTHY) is EventKind.DEGRADED
    assert compute_event_kind("Normal", "Recovered", Phase.HEALTHY) is EventKind.RECOVERED
    assert compute_event_kind("Normal", "Degraded", Phase.HEALTHY) is None


# spec.monitoring.rollbackWithin (opt-in): a breach soon after a promotion rolls back


def rollback_spec(within: str = "10m") -> dict[str, Any]:
    spec = copy.deepcopy(MONITORED)
    spec["monitoring"]["rollbackWithin"] = within
    spec["strategy"] = {"canary": {"steps": [{"setWeight": 50}]}}
    return spec


def promoted_v2(spec: dict[str, Any]) -> tuple[World, Script]:
    world, script = healthy(spec)
    world.run(2)
    world.set_spec(with_version(world.spec_dict, "v2"))
    world.run_until(lambda w: w.status.phase is Phase.HEALTHY and w.status.stable_version == "v2")
    return world, script


def test_rollback_within_keeps_the_previous_version_at_full_size_and_a_breach_switches_back_to_it():
    world, script = promoted_v2(rollback_spec("10m"))
    assert world.status.previous_stable_version == "v1" and world.status.previous_stable_uri == "file:///models/v1.onnx"
    assert world.workloads["v1"].ready_replicas == 2, "kept at full size for rollbackWithin"
    script.unknown = (0.31, 412)
    world.run_until(lambda w: w.status.phase is Phase.ROLLING_BACK, max_ticks=10)
    status = world.status
    d = world.decisions[-1]
    assert [e.reason for e in d.events] == ["Degraded", "DegradedAfterPromotion"]
    assert status.stable_version == "v1" and status.stable_uri == "file:///models/v1.onnx"
    assert status.candidate_version == "v2" and status.traffic.stable == VersionWeight("v1", 100)
    assert status.traffic.candidate is None
    assert status.message == (
        "unknown-rate 0.31 > max 0.2 (n=412) for 2 rounds on stable v2 within 10m of its promotion "
        "(spec.monitoring.rollbackWithin) -> rolled back to v1"
    )
    entry = status.history[-1]
    assert (entry.version, entry.outcome, entry.reason) == ("v2", "RolledBack", "DegradedAfterPromotion")
    assert compute_event_kind("Warning", "DegradedAfterPromotion", Phase.ROLLING_BACK) is EventKind.ROLLED_BACK
    assert any(isinstance(a, SetTraffic) and a.stable == VersionWeight("v1", 100) for a in d.actions)
    world.run_until_phase(Phase.ROLLED_BACK, max_ticks=5)
    assert condition_of(world.status, "RolledBack").reason == "DegradedAfterPromotion"
    world.run(3)
    assert world.status.phase is Phase.ROLLED_BACK, "spec.model.version still v2: it stays rolled back"
    assert world.workloads["v2"].desired_replicas == 0 and world.workloads["v1"].ready_replicas == 2


def test_a_breach_after_the_window_only_reports():
    world, script = promoted_v2(rollback_spec("2m"))
    world.tick(timedelta(minutes=3))
    script.unknown = (0.31, 412)
    world.run(4)
    assert world.status.phase is Phase.HEALTHY and world.status.stable_version == "v2"
    assert condition_of(world.status, "Degraded").status == "True"
    assert "DegradedAfterPromotion" not in world.reasons()


def test_without_rollback_within_a_breach_right_after_promotion_only_reports():
    spec = rollback_spec()
    del spec["monitoring"]["rollbackWithin"]
    world, script = promoted_v2(spec)
    script.unknown = (0.31, 412)
    world.run(4)
    assert world.status.phase is Phase.HEALTHY and world.status.stable_version == "v2"
    assert "DegradedAfterPromotion" not in world.reasons()


def test_no_rollback_when_the_first_version_is_degraded():
    world, script = healthy(rollback_spec())
    script.unknown = (0.31, 412)
    world.run(4)
    assert world.status.phase is Phase.HEALTHY and condition_of(world.status, "Degraded").status == "True"


def test_rollback_within_is_parsed_and_checked():
    spec = parse({"rollbackWithin": "15m", "metrics": [gate()]})
    assert spec.monitoring is not None and spec.monitoring.rollback_within == timedelta(minutes=15)
    with pytest.raises(SpecError) as err:
        parse({"rollbackWithin": "0s", "metrics": [gate()]})
    assert err.value.field == "spec.monitoring.rollbackWithin" and "at least 1s" in err.value.message
