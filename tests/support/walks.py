"""Random walks through decide(): a user, a cluster and Prometheus doing arbitrary things.

Used by the transition-coverage test (fixed seeds) and the hypothesis property tests.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from rollout_operator.domain import Measurement, SpecError
from tests.support.domain_sim import BLUE_GREEN, CANARY, SHADOW, World, healthy_metrics, with_version

MANUAL = {**CANARY, "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}]}}}
SHADOW_CANARY = {
    **SHADOW,
    "strategy": {
        "shadow": {"mirrorPercent": 50, "duration": "1m", "then": "canary", "canary": {"steps": [{"setWeight": 30}]}}
    },
}
SPECS = [
    CANARY,
    MANUAL,
    BLUE_GREEN,
    SHADOW,
    SHADOW_CANARY,
    {**BLUE_GREEN, "strategy": {"blueGreen": {"autoPromote": False, "previewReplicas": 1}}},
]

EVENTS = [
    "wait",
    "wait",
    "wait",
    "wait",
    "jump",
    "good",
    "bad",
    "error",
    "nodata",
    "few",
    "new_version",
    "revert",
    "abort",
    "retry",
    "promote",
    "promoteFull",
    "pause",
    "resume",
    "invalid",
    "valid",
    "down",
    "up",
    "crash",
    "strategy",
]


def bad(q):
    return Measurement.of(0.9 if q.metric != "agreement" else 0.1, 500)


METRICS = {
    "good": healthy_metrics,
    "bad": bad,
    "error": lambda q: Measurement.error("connection refused"),
    "nodata": lambda q: Measurement.no_data(0),
    "few": lambda q: Measurement.of(0.0, 3),
}


def new_world(spec_index: int = 0) -> World:
    spec = copy.deepcopy(SPECS[spec_index % len(SPECS)])
    spec["historyLimit"] = 100
    return World(spec)


def apply_event(world: World, event: str, n: int) -> None:
    """Change the world as `event` says, then run one reconcile tick."""
    spec = world.spec_dict
    if event in METRICS:
        world.metrics = METRICS[event]
    elif event == "jump":
        world.tick(timedelta(minutes=2))
        return
    elif event == "new_version":
        world.set_spec(with_version(spec, f"v{world.generation + 10}"))
    elif event == "revert" and world.status.stable_version:
        world.set_spec(with_version(spec, world.status.stable_version))
    elif event in ("abort", "retry", "promote", "promoteFull"):
        world.request(event)
    elif event in ("pause", "resume"):
        world.set_spec({**spec, "paused": event == "pause"})
    elif event == "invalid":
        world.invalid = SpecError("spec.analysis.interval", "must be a duration like 30s, got 'x'")
    elif event == "valid":
        world.invalid = None
    elif event == "down":
        # The candidate's pods (or, during the first deploy, the first version's) go away.
        version = world.status.candidate_version or (
            world.status.stable_version if world.status.traffic.stable is None else None
        )
        if version:
            world.never_ready.add(version)
            world.workloads.pop(version, None)
    elif event == "up":
        world.never_ready.clear()
    elif event == "crash":
        crash_tick(world)
        return
    elif event == "strategy":
        changed = copy.deepcopy(SPECS[n % len(SPECS)])
        changed["model"] = spec["model"]
        changed["requests"] = spec.get("requests", {})
        changed["historyLimit"] = 100
        world.set_spec(changed)
    world.tick()


def crash_tick(world: World) -> None:
    """The shell ran the actions, then died before the status write: the status is unchanged."""
    saved = world.status
    world.tick()
    world.status = saved


def run_walk(world: World, events: list[str]) -> World:
    for i, event in enumerate(events):
        apply_event(world, event, i)
    return world


def transitions(world: World) -> set[tuple[Any, Any]]:
    """Phase changes decide() made, each from the status it was given (crashes included)."""
    return set(world.phase_changes)
