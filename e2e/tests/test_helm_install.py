"""The operator chart installed with the real `helm` into the testbed: the operator runs under
its own ServiceAccount (real RBAC), its CRD is served, `helm test` passes, metrics answer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from kubernetes import client

from e2e import scenario
from e2e.tests.support import operator_leader_pod

pytestmark = pytest.mark.e2e

NS, RELEASE = scenario.OPERATOR_NAMESPACE, scenario.RELEASE
SA = f"system:serviceaccount:{NS}:{RELEASE}"
REPLICAS = 2  # the chart's default: a leader and a standby (leader election)


def _operator_pod(api: client.ApiClient) -> client.V1Pod:
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(
            NS, label_selector=f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
        )
        .items
    )
    running = [p for p in pods if p.metadata.deletion_timestamp is None]
    assert len(running) == REPLICAS, [p.metadata.name for p in pods]
    return operator_leader_pod(api, running)


def _can_i(cluster: scenario.Cluster, verb: str, resource: str, namespace: str = "default") -> bool:
    proc = scenario.run_tool(
        cluster, cluster.kubectl, "auth", "can-i", verb, resource, f"--as={SA}", "-n", namespace, check=False
    )
    return proc.stdout.strip() == "yes"


def test_operator_pod_is_ready_under_its_own_service_account(api, operator):
    pod = _operator_pod(api)
    assert pod.spec.service_account_name == RELEASE
    ready = {c.type: c.status for c in pod.status.conditions or []}
    assert ready.get("Ready") == "True"
    desired, ready_replicas = scenario.fetch_deployment_replicas(api, NS, RELEASE)
    assert (desired, ready_replicas) == (REPLICAS, REPLICAS)


def test_crd_is_installed_by_the_chart_and_served(api, operator):
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition("modelrollouts.modelrollout.dev")
    established = {c.type: c.status for c in crd.status.conditions}
    assert established["Established"] == "True"
    assert crd.spec.names.short_names == ["mro"]
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        scenario.GROUP, scenario.VERSION, NS, scenario.PLURAL
    )
    assert isinstance(listed, dict) and listed["items"] == [], listed


def test_helm_test_passes(cluster, api, operator):
    # No --logs: the testbed has no kubelet log endpoint; the pod's phase is the verdict.
    proc = scenario.run_tool(cluster, cluster.helm, "test", RELEASE, "-n", NS, "--timeout", "120s", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Phase:          Failed" not in proc.stdout
    pod = client.CoreV1Api(api).read_namespaced_pod(f"{RELEASE}-test", NS)
    assert pod.status.phase == "Succeeded"


def test_rbac_is_real_and_least_privilege(cluster, operator):
    assert _can_i(cluster, "patch", "modelrollouts.modelrollout.dev/status")
    assert _can_i(cluster, "create", "deployments.apps")
    assert not _can_i(cluster, "get", "secrets")
    assert not _can_i(cluster, "list", "secrets", NS)
    assert not _can_i(cluster, "create", "pods")
    assert not _can_i(cluster, "delete", "customresourcedefinitions.apiextensions.k8s.io")


def test_operator_metrics_endpoint_answers(api, operator):
    addresses = scenario.fetch_ready_addresses(api, NS, f"{RELEASE}-metrics", port_name="metrics")
    assert len(addresses) == REPLICAS, addresses  # the standby is Ready and scraped too
    leaders = 0.0
    for address in addresses:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert resp.status == 200
        assert "modelrollout_" in body, "the operator exports its own modelrollout_* metrics"
        leaders += next(
            float(line.split()[1]) for line in body.splitlines() if line.startswith("modelrollout_operator_leader ")
        )
    assert leaders == 1.0, "exactly one replica reports itself the leader"


def test_upgrade_with_the_same_values_keeps_the_ready_operators(cluster, api, operator):
    scenario.ensure_operator(cluster, operator)
    desired, ready = scenario.fetch_deployment_replicas(api, NS, RELEASE)
    assert (desired, ready) == (REPLICAS, REPLICAS)


def test_alert_rules_and_dashboard_queries_are_valid_promql(cluster):
    """Every PrometheusRule expression and dashboard query parses in the testbed's real Prometheus."""
    rendered = scenario.run_tool(
        cluster,
        cluster.helm,
        "template",
        "mr",
        str(scenario.CHART),
        "--kube-version",
        "1.36.3",
        "--set",
        "prometheusRule.enabled=true,dashboards.enabled=true",
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    exprs = [r["expr"] for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
    (dashboard,) = [json.loads(d["data"]["modelrollout.json"]) for d in docs if d["kind"] == "ConfigMap"]
    exprs += [
        t["expr"].replace("$namespace", ".*").replace("$rollout", ".*")
        for p in dashboard["panels"]
        for t in p["targets"]
    ]
    assert len(exprs) >= 15
    rejected = []
    for expr in exprs:
        url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            urllib.request.urlopen(url, timeout=10).read()
        except urllib.error.HTTPError as err:  # 400 bad_data: the expression does not parse
            rejected.append((expr, err.read()[:200]))
    assert rejected == []
