"""The real operator process sends its decisions to a webhook on loopback: a canary from v1 to v2
arrives as started, steps and promoted, each payload the Kubernetes event the operator posted
(reason and message), a 503 on the first POST retried, delivery counted in /metrics; a spec
naming a receiver the operator lacks gets a warning event and still promotes."""

from __future__ import annotations

import json
import urllib.request

import pytest

from rollout_operator.adapters.kube import EVENTS, MODEL_ROLLOUTS
from tests.support.operator_harness import OperatorProcess, apply, delete_rollouts, rollout_manifest
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

DECISIONS = {"RolloutStarted", "StepStarted", "Paused", "WaitingForPromote", "Resumed", "Promoted"}


def _status(api, ns, name):
    return (api.get(MODEL_ROLLOUTS, ns, name) or {}).get("status") or {}


def _events(api, ns, name) -> list[dict]:
    return api.request("GET", EVENTS.path(ns), query={"fieldSelector": f"involvedObject.name={name}"})["items"]


def _manifest(ns: str, version: str) -> dict:
    manifest = rollout_manifest("speech", ns, version)
    manifest["spec"]["notifications"] = [{"receiver": "audit", "events": ["promoted"]}, {"receiver": "pager"}]
    return manifest


def test_decisions_reach_the_webhook_as_the_events_say(tb, api, ns, prom, tmp_path):
    with WebhookReceiver([503]) as hook:
        config = tmp_path / "notifications.json"
        config.write_text(
            json.dumps(
                {
                    "receivers": [{"name": "audit", "url": hook.url, "timeoutSeconds": 2}],
                    "defaultReceivers": [{"receiver": "audit"}],
                }
            )
        )
        operator = OperatorProcess(tb, ns, prom.url, tmp_path)
        operator.args.append(f"--notifications-file={config}")
        operator.start()
        try:
            apply(tb, _manifest(ns, "v1"))
            wait_for(
                lambda: _status(api, ns, "speech").get("phase") == "Healthy",
                "v1 Healthy",
                timeout=180,
                describe=operator.log_tail,
            )
            apply(tb, _manifest(ns, "v2"))
            wait_for(
                lambda: (
                    _status(api, ns, "speech").get("stableVersion") == "v2"
                    and _status(api, ns, "speech").get("phase") == "Healthy"
                ),
                "v2 promoted",
                timeout=240,
                describe=operator.log_tail,
            )
            wait_for(
                lambda: any(r.json["event"] == "promoted" for r in hook.received),
                "the promoted POST",
                timeout=60,
                describe=operator.log_tail,
            )
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/metrics", timeout=10).read().decode()
            events = _events(api, ns, "speech")
        finally:
            delete_rollouts(tb, ns, operator_running=operator.proc is not None and operator.proc.poll() is None)
            operator.stop()
        received = [r.json for r in hook.received]

    posted = {(e["reason"], e["message"]) for e in events if e["reason"] in DECISIONS}
    sent = {(p["reason"], p["message"]) for p in received}
    assert sent == posted, "each decision event exactly as posted, and nothing else"
    assert received.count(received[0]) == 2, "the first POST got a 503 and was sent again, unchanged"
    assert {p["event"] for p in received} >= {"started", "step", "promoted"}
    promoted = [p for p in received if p["event"] == "promoted"]
    assert len(promoted) == 1, "audit is both a default and named by the spec: one notification"
    assert promoted[0]["versions"] == {"stable": "v2", "candidate": ""}
    assert promoted[0]["namespace"] == ns and promoted[0]["rollout"] == "speech"
    (warning,) = [e for e in events if e["reason"] == "UnknownNotificationReceiver"][:1]
    assert warning["type"] == "Warning" and "spec.notifications[1].receiver 'pager'" in warning["message"]
    delivered = len(received) - 1  # all but the 503
    assert f'modelrollout_notifications_total{{receiver="audit",result="delivered"}} {delivered}.0' in metrics
    assert "modelrollout_notification_queue_depth 0.0" in metrics
