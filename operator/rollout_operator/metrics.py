"""The operator's own Prometheus metrics: phases, weights, each gate's last value and threshold, health.

Per-rollout gauges are rebuilt from a snapshot at scrape time, so a deleted rollout's series vanish
with `forget_rollout` instead of lingering; counters and histograms are ordinary prometheus_client ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .domain.phases import Phase

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILE_SECONDS = Histogram(
    "modelrollout_reconcile_duration_seconds",
    "Time of one reconcile tick (observe, decide, act, write).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "modelrollout_reconcile_errors_total",
    "Reconcile ticks that failed, by kind of failure.",
    ["kind"],
    registry=REGISTRY,
)
API_CALLS = Counter(
    "modelrollout_api_calls_total",
    "Kubernetes API calls made by the adapters.",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
PROMETHEUS_QUERIES = Counter(
    "modelrollout_prometheus_queries_total",
    "Prometheus queries by outcome (value, noData, error).",
    ["outcome"],
    registry=REGISTRY,
)
EVENTS = Counter("modelrollout_events_total", "Kubernetes events emitted, by reason.", ["reason"], registry=REGISTRY)
# 1 while this replica holds the leader Lease and reconciles (and, with --leader-election=false,
# while it runs at all); 0 while it stands by. Summed over the replicas, 1 is healthy.
LEADER = Gauge(
    "modelrollout_operator_leader",
    "1 while this operator replica leads (runs the reconciles), 0 on standby.",
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "modelrollout_status_writes_total", "Status patches written (unchanged statuses are skipped).", registry=REGISTRY
)
# Webhook notifications (adapters/webhooks.py) by receiver and how each ended: delivered, failed
# (a status that is not retried, or the last attempt failed) or dropped (the queue was full).
NOTIFICATIONS = Counter(
    "modelrollout_notifications_total",
    "Webhook notifications by receiver and result (delivered, failed, dropped).",
    ["receiver", "result"],
    registry=REGISTRY,
)
NOTIFICATION_QUEUE = Gauge(
    "modelrollout_notification_queue_depth",
    "Webhook notifications waiting for their first attempt or a retry.",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class Gate:
    value: float | None
    thresholds: Mapping[str, float]  # bound (min|max|maxIncrease|maxDecrease) -> number
    verdict: str | None


@dataclass(frozen=True)
class RolloutSnapshot:
    """What the gauges show for one rollout, taken after each reconcile."""

    phase: str | None
    weights: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (version, role) -> %
    mirror: tuple[str, int] | None = None
    gates: Mapping[str, Gate] = field(default_factory=dict)
    degraded: bool | None = None  # spec.monitoring's Degraded condition; None: not monitoring or not checked yet


class RolloutCollector(Collector):
    """Builds the per-rollout gauges from the latest snapshots."""

    def __init__(self) -> None:
        self._snapshots: dict[tuple[str, str], RolloutSnapshot] = {}
        self._lock = threading.Lock()

    def record(self, namespace: str, rollout: str, snapshot: RolloutSnapshot) -> None:
        with self._lock:
            self._snapshots[(namespace, rollout)] = snapshot

    def forget(self, namespace: str, rollout: str) -> None:
        with self._lock:
            self._snapshots.pop((namespace, rollout), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshots = dict(self._snapshots)
        phase = GaugeMetricFamily(
            "modelrollout_rollout_phase",
            "1 for the rollout's current phase, 0 otherwise.",
            labels=["namespace", "rollout", "phase"],
        )
        weight = GaugeMetricFamily(
            "modelrollout_traffic_weight",
            "Percent of user traffic per version.",
            labels=["namespace", "rollout", "version", "role"],
        )
        mirror = GaugeMetricFamily(
            "modelrollout_mirror_percent",
            "Percent of requests mirrored to a version.",
            labels=["namespace", "rollout", "version"],
        )
        value = GaugeMetricFamily(
            "modelrollout_analysis_value",
            "Last measured value of each gate.",
            labels=["namespace", "rollout", "metric"],
        )
        threshold = GaugeMetricFamily(
            "modelrollout_analysis_threshold",
            "Each gate's threshold by bound.",
            labels=["namespace", "rollout", "metric", "bound"],
        )
        degraded = GaugeMetricFamily(
            "modelrollout_degraded",
            "1 while spec.monitoring has the stable version Degraded, 0 when its gates pass "
            "(absent without spec.monitoring or before its first conclusive round).",
            labels=["namespace", "rollout"],
        )
        for (ns, name), snap in sorted(snapshots.items()):
            if snap.degraded is not None:
                degraded.add_metric([ns, name], 1.0 if snap.degraded else 0.0)
            for p in Phase:
                phase.add_metric([ns, name, p.value], 1.0 if snap.phase == p.value else 0.0)
            for (version, role), w in snap.weights.items():
                weight.add_metric([ns, name, version, role], float(w))
            if snap.mirror:
                mirror.add_metric([ns, name, snap.mirror[0]], float(snap.mirror[1]))
            for metric, gate in snap.gates.items():
                if gate.value is not None:
                    value.add_metric([ns, name, metric], gate.value)
                for bound, number in gate.thresholds.items():
                    threshold.add_metric([ns, name, metric, bound], number)
        yield from (phase, weight, mirror, value, threshold, degraded)


ROLLOUTS = RolloutCollector()
REGISTRY.register(ROLLOUTS)


def generate_text() -> str:
    """The exposition text of every operator metric (what /metrics serves)."""
    from prometheus_client import generate_latest

    return generate_latest(REGISTRY).decode()


def record_api_call(verb: str, resource: str, code: int) -> None:
    API_CALLS.labels(verb, resource, str(code)).inc()


def record_query(outcome: str) -> None:
    PROMETHEUS_QUERIES.labels(outcome).inc()


def record_notification(receiver: str, result: str) -> None:
    NOTIFICATIONS.labels(receiver, result).inc()


def record_notification_queue(depth: int) -> None:
    NOTIFICATION_QUEUE.set(depth)
