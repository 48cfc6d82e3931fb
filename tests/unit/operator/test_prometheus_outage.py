"""A Prometheus that accepts connections and never answers, through the real HTTP adapter and
reconcile(): one check round waits out ONE query timeout, however many queries it has.

Counted, not timed: the stub records "waves" (spans in which at least one query was open). Queries
run one after another make one wave per query; queries run together make one wave per round.
"""

import copy
import threading
from dataclasses import replace

import pytest

from rollout_operator.adapters.prometheus import PrometheusMetrics
from rollout_operator.domain import Measurement, QueryRequest, Role
from rollout_operator.reconcile import ROUND_CONCURRENCY, fetch_round
from tests.support.reconcile_world import SPEC, World, healthy
from tests.support.stub_prometheus import HungPrometheus

pytestmark = pytest.mark.unit


def _spec_with_gates(address: str) -> dict:
    spec = copy.deepcopy(SPEC)
    spec["analysis"]["prometheus"]["address"] = address
    spec["analysis"]["metrics"] = [
        {"name": "error-rate", "template": "error-rate", "max": 0.01},
        {"name": "p99-latency", "template": "latency-p99", "max": 0.5},
        {"name": "unknown-rate", "template": "unknown-rate", "max": 0.2, "relativeTo": "stable", "maxIncrease": 0.05},
    ]
    return spec


def test_a_hung_prometheus_costs_each_round_one_timeout_and_rolls_back_at_the_limit():
    with HungPrometheus() as hung:
        url = hung.url
        w = World(_spec_with_gates(url))
        w.run_until(healthy("v1"))  # the first version needs no analysis: nothing asked yet
        assert hung.waves == []
        w.live = replace(w.live, metrics=PrometheusMetrics(timeout=0.4))
        w.set_version("v2")
        w.run_until(lambda s: s.get("phase") == "RolledBack")
    status = w.status
    assert status["reason"] == "AnalysisError" and status["stableVersion"] == "v1"
    assert status["analysis"]["rounds"] == 4  # consecutiveErrorLimit's default
    # 4 gate queries (unknown-rate twice: candidate and stable), each with its sample count:
    # all 8 open at once, one wave per round; one after another would be 4 × 8 waves of 1.
    assert hung.waves == [8, 8, 8, 8]
    for gate in status["analysis"]["metrics"]:
        # The socket timeout and the total deadline are the same length: either may fire first.
        assert gate["consecutiveErrors"] == 4, gate
        assert f"Prometheus at {url} unreachable: " in gate["message"], gate
        assert "DeadlineExceeded" in gate["message"] or "TimeoutError" in gate["message"], gate


class RecordingMetrics:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []
        self._lock = threading.Lock()

    def fetch_measurement(self, address: str, request: QueryRequest, timeout: float | None = None) -> Measurement:
        with self._lock:
            self.timeouts.append(timeout)
        return Measurement.of(0.0, samples=100)


def test_a_round_is_bounded_by_its_interval_and_keeps_the_order_of_its_queries():
    from rollout_operator.adapters import Adapters, build_fake_adapters

    recording = RecordingMetrics()
    fakes: Adapters = build_fake_adapters()  # as the interface type: a real-shaped provider goes in
    adapters = replace(fakes, metrics=recording)
    requests = [
        QueryRequest(metric=f"m{i}", role=Role.CANDIDATE, version="v2", query=f"q{i}", samples_query=f"n{i}")
        for i in range(ROUND_CONCURRENCY * 2 + 1)
    ]
    results = fetch_round(adapters, "http://prometheus.test", requests, round_seconds=5.0)
    assert len(results) == len(requests) and all(r.value == 0.0 for r in results)
    timeouts = recording.timeouts
    assert len(timeouts) == len(requests) and all(t is not None and 0 < t <= 5.0 for t in timeouts)


def test_no_time_left_in_the_round_is_an_error_without_a_query():
    with HungPrometheus() as hung:
        m = PrometheusMetrics(timeout=5).fetch_measurement(
            hung.url, QueryRequest("m", Role.CANDIDATE, "v2", "q", "n"), timeout=0.0
        )
    assert m.kind.value == "error" and "deadline passed before this query could start" in m.message
    assert hung.waves == []
