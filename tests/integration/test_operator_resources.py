"""The operator against the testbed API server: owned objects, status, printer columns, events, CEL.

Model-server pods are real processes (the testbed's pod runner maps modelrollout/model-server:dev
to the venv's `speech-server`, loading the shipped builtin:v1 model), so readiness is real.
"""

from __future__ import annotations

import copy

import pytest
from kubernetes import config

from rollout_operator.adapters.kube import (
    DEPLOYMENTS,
    EVENTS,
    MODEL_ROLLOUTS,
    NETWORK_POLICIES,
    POD_DISRUPTION_BUDGETS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    SERVICES,
)
from rollout_operator.cli import main as plugin
from tests.support.operator_harness import apply, assert_rejected_at_admission, kubectl, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _status(api, ns, name="speech"):
    return (api.get(MODEL_ROLLOUTS, ns, name) or {}).get("status") or {}


def _events(api, ns, name="speech"):
    items = api.request("GET", EVENTS.path(ns), query={"fieldSelector": f"involvedObject.name={name}"})["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items]


def test_apply_creates_owned_workloads_router_and_healthy_status(tb, api, ns, operator):
    apply(tb, rollout_manifest("speech", ns, "v1"))
    obj = wait_for(lambda: api.get(MODEL_ROLLOUTS, ns, "speech"), "the ModelRollout")
    uid = obj["metadata"]["uid"]
    status = wait_for(
        lambda: _status(api, ns).get("phase") == "Healthy" and _status(api, ns),
        "phase Healthy",
        timeout=180,
        describe=operator.log_tail,
    )
    assert status["stableVersion"] == "v1"
    assert status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    owned = [
        (DEPLOYMENTS, "speech-v1"),
        (SERVICES, "speech-v1"),
        (DEPLOYMENTS, "speech"),
        (SERVICES, "speech"),
        (SERVICE_ACCOUNTS, "speech-router"),
        (ROLE_BINDINGS, "speech.router"),
        (POD_DISRUPTION_BUDGETS, "speech-v1"),
        (POD_DISRUPTION_BUDGETS, "speech"),
        (NETWORK_POLICIES, "speech.router"),
        (NETWORK_POLICIES, "speech.model-servers"),
    ]
    for ref, name in owned:
        child = api.get(ref, ns, name)
        assert child is not None, f"{ref.plural}/{name} missing"
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "ModelRollout",
            "speech",
            uid,
            True,
        )
    dep = api.get(DEPLOYMENTS, ns, "speech-v1")
    assert dep["status"].get("readyReplicas") == 1
    # kopf left no annotations on the user's object (GitOps: nothing but status changes).
    annotations = api.get(MODEL_ROLLOUTS, ns, "speech")["metadata"].get("annotations", {})
    assert not [a for a in annotations if "kopf" in a]
    reasons = [r for _, r, _ in _events(api, ns)]
    assert "Initializing" in reasons and "Ready" in reasons


def test_printer_columns_show_phase_versions_weight_and_step(tb, api, ns, operator, monkeypatch):
    apply(tb, rollout_manifest("speech", ns, "v1", steps=[{"setWeight": 20}, {"pause": {}}]))
    wait_for(lambda: _status(api, ns).get("phase") == "Healthy", "v1 Healthy", timeout=180, describe=operator.log_tail)
    apply(tb, rollout_manifest("speech", ns, "v2", steps=[{"setWeight": 20}, {"pause": {}}]))
    wait_for(
        lambda: _status(api, ns).get("phase") == "Paused", "the pause step", timeout=180, describe=operator.log_tail
    )
    table = kubectl(tb, "get", "mro", "speech", "-n", ns).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:7] == ["NAME", "PHASE", "STRATEGY", "STABLE", "CANDIDATE", "WEIGHT", "STEP"]
    assert row[:6] == ["speech", "Paused", "canary", "v1", "v2", "20"]
    # `kubectl modelrollout promote` is a spec patch; the operator finishes the rollout and names who.
    monkeypatch.setenv("KUBECONFIG", str(tb.kubeconfig))
    _, active = config.list_kube_config_contexts(config_file=str(tb.kubeconfig))
    user = active["context"]["user"]
    assert plugin(["-n", ns, "promote", "speech"]) == 0
    assert api.get(MODEL_ROLLOUTS, ns, "speech")["spec"]["requests"] == {"promote": 1, "by": user}
    wait_for(
        lambda: _status(api, ns).get("stableVersion") == "v2" and _status(api, ns).get("phase") == "Healthy",
        "promotion after the plugin's promote",
        timeout=180,
        describe=operator.log_tail,
    )
    # Events go out after the status write that made the rollout Healthy: wait for them too.
    wait_for(
        lambda: "Promoted" in [r for _, r, _ in _events(api, ns)],
        "the Promoted event",
        timeout=30,
        describe=operator.log_tail,
    )
    events = _events(api, ns)
    assert [r for _, r, _ in events].count("Promoted") == 1
    assert any(user in m for _, _, m in events), events
    assert _status(api, ns)["handledRequests"]["promote"] == 1


BASE = rollout_manifest("bad", "default", "v1")


def _broken(path, value):
    obj = copy.deepcopy(BASE)
    node = obj["spec"]
    *parents, leaf = path
    for key in parents:
        node = node[key]
    node[leaf] = value
    return obj


@pytest.mark.parametrize(
    "manifest, needles",
    [
        (
            _broken(["strategy", "canary", "steps"], [{"setWeight": 50}, {"setWeight": 10}]),
            ["spec.strategy.canary.steps", "must not decrease"],
        ),
        (
            _broken(["strategy", "canary", "steps"], [{"setWeight": 10, "pause": {}}]),
            ["spec.strategy.canary.steps", "exactly one of setWeight, setMirror, pause, analysis, promote"],
        ),
        (
            _broken(["strategy"], {"canary": {"steps": [{"setWeight": 10}]}, "blueGreen": {}}),
            ["spec.strategy", "exactly one of canary, blueGreen, shadow"],
        ),
        (_broken(["strategy", "canary", "steps"], [{"setWeight": 140}]), ["setWeight", "100"]),
        (_broken(["analysis", "interval"], "soon"), ["spec.analysis.interval"]),
        (_broken(["model", "version"], "V_2"), ["spec.model.version"]),
        (
            _broken(["analysis", "metrics"], [{"name": "g", "template": "p95", "max": 1}]),
            ["spec.analysis.metrics[0].template", 'supported values: "error-rate"', '"shadow-segment-agreement"'],
        ),
        (
            _broken(
                ["analysis", "metrics"],
                [{"name": "g", "template": "shadow-segment-agreement", "relativeTo": "stable", "maxDecrease": 0.1}],
            ),
            ["spec.analysis.metrics[0].relativeTo", "cannot be used with shadow-agreement or shadow-segment-agreement"],
        ),
    ],
)
def test_malformed_manifests_are_rejected_naming_the_field(tb, crd, ns, manifest, needles):
    assert_rejected_at_admission(tb, manifest, ns, needles)
