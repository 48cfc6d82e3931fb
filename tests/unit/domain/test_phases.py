"""The phase transition table: every phase documented, every listed transition reached by some
walk, and no walk ever producing a transition outside the table (checked on every tick)."""

import random

import pytest

from rollout_operator.domain import TRANSITIONS, EmitEvent, Phase, is_allowed_transition
from tests.support.domain_sim import World, condition_of
from tests.support.walks import EVENTS, apply_event, new_world, transitions
from tests.unit.domain.test_monitoring import promoted_v2, rollback_spec

pytestmark = pytest.mark.unit


def test_every_phase_has_a_one_line_doc_and_a_table_row():
    assert set(TRANSITIONS) == set(Phase)
    for phase in Phase:
        assert phase.__doc__ and "\n" not in phase.__doc__ and phase.__doc__ != Phase.__doc__
        assert phase not in TRANSITIONS[phase], "self-loops are implicit"


def test_is_allowed_transition_matches_the_table_for_every_pair():
    for old in Phase:
        for new in Phase:
            assert is_allowed_transition(old, new) == (old == new or new in TRANSITIONS[old])
    assert is_allowed_transition(None, Phase.INITIALIZING)
    assert not is_allowed_transition(None, Phase.HEALTHY)


def collect_transitions(walks: int, length: int, seed: int) -> set:
    rng = random.Random(seed)
    seen: set = set()
    for w in range(walks):
        world = new_world(w)
        for i in range(length):
            apply_event(world, rng.choice(EVENTS), i)
        seen |= transitions(world)
    return seen


def targeted_transitions() -> set:
    """Short-lived phases (Promoting lasts one tick) and rare paths, driven on purpose."""
    seen: set = set()
    promoting = new_world(0)
    promoting.run_until_phase(Phase.HEALTHY)
    apply_event(promoting, "new_version", 0)
    promoting.run_until_phase(Phase.PROMOTING)
    for event in ("invalid", "valid"):
        apply_event(promoting, event, 0)
    seen |= transitions(promoting)

    approve = new_world(1)  # manual pause step
    approve.run_until_phase(Phase.HEALTHY)
    apply_event(approve, "new_version", 0)
    approve.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    for event in ("invalid", "promoteFull", "valid", "wait"):
        apply_event(approve, event, 0)
    seen |= transitions(approve)

    shadow = new_world(3)  # shadow, then: stop
    shadow.run_until_phase(Phase.HEALTHY)
    apply_event(shadow, "new_version", 0)
    shadow.run_until_phase(Phase.STOPPED)
    for event in ("invalid", "valid", "retry", "wait"):
        apply_event(shadow, event, 0)
    seen |= transitions(shadow)

    # A promote request skips the shadow's analysis onto its stop step; paused there by the
    # user, resuming runs the stop at once: Paused -> Stopped.
    paused_shadow = new_world(3)
    paused_shadow.run_until_phase(Phase.HEALTHY)
    apply_event(paused_shadow, "new_version", 0)
    paused_shadow.run_until(lambda w: w.status.current_step_index == 1)
    for event in ("promote", "pause", "resume"):
        apply_event(paused_shadow, event, 0)
    assert paused_shadow.status.phase is Phase.STOPPED
    seen |= transitions(paused_shadow)

    failing = new_world(0)
    failing.never_ready.add("v1")
    failing.run_until_phase(Phase.FAILED)
    for event in ("invalid", "valid", "up", "retry", "wait"):
        apply_event(failing, event, 0)
    seen |= transitions(failing)

    # spec.monitoring.rollbackWithin: a breach right after a promotion (test_monitoring.py).
    degraded, stable = promoted_v2(rollback_spec("10m"))
    stable.unknown = (0.9, 412)
    degraded.run_until_phase(Phase.ROLLED_BACK, max_ticks=10)
    seen |= transitions(degraded)
    return seen


def test_walks_reach_every_transition_in_the_table_and_nothing_else():
    # check_invariants (domain_sim) asserts is_allowed_transition on every single tick.
    seen = collect_transitions(walks=120, length=70, seed=7) | targeted_transitions()
    table: set[tuple[Phase | None, Phase]] = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    table.add((None, Phase.INITIALIZING))
    seen.discard((None, Phase.INVALID))  # a brand-new object whose spec is already invalid
    missing = table - seen
    assert not missing, sorted((str(a), str(b)) for a, b in missing)
    assert seen <= table


def test_invalid_spec_keeps_traffic_and_resumes_where_it_was():
    world = World(new_world(0).spec_dict)
    world.run_until_phase(Phase.HEALTHY)
    apply_event(world, "new_version", 0)
    world.run_until(lambda w: w.status.traffic.candidate_weight == 10)
    before = world.status.traffic
    apply_event(world, "invalid", 0)
    assert world.status.phase is Phase.INVALID
    assert world.status.message == "spec.analysis.interval: must be a duration like 30s, got 'x'"
    assert world.status.traffic == before
    event = world.decisions[-1].actions[0]
    assert isinstance(event, EmitEvent) and event.reason == "InvalidSpec", event
    world.tick()
    assert world.decisions[-1].actions == ()  # one event per problem, not one per tick
    apply_event(world, "valid", 0)
    status = world.status  # a fresh name: mypy would hold world.status.phase at INVALID from above
    assert status.phase is Phase.PROGRESSING and status.suspended_phase is None
    assert condition_of(status, "Progressing").status == "True"
