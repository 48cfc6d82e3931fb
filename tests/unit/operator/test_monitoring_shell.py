"""spec.monitoring through the shell: reconcile() runs the monitoring round's queries through
the metrics adapter (also with no spec.analysis at all), writes status.monitoring and the Degraded
condition, posts the Degraded/Recovered events, sends them as degraded/recovered notifications,
and shows modelrollout_degraded; `status` prints the Degraded line."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from rollout_operator import metrics as m
from rollout_operator.cli import compute_status_text
from rollout_operator.domain import Measurement, QueryRequest, Role
from rollout_operator.domain.notifications import EventKind, NotificationConfig, NotificationRule, Receiver
from tests.support.reconcile_world import SPEC, World, healthy

pytestmark = pytest.mark.unit

MONITORED = {
    **{k: v for k, v in copy.deepcopy(SPEC).items() if k not in ("analysis", "strategy")},
    "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
    "monitoring": {
        "interval": "30s",
        "failureLimit": 1,
        "metrics": [{"name": "unknown-rate", "template": "unknown-rate", "max": 0.2}],
    },
}


class MonitoredWorld(World):
    def __init__(self) -> None:
        super().__init__(MONITORED)
        self.unknown = 0.05
        self.asked: list[QueryRequest] = []
        self.settings = replace(self.settings, prometheus_url="http://prometheus.test:9090")

    def answer(self, q: QueryRequest) -> Measurement:
        self.asked.append(q)
        return Measurement.of(self.unknown, samples=412)


def degraded_condition(status):
    return next(c for c in status["conditions"] if c["type"] == "Degraded")


def test_monitoring_without_analysis_goes_degraded_and_recovers_through_the_shell():
    w = MonitoredWorld()
    w.run_until(healthy("v1"))
    w.run_until(lambda s: (s.get("monitoring") or {}).get("degraded") is False)
    assert w.asked and all(q.role is Role.STABLE and q.version == "v1" for q in w.asked)
    text = m.generate_text()
    assert 'modelrollout_degraded{namespace="ml",rollout="speech"} 0.0' in text
    w.unknown = 0.31
    w.run_until(lambda s: degraded_condition(s)["status"] == "True")
    c = degraded_condition(w.status)
    assert c["reason"] == "unknown-rate"
    assert c["message"] == "unknown-rate 0.31 > max 0.2 (n=412) for 1 round on stable v1"
    assert w.status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert 'modelrollout_degraded{namespace="ml",rollout="speech"} 1.0' in m.generate_text()
    assert "Degraded" in w.adapters.events.reasons()
    out = compute_status_text(w.obj, [])
    assert "  Degraded:  True (unknown-rate) unknown-rate 0.31 > max 0.2 (n=412)" in out
    assert "unknown-rate" in out.split("MONITOR")[1]
    w.unknown = 0.02
    w.run_until(lambda s: degraded_condition(s)["status"] == "False")
    assert degraded_condition(w.status)["reason"] == "Recovered"
    assert w.adapters.events.reasons().count("Recovered") == 1
    assert 'modelrollout_degraded{namespace="ml",rollout="speech"} 0.0' in m.generate_text()


def test_degraded_and_recovered_events_are_sent_as_notifications():
    w = MonitoredWorld()
    w.settings = replace(
        w.settings,
        notifications=NotificationConfig(
            receivers={"chat": Receiver("chat", "http://hooks.test/chat")},
            defaults=(NotificationRule("chat", frozenset({EventKind.DEGRADED, EventKind.RECOVERED})),),
        ),
    )
    w.run_until(healthy("v1"))
    w.unknown = 0.31
    w.run_until(lambda s: (s.get("monitoring") or {}).get("degraded") is True)
    w.unknown = 0.02
    w.run_until(lambda s: (s.get("monitoring") or {}).get("degraded") is False)
    kinds = [payload["event"] for _, payload in w.adapters.notifier.sent]
    assert kinds == ["degraded", "recovered"]


def test_status_text_has_no_degraded_line_without_monitoring():
    obj = {"metadata": {"name": "a", "namespace": "b"}, "status": {"phase": "Healthy"}}
    assert "Degraded" not in compute_status_text(obj, [])
