"""The shell's world for reconcile() tests: one ModelRollout object, the fake adapters, a clock.

Used by tests/unit/operator (reconcile, deadline, takeover, Prometheus outage tests).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

from rollout_operator.adapters import Adapters, build_fake_adapters
from rollout_operator.adapters.fakes import FakeMetrics, FakeWorkloads
from rollout_operator.domain import Measurement, QueryRequest
from rollout_operator.reconcile import reconcile
from rollout_operator.settings import Settings
from tests.support.domain_sim import CANARY, T0

# The domain simulation's canary (same model, server and steps) with the analysis these tests need.
SPEC: dict[str, Any] = {
    **copy.deepcopy({k: v for k, v in CANARY.items() if k != "analysis"}),
    "analysis": {
        "interval": "30s",
        "minSamples": 50,
        "failureLimit": 2,
        "prometheus": {"address": "http://prometheus.test:9090"},
        "metrics": [{"name": "error-rate", "template": "error-rate", "max": 0.01}],
    },
}


class CountingWorkloads(FakeWorkloads):
    """The fake Deployments, counting readiness reads (one per reconcile that gets that far)."""

    def __init__(self, auto_ready: bool = True) -> None:
        super().__init__(auto_ready=auto_ready)
        self.fetches = 0

    def fetch_workloads(self, namespace, rollout):
        self.fetches += 1
        return super().fetch_workloads(namespace, rollout)


class World:
    """The fake cluster: one ModelRollout object, fake adapters, a clock.

    `workloads` replaces the default fake Deployments with a subclass that counts or fails.
    """

    def __init__(self, spec=SPEC, error_rate=0.001, workloads: FakeWorkloads | None = None):
        self.adapters = replace(
            build_fake_adapters(),
            metrics=FakeMetrics(self.answer),
            workloads=FakeWorkloads() if workloads is None else workloads,
        )
        # What tick() reconciles with: the fakes above, or a copy of them with a real adapter a test
        # put in (`w.live = replace(w.live, metrics=PrometheusMetrics(...))`); the fakes stay inspectable.
        self.live: Adapters = self.adapters
        self.error_rate = error_rate
        self.now = T0
        self.settings = Settings(prometheus_url="")
        self.adapters.status.put(
            {
                "metadata": {"name": "speech", "namespace": "ml", "uid": "u1", "generation": 1},
                "spec": copy.deepcopy(spec),
            }
        )
        self.traffic_seen: list[tuple[tuple[str, int | None], ...]] = []  # (role, weight) per tick

    def answer(self, q: QueryRequest) -> Measurement:
        return Measurement.of(self.error_rate, samples=400)

    @property
    def obj(self):
        return self.adapters.status.objects[("ml", "speech")]

    @property
    def status(self):
        return self.obj.get("status", {})

    def set_version(self, version):
        self.obj["spec"]["model"]["version"] = version
        self.obj["spec"]["model"]["uri"] = f"file:///models/{version}.onnx"
        self.obj["metadata"]["generation"] += 1
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)

    def tick(self):
        outcome = reconcile(copy.deepcopy(self.obj), self.live, self.settings, self.now)
        self.check_invariants()
        self.now += timedelta(seconds=max(1.0, min(outcome.requeue_after, 15.0)))
        return outcome

    def check_invariants(self):
        traffic = self.status.get("traffic") or {}
        replicas = self.adapters.workloads.replicas("ml", "speech")
        for role in ("stable", "candidate"):
            entry = traffic.get(role)
            if entry and entry["weight"] > 0:
                assert replicas.get(entry["version"], 0) > 0, f"traffic on {entry} with replicas {replicas}"
        self.traffic_seen.append(tuple((r, (traffic.get(r) or {}).get("weight")) for r in ("stable", "candidate")))

    def run_until(self, predicate, limit=200):
        for _ in range(limit):
            self.tick()
            if predicate(self.status):
                return
        raise AssertionError(f"not reached after {limit} ticks; status: {self.status}")


def healthy(version):
    return lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == version
