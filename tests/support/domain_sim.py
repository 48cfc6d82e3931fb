"""A tiny in-memory world for driving decide() tick by tick in unit tests.

It plays the shell: runs the planned queries against a scripted metric source, executes the
actions against fake workloads, checks safety invariants on every tick, and feeds the status
back through the JSON codec exactly as the API server would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rollout_operator.domain import (
    Condition,
    Decision,
    DeleteVersion,
    EmitEvent,
    EnsureVersion,
    Measurement,
    MirrorTarget,
    Observations,
    Phase,
    QueryRequest,
    RolloutStatus,
    ScaleDownVersion,
    SpecError,
    VersionWeight,
    WorkloadState,
    compute_metric_observations,
    decide,
    decide_invalid,
    is_allowed_transition,
    parse_spec,
    plan_queries,
    status_from_dict,
    status_to_dict,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

CANARY: dict[str, Any] = {
    "model": {"name": "speech-commands", "version": "v1", "uri": "file:///models/v1.onnx"},
    "server": {"replicas": 2},
    "strategy": {
        "canary": {
            "steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"analysis": {"checks": 2}}]
        }
    },
    "analysis": {
        "interval": "30s",
        "window": "1m",
        "minSamples": 50,
        "failureLimit": 2,
        "inconclusiveLimit": 6,
        "consecutiveErrorLimit": 3,
        "metrics": [
            {"name": "error-rate", "template": "error-rate", "max": 0.01},
            {"name": "p99-latency", "template": "latency-p99", "max": 0.5},
        ],
    },
    "progressDeadline": "5m",
}

BLUE_GREEN: dict[str, Any] = {
    **CANARY,
    "strategy": {
        "blueGreen": {
            "previewDuration": "1m",
            "autoPromote": True,
            "scaleDownDelay": "2m",
            "postPromotionDuration": "1m",
        }
    },
}

SHADOW: dict[str, Any] = {
    **CANARY,
    "strategy": {"shadow": {"mirrorPercent": 50, "duration": "2m", "then": "stop"}},
    "analysis": {
        **CANARY["analysis"],
        "metrics": [
            {"name": "agreement", "template": "shadow-agreement", "min": 0.9},
            {"name": "error-rate", "template": "error-rate", "max": 0.01},
        ],
    },
}

MetricSource = Callable[[QueryRequest], Measurement]


def healthy_metrics(q: QueryRequest) -> Measurement:
    values = {"error-rate": 0.001, "p99-latency": 0.2, "agreement": 0.97}
    return Measurement.of(values.get(q.metric, 0.01), samples=500)


def with_version(spec: dict[str, Any], version: str, **changes: Any) -> dict[str, Any]:
    new = copy.deepcopy(spec)
    new["model"]["version"] = version
    new["model"]["uri"] = f"file:///models/{version}.onnx"
    new.update(changes)
    return new


@dataclass
class World:
    spec_dict: dict[str, Any]
    now: datetime = T0
    metrics: MetricSource = healthy_metrics
    never_ready: set[str] = field(default_factory=set)
    status: RolloutStatus = field(default_factory=RolloutStatus)
    workloads: dict[str, WorkloadState] = field(default_factory=dict)
    generation: int = 1
    decisions: list[Decision] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    queries: list[QueryRequest] = field(default_factory=list)
    ticks: list[tuple[Any, Observations, datetime, Decision]] = field(default_factory=list)
    phase_changes: set[tuple[Any, Any]] = field(default_factory=set)  # (persisted, new) phases
    invalid: SpecError | None = None  # when set, the shell "fails to parse" and calls decide_invalid
    _parsed: tuple[int, Any] | None = None

    def set_spec(self, spec_dict: dict[str, Any]) -> None:
        self.spec_dict = spec_dict
        self.generation += 1

    def request(self, kind: str, by: str = "alice") -> None:
        requests = dict(self.spec_dict.get("requests", {}))
        requests[kind] = requests.get(kind, 0) + 1
        requests["by"] = by
        self.set_spec({**self.spec_dict, "requests": requests})

    @property
    def spec(self):
        if self._parsed is None or self._parsed[0] != self.generation:
            self._parsed = (self.generation, parse_spec(self.spec_dict, name="speech", namespace="models"))
        return self._parsed[1]

    def tick(self, advance: timedelta | None = None) -> Decision:
        """One reconcile; `advance` moves the clock first (default: the last requeue)."""
        if advance is None:
            advance = self.decisions[-1].requeue_after if self.decisions else timedelta(0)
        self.now += advance
        spec = self.spec
        planned = plan_queries(spec, self.status, self.now)
        self.queries.extend(planned)
        results = [(q, self.metrics(q)) for q in planned]
        obs = Observations(dict(self.workloads), compute_metric_observations(results), self.generation)
        if self.invalid is not None:
            decision = decide_invalid(self.status, self.invalid, self.generation, self.now)
        else:
            decision = decide(spec, self.status, obs, self.now)
        check_invariants(self.status, decision, self.workloads)
        if decision.status.phase != self.status.phase:
            self.phase_changes.add((self.status.phase, decision.status.phase))
        self._apply(decision)
        stored = status_from_dict(status_to_dict(decision.status))
        assert stored == decision.status, "status must survive the JSON round trip"
        self.status = stored
        self.decisions.append(decision)
        self.ticks.append((spec, obs, self.now, decision))
        self.events.extend(decision.events)
        return decision

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    def run_until(self, predicate: Callable[[World], bool], max_ticks: int = 200) -> None:
        for _ in range(max_ticks):
            self.tick()
            if predicate(self):
                return
        raise AssertionError(f"condition not reached; phase {self.status.phase}, message {self.status.message!r}")

    def run_until_phase(self, phase: Phase, max_ticks: int = 200) -> None:
        self.run_until(lambda w: w.status.phase is phase, max_ticks)

    def _apply(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, EnsureVersion):
                ready = 0 if action.version in self.never_ready else action.replicas
                self.workloads[action.version] = WorkloadState(True, action.replicas, ready, True)
            elif isinstance(action, ScaleDownVersion):
                self.workloads[action.version] = WorkloadState(True, 0, 0, True)
            elif isinstance(action, DeleteVersion):
                self.workloads.pop(action.version, None)

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


def condition_of(status: RolloutStatus, type_: str) -> Condition:
    """The status's condition of that type; a test reading one expects it to be set."""
    found = status.condition(type_)
    assert found is not None, f"no {type_} condition in {status.conditions}"
    return found


def check_invariants(persisted: RolloutStatus, decision: Decision, workloads: dict[str, WorkloadState]) -> None:
    new = decision.status
    assert new.phase is not None, f"decide() left the phase unset: {new}"
    assert is_allowed_transition(persisted.phase, new.phase), (persisted.phase, new.phase)
    if new.phase != persisted.phase:
        # Every transition is explained by an event (with the numbers behind it).
        assert decision.events, (persisted.phase, new.phase)
    t = new.traffic
    if t.stable is not None:
        weights = [t.stable.weight] + ([t.candidate.weight] if t.candidate else [])
        assert all(0 <= w <= 100 for w in weights) and sum(weights) == 100, t
    for entry in (t.stable, t.candidate):
        if entry is not None and entry.weight > 0:
            w = workloads.get(entry.version)
            # Routing to a version needs ready pods (stable is proven, so only new entries count).
            if not persisted.traffic.routes_to(entry.version):
                assert w is not None and w.ready_replicas > 0, (entry, w)
    if t.mirror is not None:
        assert 0 < t.mirror.percent <= 100
    if new.phase is not Phase.INVALID:
        # A candidate (or shadow) without a ready pod gets nothing, whatever else happens.
        shares: tuple[tuple[VersionWeight | MirrorTarget | None, int], ...] = (
            (t.candidate, t.candidate_weight),
            (t.mirror, t.mirror.percent if t.mirror else 0),
        )
        for target, share in shares:
            if target is not None and share > 0:
                w = workloads.get(target.version)
                assert w is not None and w.ready_replicas > 0, (new.phase, target, w)
    for action in decision.actions:
        if isinstance(action, (ScaleDownVersion, DeleteVersion)):
            assert not persisted.traffic.routes_to(action.version), action
            assert not t.routes_to(action.version), action
        if isinstance(action, DeleteVersion):
            refs = {e.version for e in (t.stable, t.candidate, t.mirror) if e is not None}
            assert action.version not in refs, action
