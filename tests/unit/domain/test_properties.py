"""Property tests (hypothesis): arbitrary walks never break the safety rules, restarts never
double-promote, and the status survives its JSON round trip."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout_operator.domain import (
    AnalysisStatus,
    Condition,
    HandledRequests,
    HistoryEntry,
    MetricStatus,
    MirrorTarget,
    Phase,
    RolloutStatus,
    TrafficSplit,
    Verdict,
    VersionWeight,
    decide,
    status_from_dict,
    status_to_dict,
)
from tests.support.walks import EVENTS, SPECS, apply_event, new_world, run_walk

pytestmark = pytest.mark.unit

walk = st.lists(st.sampled_from(EVENTS), min_size=5, max_size=60)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(events=walk, spec_index=st.integers(0, len(SPECS) - 1))
def test_weights_stay_in_range_and_sum_to_100(events, spec_index):
    # domain_sim.check_invariants runs on every tick: weights 0..100 summing to 100, no new
    # route to a version without ready pods, no scale-down/delete of a routed version, only
    # table transitions, and the JSON round trip. Here: the walk itself must stay consistent.
    world = run_walk(new_world(spec_index), events)
    t = world.status.traffic
    if t.stable is not None:
        assert t.stable.weight + t.candidate_weight == 100
    if world.status.phase in (Phase.HEALTHY, Phase.ROLLED_BACK, Phase.STOPPED):
        assert t.candidate is None and t.mirror is None and t.stable is not None and t.stable.weight == 100


@FAST
@given(events=walk, spec_index=st.integers(0, len(SPECS) - 1))
def test_no_version_is_ever_promoted_twice(events, spec_index):
    world = run_walk(new_world(spec_index), ["wait", "wait", "new_version", *events])
    promoted = Counter(h.version for h in world.status.history if h.outcome == "Promoted" and h.reason == "Promoted")
    assert all(n == 1 for n in promoted.values()), promoted


@FAST
@given(events=walk, spec_index=st.integers(0, len(SPECS) - 1))
def test_a_restart_after_any_status_write_never_promotes_again(events, spec_index):
    """Feed each tick's written status back with the same observations (an operator killed
    right after the write and restarted): no second promotion, and decide() stays pure."""
    world = run_walk(new_world(spec_index), ["wait", "new_version", *events])
    for spec, obs, now, decision in world.ticks:
        again = decide(spec, decision.status, obs, now)
        if decision.status.phase is Phase.HEALTHY:
            assert not any(e.reason == "Promoted" for e in again.events)
            assert again.status.stable_version == decision.status.stable_version
        assert decide(spec, decision.status, obs, now) == again


def test_a_crash_before_every_status_write_still_promotes_exactly_once():
    world = new_world(0)
    for event in ["wait", "wait", "new_version"] + ["crash", "wait"] * 60:
        apply_event(world, event, 0)
    promoted = [h for h in world.status.history if h.reason == "Promoted"]
    assert [h.version for h in promoted] == [world.status.stable_version]
    assert world.status.phase is Phase.HEALTHY


# --- status codec -----------------------------------------------------------------------

seconds = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=0)
)
maybe = lambda s: st.none() | s  # noqa: E731
name = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
weights = st.integers(0, 100)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)

traffic = st.builds(
    lambda v1, w, v2, m: TrafficSplit(
        stable=VersionWeight(v1, 100 - w),
        candidate=VersionWeight(v2, w) if w else None,
        mirror=MirrorTarget(v2, m) if m else None,
    ),
    name,
    weights,
    name,
    st.integers(0, 100),
) | st.just(TrafficSplit())
metric = st.builds(
    MetricStatus,
    name=name,
    threshold=st.text(max_size=20),
    verdict=maybe(st.sampled_from(Verdict)),
    value=maybe(finite),
    stable_value=maybe(finite),
    samples=maybe(st.integers(0, 10**9)),
    message=st.text(max_size=30),
    failures=st.integers(0, 50),
    inconclusives=st.integers(0, 50),
    consecutive_errors=st.integers(0, 50),
)
analysis = st.builds(
    AnalysisStatus,
    metrics=st.lists(metric, max_size=3).map(tuple),
    last_verdict=maybe(st.sampled_from(Verdict)),
    last_check_at=maybe(seconds),
    rounds=st.integers(0, 1000),
    step_passes=st.integers(0, 100),
)
condition = st.builds(
    Condition,
    type=st.sampled_from(["Ready", "Progressing", "Promoted"]),
    status=st.sampled_from(["True", "False", "Unknown"]),
    reason=name,
    message=st.text(max_size=30),
    observed_generation=st.integers(0, 99),
    last_transition_time=maybe(seconds),
)
history = st.builds(
    HistoryEntry,
    version=name,
    outcome=name,
    reason=name,
    message=st.text(max_size=30),
    started_at=maybe(seconds),
    finished_at=maybe(seconds),
    by=st.text(max_size=10),
)
statuses = st.builds(
    RolloutStatus,
    phase=maybe(st.sampled_from(Phase)),
    reason=st.text(max_size=15),
    message=st.text(max_size=40),
    observed_generation=st.integers(0, 10**6),
    strategy=st.sampled_from(["", "canary", "blueGreen", "shadow"]),
    stable_version=maybe(name),
    stable_uri=st.text(max_size=20),
    candidate_version=maybe(name),
    candidate_uri=st.text(max_size=20),
    previous_stable_version=maybe(name),
    scale_down_at=maybe(seconds),
    current_step_index=maybe(st.integers(0, 49)),
    step_count=st.integers(0, 50),
    current_step=st.text(max_size=20),
    rollout_started_at=maybe(seconds),
    step_started_at=maybe(seconds),
    traffic=traffic,
    analysis=analysis,
    next_check_at=maybe(seconds),
    conditions=st.lists(condition, max_size=4).map(tuple),
    history=st.lists(history, max_size=3).map(tuple),
    handled_requests=st.builds(HandledRequests, *[st.integers(0, 99)] * 4),
    suspended_phase=maybe(st.sampled_from(Phase)),
    paused_by=st.sampled_from(["", "step"]),
    last_request=st.text(max_size=20),
    last_request_at=maybe(seconds),
)


@settings(max_examples=200, deadline=None)
@given(status=statuses)
def test_status_round_trips_through_json(status):
    import json

    as_json = json.loads(json.dumps(status_to_dict(status)))
    assert status_from_dict(as_json) == status


@pytest.mark.parametrize(
    "stored",
    [
        None,
        {},
        {"phase": "Sideways"},
        {"traffic": "x"},
        {"traffic": {"stable": {"version": "v1"}}},
        {"conditions": [{"status": "True"}], "history": ["x"]},
        {"currentStepIndex": "3", "nextCheckAt": "yesterday"},
    ],
)
def test_reading_an_empty_old_or_damaged_status_never_raises(stored):
    status = status_from_dict(stored)
    assert status.phase is None or isinstance(status.phase, Phase)
    assert status.traffic.stable is None
    assert status.current_step_index is None and status.next_check_at is None


def test_absent_values_are_written_as_null_so_a_merge_patch_removes_them():
    d = status_to_dict(RolloutStatus(traffic=TrafficSplit(stable=VersionWeight("v1", 100))))
    assert d["traffic"] == {"stable": {"version": "v1", "weight": 100}, "candidate": None, "mirror": None}
    assert d["candidateVersion"] is None and d["nextCheckAt"] is None


def test_non_finite_readings_are_stored_as_null():
    m = MetricStatus(name="p99", threshold="<= 0.5", value=float("inf"))
    d = status_to_dict(RolloutStatus(analysis=AnalysisStatus(metrics=(m,))))
    assert d["analysis"]["metrics"][0]["value"] is None


def test_timestamps_are_rfc3339_utc_seconds():
    t = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    d = status_to_dict(RolloutStatus(next_check_at=t + timedelta(seconds=30)))
    assert d["nextCheckAt"] == "2026-03-01T12:00:35Z"
