"""What the operator puts into pods, against the testbed's real API server: the operator's images
when a spec names none (no CRD default shadows them), hardened pods, PodDisruptionBudgets and
NetworkPolicies the API server accepts, pod-bound fields the operator refuses, and the chart's
namespaced RBAC being enough for all of it (the operator runs under a ServiceAccount holding
exactly the rendered rules, so the API server's RBAC escalation checks are real).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from e2e import scenario
from rollout_operator.adapters.kube import (
    DEPLOYMENTS,
    MODEL_ROLLOUTS,
    NETWORK_POLICIES,
    POD_DISRUPTION_BUDGETS,
    ROLE_BINDINGS,
    ROLES,
)
from tests.support.operator_harness import OperatorProcess, apply, delete_rollouts, kubectl, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVER_IMAGE = "registry.example/ml/model-server:7"
ROUTER_IMAGE = "registry.example/ml/router:7"


def _status(api, ns, name="speech"):
    return (api.get(MODEL_ROLLOUTS, ns, name) or {}).get("status") or {}


def _image(api, ns, name):
    dep = api.get(DEPLOYMENTS, ns, name)
    return dep and dep["spec"]["template"]["spec"]["containers"][0]["image"]


@pytest.fixture
def operator_with_images(tb, ns, prom, tmp_path):
    proc = OperatorProcess(tb, ns, prom.url, tmp_path)
    proc.args += [f"--model-server-image={SERVER_IMAGE}", f"--router-image={ROUTER_IMAGE}"]
    proc.start()
    yield proc
    delete_rollouts(tb, ns, operator_running=proc.proc is not None and proc.proc.poll() is None)
    proc.stop()


def test_a_rollout_without_images_gets_the_operators_images(tb, api, ns, operator_with_images):
    apply(tb, rollout_manifest("speech", ns, "v1"))
    stored = api.get(MODEL_ROLLOUTS, ns, "speech")["spec"]
    # The API server stores no image: nothing in the CRD shadows the operator's flags.
    assert "image" not in stored["server"], stored["server"]
    assert "image" not in stored["trafficRouting"]["router"], stored["trafficRouting"]
    assert (
        wait_for(lambda: _image(api, ns, "speech-v1"), "the v1 Deployment", describe=operator_with_images.log_tail)
        == SERVER_IMAGE
    )
    assert (
        wait_for(lambda: _image(api, ns, "speech"), "the router Deployment", describe=operator_with_images.log_tail)
        == ROUTER_IMAGE
    )


def test_a_spec_image_still_wins_over_the_operators(tb, api, ns, operator_with_images):
    manifest = rollout_manifest("speech", ns, "v1")
    manifest["spec"]["server"]["image"] = "registry.example/ml/model-server:8"
    manifest["spec"]["trafficRouting"] = {"router": {"image": "registry.example/ml/router:8"}}
    apply(tb, manifest)
    assert wait_for(lambda: _image(api, ns, "speech-v1"), "the v1 Deployment") == "registry.example/ml/model-server:8"
    assert wait_for(lambda: _image(api, ns, "speech"), "the router Deployment") == "registry.example/ml/router:8"


@pytest.mark.parametrize(
    "env, needle",
    [
        (
            [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}],
            "spec.server.env[].name: must not start with a reserved prefix",
        ),
        (
            [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "spec.server.env[]: set value or valueFrom, not both",
        ),
        ([{"name": "MY-VAR", "value": "1"}], "spec.server.env[0].name"),
    ],
)
def test_the_api_server_rejects_reserved_or_malformed_env(tb, crd, ns, env, needle):
    manifest = rollout_manifest("bad", ns, "v1")
    manifest["spec"]["server"]["env"] = env
    result = apply(tb, manifest, check=False)
    assert result.returncode != 0 and needle in result.stderr, result.stderr


def test_the_api_server_rejects_args_that_are_not_flag_equals_value(tb, crd, ns):
    manifest = rollout_manifest("bad", ns, "v1")
    manifest["spec"]["server"]["args"] = ["--max-batch", "8"]
    result = apply(tb, manifest, check=False)
    assert result.returncode != 0 and "spec.server.args[0]" in result.stderr, result.stderr


def test_a_secret_in_env_makes_the_rollout_invalid_and_reaches_no_pod(tb, api, ns, operator_with_images):
    manifest = rollout_manifest("speech", ns, "v1")
    manifest["spec"]["server"]["env"] = [
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    ]
    apply(tb, manifest)
    status = wait_for(
        lambda: _status(api, ns).get("phase") == "Invalid" and _status(api, ns),
        "phase Invalid",
        describe=operator_with_images.log_tail,
    )
    assert "spec.server.env[0].valueFrom" in status["message"] and "--allow-env-value-from" in status["message"]
    assert api.get(DEPLOYMENTS, ns, "speech-v1") is None


def test_a_router_binding_left_by_an_older_operator_does_not_block_the_rollout(tb, api, ns, operator):
    """Older operators bound `<rollout>-router` to their own Role; a roleRef cannot change, so
    the new binding to the chart's ClusterRole must not be applied over that one."""
    rules = [{"apiGroups": ["modelrollout.dev"], "resources": ["modelrollouts"], "verbs": ["get"]}]
    kubectl(
        tb,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(
            [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "speech-router", "namespace": ns},
                    "rules": rules,
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "speech-router", "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "speech-router"},
                    "subjects": [{"kind": "ServiceAccount", "name": "speech-router", "namespace": ns}],
                },
            ]
        ),
    )
    apply(tb, rollout_manifest("speech", ns, "v1"))
    wait_for(
        lambda: _status(api, ns).get("phase") == "Healthy", "phase Healthy", timeout=180, describe=operator.log_tail
    )
    assert api.get(ROLE_BINDINGS, ns, "speech.router")["roleRef"]["kind"] == "ClusterRole"


# --- the chart's namespaced RBAC, for real ---------------------------------------------------


def _render_rbac(helm: Path, release: str, namespace: str) -> list[dict]:
    """The chart's ServiceAccount, Roles and bindings for a release watching `namespace` only."""
    out = subprocess.run(
        [str(helm), "template", release, str(scenario.CHART), "--namespace", namespace, "--kube-version", "1.36.3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    return [
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] in kinds and "helm.sh/hook" not in d["metadata"].get("annotations", {})
    ]


def _service_account_cluster(tb: scenario.Cluster, namespace: str, account: str, tmp_path: Path) -> scenario.Cluster:
    """The same API server, as `account`: a kubeconfig with its (short-lived) token."""
    token = kubectl(tb, "create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(tb.kubeconfig.read_text())
    config["users"] = [{"name": config["users"][0]["name"], "user": {"token": token}}]
    path = tmp_path / "operator-sa.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return scenario.Cluster(kubeconfig=path, kubectl=tb.kubectl, helm=tb.helm, prometheus_url=tb.prometheus_url)


@pytest.fixture
def chart_rbac_operator(tb, ns, prom, tmp_path):
    release = f"it{uuid.uuid4().hex[:6]}"
    docs = _render_rbac(tb.helm, release, ns)
    cluster_scoped = [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    kubectl(tb, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    account = f"{release}-modelrollout"
    proc = OperatorProcess(_service_account_cluster(tb, ns, account, tmp_path), ns, prom.url, tmp_path)
    proc.args.append(f"--router-cluster-role={release}-modelrollout-router")
    proc.start()
    yield proc
    delete_rollouts(tb, ns, operator_running=proc.proc is not None and proc.proc.poll() is None)
    proc.stop()
    for d in cluster_scoped:
        kubectl(tb, "delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false", check=False)


def test_chart_rbac_is_enough_and_the_api_server_accepts_every_object(tb, api, ns, chart_rbac_operator):
    apply(tb, rollout_manifest("speech", ns, "v1"))
    status = wait_for(
        lambda: _status(api, ns).get("phase") == "Healthy" and _status(api, ns),
        "phase Healthy",
        timeout=180,
        describe=chart_rbac_operator.log_tail,
    )
    assert status["stableVersion"] == "v1"
    uid = api.get(MODEL_ROLLOUTS, ns, "speech")["metadata"]["uid"]
    role = chart_rbac_operator.args[-1].split("=", 1)[1]
    binding = api.get(ROLE_BINDINGS, ns, "speech.router")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
    assert api.list(ROLES, ns, "app.kubernetes.io/managed-by=modelrollout-operator") == []
    owned = [
        (POD_DISRUPTION_BUDGETS, "speech-v1"),
        (POD_DISRUPTION_BUDGETS, "speech"),
        (NETWORK_POLICIES, "speech.router"),
        (NETWORK_POLICIES, "speech.model-servers"),
    ]
    for ref, name in owned:
        obj = api.get(ref, ns, name)
        assert obj is not None, f"{ref.plural}/{name} missing"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("ModelRollout", uid)
    assert api.get(POD_DISRUPTION_BUDGETS, ns, "speech-v1")["spec"]["maxUnavailable"] == 1
    for name, token in (("speech-v1", False), ("speech", True)):
        pod = api.get(DEPLOYMENTS, ns, name)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is token
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The operator may bind the router's role and no other: binding `admin` is refused.
    as_operator = chart_rbac_operator.cluster
    escalate = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "steal", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "speech-router", "namespace": ns}],
    }
    refused = kubectl(as_operator, "apply", "-f", "-", stdin=yaml.safe_dump(escalate), check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
    # Garbage collection follows the owner references.
    kubectl(tb, "delete", "modelrollout", "speech", "-n", ns, "--timeout=90s")
    wait_for(lambda: all(api.get(ref, ns, name) is None for ref, name in owned), "owned objects collected", timeout=120)


def test_the_operator_cannot_touch_another_namespace(tb, ns, chart_rbac_operator):
    check = kubectl(
        chart_rbac_operator.cluster, "auth", "can-i", "create", "deployments.apps", "-n", "default", check=False
    )
    assert check.stdout.strip() == "no"
    assert (
        kubectl(
            chart_rbac_operator.cluster, "auth", "can-i", "create", "deployments.apps", "-n", ns, check=False
        ).stdout.strip()
        == "yes"
    )
    assert (
        kubectl(chart_rbac_operator.cluster, "auth", "can-i", "create", "roles", "-n", ns, check=False).stdout.strip()
        == "no"
    )
