"""Notifications from reconcile(): each decision event goes out as posted (same reason and message),
to the receivers the operator's defaults and the spec name; unknown names are a warning event, not
a failed rollout; a hung receiver never holds a reconcile; only the leader sends."""

from __future__ import annotations

import asyncio
import copy
import threading
from dataclasses import replace

import pytest

from rollout_operator.adapters.webhooks import WebhookNotifier
from rollout_operator.domain.notifications import NotificationConfig, parse_notification_config
from rollout_operator.settings import Settings
from tests.support.reconcile_world import SPEC, World, healthy
from tests.support.stub_prometheus import HungPrometheus
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.unit

DECISIONS = {"RolloutStarted", "StepStarted", "Paused", "WaitingForPromote", "Resumed", "Promoted"}


def _config(url: str = "http://hooks.test/in", timeout: float = 5) -> NotificationConfig:
    return parse_notification_config(
        {
            "receivers": [
                {"name": "audit", "url": url, "timeoutSeconds": timeout},
                {"name": "chat", "url": url, "format": "slack", "timeoutSeconds": timeout},
            ],
            "defaultReceivers": [{"receiver": "audit"}],
        }
    )


def _world(notifications=None, error_rate=0.001) -> World:
    spec = copy.deepcopy(SPEC)
    if notifications is not None:
        spec["notifications"] = notifications
    w = World(spec=spec, error_rate=error_rate)
    w.settings = Settings(notifications=_config())
    w.run_until(healthy("v1"))
    return w


def _events(w: World, reasons=None) -> list[tuple[str, str, str]]:
    return [e for e in w.adapters.events.events if reasons is None or e[1] in reasons]


def test_each_decision_goes_to_the_defaults_as_posted():
    w = _world()
    assert w.adapters.notifier.sent == [], "deploying the first version decides nothing to notify"
    w.set_version("v2")
    w.run_until(healthy("v2"))
    sent = w.adapters.notifier.sent
    posted = _events(w, DECISIONS)
    assert [p["reason"] for _, p in sent] == [reason for _, reason, _ in posted]
    assert [p["message"] for _, p in sent] == [message for _, _, message in posted], "the event's message, verbatim"
    assert {name for name, _ in sent} == {"audit"}
    assert [p["event"] for _, p in sent][0] == "started" and sent[-1][1]["event"] == "promoted"
    assert "step" in [p["event"] for _, p in sent]
    promoted = sent[-1][1]
    assert promoted["versions"] == {"stable": "v2", "candidate": ""} and promoted["phase"] == "Healthy"
    assert promoted["namespace"] == "ml" and promoted["rollout"] == "speech"


def test_a_rollback_is_sent_with_its_reason_and_message_to_the_spec_receiver_in_its_format():
    w = _world(notifications=[{"receiver": "chat", "events": ["rolledBack"]}], error_rate=0.2)
    w.set_version("v2")
    w.run_until(lambda s: s.get("phase") == "RolledBack")
    (rollback,) = [e for e in _events(w) if e[1] == "AnalysisFailed"]
    to_chat = [p for name, p in w.adapters.notifier.sent if name == "chat"]
    escaped = rollback[2].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert len(to_chat) == 1 and to_chat[0]["text"] == f"ml/speech: rolled back to v1 (AnalysisFailed): {escaped}"
    (audit_rollback,) = [p for name, p in w.adapters.notifier.sent if name == "audit" and p["event"] == "rolledBack"]
    assert audit_rollback["reason"] == "AnalysisFailed" and audit_rollback["message"] == rollback[2]
    assert audit_rollback["type"] == "Warning"


def test_an_unknown_receiver_is_one_warning_per_spec_generation_not_a_failed_rollout():
    w = _world(notifications=[{"receiver": "audit"}, {"receiver": "pager"}])
    warnings = _events(w, {"UnknownNotificationReceiver"})
    assert len(warnings) == 1, "one warning for the generation, however many ticks"
    assert warnings[0][0] == "Warning" and "spec.notifications[1].receiver 'pager'" in warnings[0][2]
    assert "known: audit, chat" in warnings[0][2]
    w.set_version("v2")  # a new generation: said again, and the rollout runs as usual
    w.run_until(healthy("v2"))
    assert len(_events(w, {"UnknownNotificationReceiver"})) == 2
    assert {name for name, _ in w.adapters.notifier.sent} == {"audit"}


def test_no_notifications_without_a_configuration():
    w = World()
    w.run_until(healthy("v1"))
    w.set_version("v2")
    w.run_until(healthy("v2"))
    assert w.adapters.notifier.sent == []
    assert not _events(w, {"UnknownNotificationReceiver"})


def test_a_refused_status_write_sends_nothing():
    w = _world()
    w.set_version("v2")
    stale = copy.deepcopy(w.obj)
    stale["metadata"]["resourceVersion"] = "0"  # another writer got there first: the write is refused
    from rollout_operator.reconcile import reconcile

    outcome = reconcile(stale, w.live, w.settings, w.now)
    assert outcome.conflict
    assert w.adapters.notifier.sent == [], "a refused decision is decided again; it is not announced"


def test_a_hung_receiver_and_a_full_queue_never_hold_the_rollout():
    with HungPrometheus() as hung:
        drops: list[str] = []
        notifier = WebhookNotifier(
            queue_size=2, workers=1, max_attempts=1, on_result=lambda name, result: drops.append(result)
        )
        w = _world()
        w.settings = Settings(notifications=_config(hung.url, timeout=30))
        w.live = replace(w.live, notifier=notifier)
        w.set_version("v2")
        w.run_until(healthy("v2"))  # every tick returned while the one worker hangs on the first POST
        # The worker thread connects on its own time: wait until the receiver holds its POST.
        wait_for(lambda: hung.waves == [1], "the one worker's first POST held by the hung receiver", timeout=10)
        assert hung.waves == [1]
        assert notifier.depth == 2
        assert drops and set(drops) == {"dropped"}
    # The receiver is gone, so the attempt in flight ends; no worker outlives the test.
    notifier.close(timeout=10)
    assert not [t for t in threading.enumerate() if t.name.startswith("webhook-")]


def test_only_the_leader_builds_a_notifier_a_standby_sends_nothing(monkeypatch):
    """Notifications come from reconcile(), which runs in kopf, which only the Lease holder runs
    (test_leadership.py); the notifier is built with kopf's runtime. A standby with receivers
    configured builds none and its receivers hear nothing."""
    from rollout_operator import main, runtime
    from rollout_operator.adapters.kube_lease import LeaseRecord
    from rollout_operator.handlers.leadership import ElectionTimings, Elector

    class HeldElsewhere:
        """A Lease another replica renews at every read: it never expires."""

        def __init__(self) -> None:
            self.reads = 0

        def fetch_lease(self) -> LeaseRecord:
            self.reads += 1
            return LeaseRecord("op-9", 30, f"renewal {self.reads}", "then", 1, str(self.reads))

        def apply_lease(self, old, holder, duration_seconds, now):
            raise AssertionError("a standby must not write a live Lease")

    built: list[Settings] = []
    monkeypatch.setattr(runtime, "build_notifier", lambda settings: built.append(settings))
    leases = HeldElsewhere()
    mine = Elector(leases, "op-0", ElectionTimings(lease_duration=30, renew_deadline=20, retry_period=0.02))
    monkeypatch.setattr(main, "build_elector", lambda settings, client: mine)
    monkeypatch.setattr(main, "load_api_client", lambda: None)
    with WebhookReceiver() as hook:
        settings = Settings(notifications=_config(hook.url))

        async def scenario():
            ready, stop = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(main.run_elected(settings, None, ready, stop))
            await asyncio.wait_for(ready.wait(), 5)
            for _ in range(10):  # several looks at the Lease, all standing by
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, 5)

        asyncio.run(scenario())
        assert not mine.is_leader and leases.reads > 1
        assert built == [] and hook.received == []
    assert not [t for t in threading.enumerate() if t.name.startswith("webhook-")]
