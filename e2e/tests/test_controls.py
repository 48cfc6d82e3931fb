"""People in the loop, end to end: the kubectl plugin approving, aborting and retrying real
rollouts, `kubectl wait` on the conditions, and blue-green's post-promotion bake switching all
traffic back on its own.
"""

from __future__ import annotations

import time

import pytest

from e2e import rollouts, scenario
from e2e.load import LoadRunner
from e2e.tests.conftest import front_door
from e2e.tests.support import (
    KUBECONFIG_USER,
    NAME,
    ROLLOUT_TIMEOUT,
    assert_answered_only_by,
    deploy_first,
    metric,
    plugin,
)

pytestmark = pytest.mark.e2e

# A canary that stops for a person after the first weight.
GATED_CANARY = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"analysis": {}}, {"promote": {}}]


def _waiting_for_a_person(obj: dict) -> bool:
    status = obj.get("status") or {}
    return status.get("phase") == "Paused" and status.get("reason") == "WaitingForPromote"


def _handled(counter: str, value: int):
    def check(obj: dict) -> bool:
        return ((obj.get("status") or {}).get("handledRequests") or {}).get(counter, 0) >= value

    return check


def _condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


def _wait_condition(cluster, namespace: str, condition: str) -> None:
    """`kubectl wait` exactly as the README shows it; exit 0 is the assertion."""
    scenario.run_tool(
        cluster,
        cluster.kubectl,
        "wait",
        f"mro/{NAME}",
        "-n",
        namespace,
        f"--for=condition={condition}",
        "--timeout=120s",
        timeout=150,
    )


def test_plugin_aborts_retries_and_approves_a_canary(cluster, api, namespace):
    deploy_first(cluster, api, namespace, version="v1")
    manifest = rollouts.compute_rollout(NAME, "v2", {"canary": {"steps": GATED_CANARY}}, namespace=namespace)
    with LoadRunner(front_door(api, namespace, NAME)) as load:
        scenario.apply_manifest(cluster, manifest)
        obj = scenario.wait_for_rollout(
            api, namespace, NAME, _waiting_for_a_person, "v2 paused for approval", ROLLOUT_TIMEOUT
        )
        assert obj["status"]["traffic"]["candidate"] == {"version": "v2", "weight": 20}
        assert obj["status"]["pausedBy"] == "step"
        shown = plugin(cluster, namespace, "status")
        assert "Paused" in shown and "v2" in shown and "mean-confidence" in shown, shown

        # Abort: traffic back on v1, RolledBack/Aborted with who did it; not "broken".
        said = plugin(cluster, namespace, "abort")
        assert f"abort requested by {KUBECONFIG_USER}" in said, said
        _wait_condition(cluster, namespace, "RolledBack")
        status = scenario.fetch_rollout(api, namespace, NAME)["status"]
        assert (status["phase"], status["reason"]) == ("RolledBack", "Aborted"), status["message"]
        assert status["traffic"]["stable"] == {"version": "v1", "weight": 100}
        assert not status["traffic"].get("candidate")
        aborted = status["history"][-1]
        assert (aborted["version"], aborted["outcome"], aborted["reason"], aborted["by"]) == (
            "v2",
            "RolledBack",
            "Aborted",
            KUBECONFIG_USER,
        ), aborted
        assert _condition(status, "Ready")["status"] == "True", "v1 still serves: Ready stays True"
        scenario.wait_for_replicas(api, namespace, f"{NAME}-v2", 0)
        time.sleep(3)  # the router follows the status write
        t_aborted = load.elapsed()
        time.sleep(12)  # at least one whole 5 s load segment falls in here

        # Retry: the same candidate from step 1, fresh counters, paused at the gate again.
        t_retry = load.elapsed()
        plugin(cluster, namespace, "retry")
        obj = scenario.wait_for_rollout(
            api,
            namespace,
            NAME,
            lambda o: _handled("retry", 1)(o) and _waiting_for_a_person(o),
            "v2 retried and paused for approval again",
            ROLLOUT_TIMEOUT,
        )
        assert obj["status"]["traffic"]["candidate"] == {"version": "v2", "weight": 20}
        assert obj["status"]["analysis"]["rounds"] >= 1

        # Approve: the pause step completes, the canary runs on and promotes.
        plugin(cluster, namespace, "promote")
        _wait_condition(cluster, namespace, "Promoted")
    status = scenario.fetch_rollout(api, namespace, NAME)["status"]
    assert status["phase"] == "Healthy" and status["stableVersion"] == "v2"
    assert status["traffic"]["stable"] == {"version": "v2", "weight": 100}
    assert status["lastRequest"] == f"promote by {KUBECONFIG_USER}", status.get("lastRequest")
    assert status["handledRequests"] == {"promote": 1, "promoteFull": 0, "abort": 1, "retry": 1}
    outcomes = [(h["version"], h["outcome"]) for h in status["history"]]
    assert outcomes[-2:] == [("v2", "RolledBack"), ("v2", "Promoted")], outcomes
    reasons = [e["reason"] for e in scenario.fetch_events(api, namespace, NAME)]
    for reason in ("WaitingForPromote", "Aborted", "Retry", "PromoteRequested", "Promoted"):
        assert reason in reasons, f"no {reason} event: {reasons}"
    history_text = plugin(cluster, namespace, "history")
    assert "Aborted" in history_text and "Promoted" in history_text, history_text
    # Between the abort and the retry users got v1 only, and nobody saw an error.
    assert_answered_only_by(load.compute_totals(since=t_aborted, until=t_retry), "v1", "between abort and retry")


# A preview fed only clean clips passes; the users' traffic is half noisy audio, where v1 (a
# model trained on clean voices only) answers _silence_/_unknown_ for most clips. Standing in
# for a real gap between smoke traffic and production traffic.
BAKE_GATES = [
    {"name": "error-rate", "template": "error-rate", "max": 0.02},
    {"name": "unknown-rate", "template": "unknown-rate", "max": 0.3},
]
USER_MIX = {"clean": 1.0, "noisy": 1.0}


def test_blue_green_approved_with_the_plugin_then_switched_back_by_the_bake(cluster, api, namespace):
    deploy_first(cluster, api, namespace, version="v2")
    manifest = rollouts.compute_blue_green(
        NAME, "v1", namespace=namespace, gates=BAKE_GATES, auto_promote=False, post_promotion="90s"
    )
    with (
        LoadRunner(front_door(api, namespace, NAME), mix=USER_MIX, rate=20) as users,
        LoadRunner(front_door(api, namespace, f"{NAME}-preview"), mix={"clean": 1.0}, rate=5) as smoke,
    ):
        scenario.apply_manifest(cluster, manifest)
        obj = scenario.wait_for_rollout(
            api, namespace, NAME, _waiting_for_a_person, "v1 previewed and waiting for approval", ROLLOUT_TIMEOUT
        )
        status = obj["status"]
        assert status["traffic"]["stable"] == {"version": "v2", "weight": 100}
        assert metric(status, "unknown-rate")["verdict"] == "Pass", status["analysis"]
        t_approve = users.elapsed()
        assert_answered_only_by(users.compute_totals(until=t_approve), "v2", "before the approval")

        plugin(cluster, namespace, "promote")
        scenario.wait_for_rollout(
            api,
            namespace,
            NAME,
            lambda o: ((o["status"].get("traffic") or {}).get("candidate") or {}).get("weight") == 100,
            "the switch to v1",
            60,
        )
        _wait_condition(cluster, namespace, "RolledBack")
        time.sleep(3)  # the router follows the status write
        t_back = users.elapsed()
        time.sleep(12)
    status = scenario.fetch_rollout(api, namespace, NAME)["status"]
    assert (status["phase"], status["reason"]) == ("RolledBack", "AnalysisFailed"), status["message"]
    assert status["stableVersion"] == "v2" and status["candidateVersion"] == "v1"
    assert status["traffic"]["stable"] == {"version": "v2", "weight": 100}
    gate = metric(status, "unknown-rate")
    assert gate["verdict"] == "Fail" and gate["value"] > 0.3, gate
    assert status["history"][-1]["outcome"] == "RolledBack"
    assert status["lastRequest"] == f"promote by {KUBECONFIG_USER}"
    # The switch happened (users got v1 after the approval), then all of them went back to v2.
    assert users.compute_totals(since=t_approve)["v1"]["requests"] > 0
    assert_answered_only_by(users.compute_totals(since=t_back), "v2", "after the switch back")
    assert smoke.compute_totals()["v1"]["requests"] > 0
    warnings = [e for e in scenario.fetch_events(api, namespace, NAME) if e["type"] == "Warning"]
    assert any("unknown-rate" in e["message"] for e in warnings), warnings
