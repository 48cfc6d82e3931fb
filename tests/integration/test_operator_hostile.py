"""Hostile and careless ModelRollouts against the testbed API server: what admission rejects (with the
field in the message), what only Kubernetes rejects downstream (the rollout ends Invalid naming the
field instead of retrying with no phase), and objects the operator did not create (never taken over).
"""

from __future__ import annotations

import copy

import pytest

from rollout_operator.adapters.kube import DEPLOYMENTS, MODEL_ROLLOUTS, SERVICES
from tests.support.operator_harness import apply, assert_rejected_at_admission, kubectl, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

BASE = rollout_manifest("speech", "default", "v1")


def _changed(change):
    obj = copy.deepcopy(BASE)
    change(obj)
    return obj


def _status(api, ns, name="speech"):
    return (api.get(MODEL_ROLLOUTS, ns, name) or {}).get("status") or {}


@pytest.mark.parametrize(
    "manifest, needles",
    [
        (
            _changed(lambda o: o["spec"]["model"].__setitem__("name", 'speech"} or vector(1)')),
            ["spec.model.name", "should match"],
        ),
        (
            _changed(lambda o: o["spec"]["model"].__setitem__("version", "preview")),
            ["spec.model.version", "must not be 'preview'"],
        ),
        (
            _changed(lambda o: o["metadata"].__setitem__("name", "my.model")),
            ["metadata.name: must be a DNS-1035 label of at most 55 characters"],
        ),
        (
            _changed(lambda o: o["spec"]["analysis"].__setitem__("interval", "100ms")),
            ["spec.analysis.interval", "must be at least 1s"],
        ),
        (
            _changed(lambda o: o["spec"]["analysis"].__setitem__("window", "500ms")),
            ["spec.analysis.window", "must be at least 1s"],
        ),
        (
            _changed(lambda o: o["spec"]["analysis"].__setitem__("metrics", [])),
            ["spec.strategy.canary.steps[].analysis: needs spec.analysis.metrics"],
        ),
        (
            _changed(lambda o: o["spec"].__setitem__("trafficRouting", {"router": {"stickyHeader": "X-User: 1"}})),
            ["spec.trafficRouting.router.stickyHeader", "should match"],
        ),
        (
            _changed(lambda o: o["spec"]["analysis"].__setitem__("prometheus", {"address": "http://u:p@prom:9090"})),
            ["spec.analysis.prometheus.address", "should match"],
        ),
        (
            _changed(
                lambda o: o["spec"].__setitem__("trafficRouting", {"gatewayAPI": {"httpRoute": "../../secrets/x"}})
            ),
            ["spec.trafficRouting.gatewayAPI.httpRoute", "should match"],
        ),
    ],
)
def test_hostile_manifests_are_rejected_at_admission_naming_the_field(tb, crd, ns, manifest, needles):
    assert_rejected_at_admission(tb, manifest, ns, needles)


def test_an_object_the_operator_did_not_create_is_not_taken_over(tb, api, ns, operator):
    kubectl(tb, "-n", ns, "create", "service", "clusterip", "speech-v1", "--tcp=80:8080")
    before = api.get(SERVICES, ns, "speech-v1")
    apply(tb, rollout_manifest("speech", ns, "v1"))
    status = wait_for(
        lambda: _status(api, ns).get("phase") == "Invalid" and _status(api, ns),
        "phase Invalid",
        timeout=120,
        describe=operator.log_tail,
    )
    assert status["message"].startswith(
        f"spec.model.version: Service {ns}/speech-v1 already exists and is not created by this operator"
    ), status["message"]
    after = api.get(SERVICES, ns, "speech-v1")
    assert after["spec"]["selector"] == before["spec"]["selector"]
    assert not after["metadata"].get("ownerReferences")
    assert api.get(DEPLOYMENTS, ns, "speech-v1") is None


def test_a_spec_only_kubernetes_rejects_ends_invalid_naming_the_field(tb, api, ns, operator):
    # Valid quantities (admission accepts them) that no Deployment may have: requests above limits.
    manifest = rollout_manifest("speech", ns, "v1")
    manifest["spec"]["server"]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    apply(tb, manifest)
    status = wait_for(
        lambda: _status(api, ns).get("phase") == "Invalid" and _status(api, ns),
        "phase Invalid",
        timeout=120,
        describe=operator.log_tail,
    )
    assert status["message"].startswith("spec.server.resources: rejected by the API server: "), status["message"]
    assert "must be less than or equal to cpu limit" in status["message"]
    assert api.get(DEPLOYMENTS, ns, "speech-v1") is None


def test_a_prometheus_trickling_its_answers_rolls_the_candidate_back_at_the_error_limit(tb, api, ns, tmp_path):
    # Before the total deadline, each query waited as long as bytes kept coming: the rollout
    # froze at its current weight and neither the error limit nor the deadline fired.
    from tests.support.operator_harness import OperatorProcess
    from tests.support.stub_prometheus import TricklingPrometheus, vector

    with TricklingPrometheus(vector(0.001), delay=0.05) as slow:
        proc = OperatorProcess(tb, ns, slow.url, tmp_path)
        proc.args.append("--prometheus-timeout=1")
        proc.start()
        try:
            apply(tb, rollout_manifest("speech", ns, "v1"))
            wait_for(
                lambda: _status(api, ns).get("phase") == "Healthy", "v1 Healthy", timeout=180, describe=proc.log_tail
            )
            apply(tb, rollout_manifest("speech", ns, "v2"))
            status = wait_for(
                lambda: _status(api, ns).get("phase") == "RolledBack" and _status(api, ns),
                "v2 rolled back",
                timeout=180,
                describe=proc.log_tail,
            )
        finally:
            proc.stop()
    gate = status["analysis"]["metrics"][0]
    assert "DeadlineExceeded: no complete answer within 1s" in gate["message"], gate
    assert gate["consecutiveErrors"] == 4  # the CRD's default consecutiveErrorLimit
    assert status["stableVersion"] == "v1"
    assert status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
