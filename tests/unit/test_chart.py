"""Tests of the operator Helm chart: lint, renders for default and non-default values, the
values schema, least-privilege RBAC, and that the chart's CRD copy matches crds/.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from e2e.helm import find_helm
from rollout_operator.settings import Settings, load_settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelrollout"
KUBE_VERSION = "1.36.3"

NON_DEFAULT = {
    "image": {"repository": "registry.example/mr/operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "operator": {
        "watchNamespaces": ["team-a", "team-b"],
        "logLevel": "debug",
        "prometheusUrl": "http://prometheus.monitoring:9090",
        "tickInterval": 0.5,
        "port": 9102,
        "routerEndpointsSource": "pods",
        "extraArgs": ["--max-workers=4"],
    },
    "rbac": {"gatewayAPI": False},
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
        "podMonitor": {"enabled": True, "namespaces": ["team-a"]},
    },
    "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
    "dashboards": {"enabled": True},
    "helmTest": {"enabled": False},
}


def _run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(find_helm()), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _values_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _render(*extra: str, namespace: str = "modelrollout-system") -> list[dict]:
    out = _run_helm(
        "template", "mr", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION, *extra
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in doc["metadata"].get("annotations", {})


def _is_election(doc: dict) -> bool:
    """The leader election Role/RoleBinding: the Lease in the release namespace, nothing else."""
    return doc["metadata"]["name"].endswith("-leader-election")


def _deployment(docs: list[dict]) -> dict:
    (dep,) = _by_kind(docs, "Deployment")
    return dep


def _all_rules(docs: list[dict]) -> list[dict]:
    return [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]


def test_lint_strict_passes_for_default_and_non_default_values(tmp_path):
    _run_helm("lint", "--strict", str(CHART))
    _run_helm("lint", "--strict", str(CHART), "-f", _values_file(tmp_path, NON_DEFAULT))


def test_default_render_has_the_expected_objects_and_no_optional_ones():
    kinds = sorted(d["kind"] for d in _render())
    assert kinds == sorted(
        [
            "ServiceAccount",
            "Service",
            "Deployment",
            # discovery (CRDs, namespace names) and the routers' read-only role
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            # the operator's rules, in the release namespace only
            "Role",
            "RoleBinding",
            # the helm test hook: its pod and its own read-only identity
            "Pod",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            # two replicas: the leader election Lease grant and a disruption budget
            "Role",
            "RoleBinding",
            "PodDisruptionBudget",
        ]
    )


def test_default_deployment_is_secure_two_replicas_rolling_with_leader_election():
    dep = _deployment(_render())
    spec = dep["spec"]
    assert spec["replicas"] == 2
    # A new standby must be Ready before an old replica stops: never zero replicas to take over.
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "command" not in container, "the image's entrypoint must run (testbed contract)"
    assert container["image"] == "modelrollout/operator:dev"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["serviceAccountName"] == "mr-modelrollout"
    # The token is needed (it is the operator's API identity); nothing else is injected, and the
    # read-only root filesystem leaves only a bounded /tmp to write.
    assert pod["automountServiceAccountToken"] is True and pod["enableServiceLinks"] is False
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_leader_election_args_env_and_least_privilege_lease_grant():
    docs = _render()
    pod = _deployment(docs)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = _settings_from_container(container)
    assert settings.leader_election is True
    assert settings.leader_election_namespace == "modelrollout-system"
    assert settings.leader_election_lease == "mr-modelrollout"
    assert settings.leader_election_identity == "mr-modelrollout-0"
    assert (
        settings.leader_election_lease_duration,
        settings.leader_election_renew_deadline,
        settings.leader_election_retry_period,
    ) == (15, 10, 2)
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (role,) = [r for r in _by_kind(docs, "Role") if _is_election(r)]
    assert role["metadata"]["namespace"] == "modelrollout-system"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["mr-modelrollout"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    (binding,) = [b for b in _by_kind(docs, "RoleBinding") if _is_election(b)]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == "mr-modelrollout"
    (pdb,) = _by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == _deployment(docs)["spec"]["selector"]["matchLabels"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_one_replica_without_election_is_recreate_with_no_lease_grant_or_budget():
    docs = _render("--set", "replicaCount=1,leaderElection.enabled=false")
    spec = _deployment(docs)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    assert _settings_from_container(container).leader_election is False
    assert not [r for r in _by_kind(docs, "Role") if _is_election(r)]
    assert not _by_kind(docs, "PodDisruptionBudget") and "affinity" not in spec["template"]["spec"]
    proc = _run_helm(
        "template",
        "mr",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "leaderElection.enabled=false",
        check=False,
    )
    assert proc.returncode != 0 and "replicaCount > 1 needs leaderElection.enabled=true" in proc.stderr


def _settings_from_container(container: dict, pod_ip: str = "127.0.0.9"):
    """Parses the rendered args with the operator's own settings parser, as the pod would."""
    pod_env = {"$(POD_IP)": pod_ip, "$(POD_NAMESPACE)": "modelrollout-system", "$(POD_NAME)": "mr-modelrollout-0"}
    args = list(container["args"])
    for var, value in pod_env.items():
        args = [a.replace(var, value) for a in args]
    return load_settings(args, environ={})


def test_default_args_are_accepted_by_the_operator_settings():
    (container,) = _deployment(_render())["spec"]["template"]["spec"]["containers"]
    settings = _settings_from_container(container)
    assert settings.host == "127.0.0.9"
    assert settings.port == 8080
    assert settings.namespaces == ("modelrollout-system",), "namespaced by default: the release namespace"
    assert settings.router_image == "modelrollout/router:dev"
    assert settings.router_endpoints_source == "endpointslices"
    assert settings.model_server_image == "modelrollout/model-server:dev"
    assert settings.router_cluster_role == "mr-modelrollout-router"
    # The chart's defaults are the operator's: pods, policies and what specs may set.
    assert settings.pod_settings() == Settings(router_cluster_role="mr-modelrollout-router").pod_settings()
    assert settings.pod_policy() == Settings().pod_policy()
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    annotations = _deployment(_render())["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8080"


def test_non_default_values_reach_the_operator_and_its_objects(tmp_path):
    docs = _render("-f", _values_file(tmp_path, NON_DEFAULT))
    (container,) = _deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/mr/operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    settings = _settings_from_container(container)
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.log_level == "debug"
    assert settings.prometheus_url == "http://prometheus.monitoring:9090"
    assert settings.tick_interval == 0.5
    assert settings.port == 9102
    assert settings.max_workers == 4
    assert settings.router_endpoints_source == "pods"
    assert container["ports"] == [{"name": "http", "containerPort": 9102, "protocol": "TCP"}]
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    assert "Pod" not in kinds, "helmTest.enabled=false must drop the test pod"


def test_namespaced_mode_grants_workload_rules_only_in_the_watched_namespaces(tmp_path):
    docs = _render("-f", _values_file(tmp_path, NON_DEFAULT))
    roles = [r for r in _by_kind(docs, "Role") if not _is_hook(r) and not _is_election(r)]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = [b for b in _by_kind(docs, "RoleBinding") if not _is_hook(b) and not _is_election(b)]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "mr-modelrollout", "namespace": "modelrollout-system"}
        ]
    # (The routers' read-only ClusterRole is only ever bound per namespace, by RoleBindings.)
    cluster_resources = {
        res
        for d in _by_kind(docs, "ClusterRole")
        for r in d["rules"]
        for res in r["resources"]
        if d["metadata"]["name"] != "mr-modelrollout-router"
    }
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}, (
        "in namespaced mode the only cluster-wide grants are reading CRDs and namespace names"
    )
    cluster_verbs = {
        v
        for d in _by_kind(docs, "ClusterRole")
        for r in d["rules"]
        for v in r["verbs"]
        if d["metadata"]["name"] != "mr-modelrollout-router"
    }
    assert cluster_verbs <= {"get", "list", "watch"}
    assert not any("gateway.networking.k8s.io" in r["apiGroups"] for r in _all_rules(docs))


def _operator_rules(docs: list[dict]) -> list[dict]:
    """The rules granted to the operator's own ServiceAccount (not the routers', not helm test's)."""
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
        for b in docs
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and not _is_hook(b)
        and any(s["name"] == "mr-modelrollout" for s in b["subjects"])
    }
    return [
        r
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        and (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace") if d["kind"] == "Role" else None)
        in {(k, n, ns if k == "Role" else None) for k, n, ns in bound}
        for r in d["rules"]
    ]


def _grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}


def test_default_rbac_covers_what_the_operator_manages():
    granted = _grants(_operator_rules(_render()))
    needed = [
        ("modelrollout.dev", "modelrollouts", "watch"),
        ("modelrollout.dev", "modelrollouts/status", "patch"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "delete"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments", "list"),
        ("apps", "deployments", "watch"),  # readiness changes tick a rollout at once
        ("", "services", "create"),
        ("", "services", "delete"),
        ("", "events", "create"),
        # the router's own identity and its binding to the chart's ClusterRole
        ("", "serviceaccounts", "patch"),
        ("rbac.authorization.k8s.io", "rolebindings", "create"),
        ("rbac.authorization.k8s.io", "rolebindings", "patch"),
        ("rbac.authorization.k8s.io", "clusterroles", "bind"),
        # a budget per Deployment (deleted with a retired version), the rollout's policies
        ("policy", "poddisruptionbudgets", "create"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("policy", "poddisruptionbudgets", "delete"),
        ("networking.k8s.io", "networkpolicies", "create"),
        ("networking.k8s.io", "networkpolicies", "patch"),
        ("networking.k8s.io", "networkpolicies", "delete"),
        ("gateway.networking.k8s.io", "httproutes", "patch"),
    ]
    missing = [n for n in needed if n not in granted]
    assert not missing


def test_the_operator_creates_no_roles_and_holds_none_of_the_routers_reads():
    docs = _render()
    granted = _grants(_operator_rules(docs))
    assert not [g for g in granted if g[1] == "roles"], "the operator never writes RBAC rules"
    assert not [g for g in granted if g[1] in ("endpointslices", "pods")]
    (bind,) = [r for r in _operator_rules(docs) if "bind" in r["verbs"]]
    assert bind == {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "verbs": ["bind"],
        "resourceNames": ["mr-modelrollout-router"],
    }
    (router_role,) = [d for d in _by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "mr-modelrollout-router"]
    assert _grants(router_role["rules"]) == {
        ("modelrollout.dev", "modelrollouts", v) for v in ("get", "list", "watch")
    } | {("discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")} | {
        ("", "pods", "list"),
        ("", "pods", "watch"),
    }
    assert not [
        b
        for b in docs
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding") and b["roleRef"]["name"] == "mr-modelrollout-router"
    ], "the operator binds it per rollout"


def test_default_is_namespaced_to_the_release_namespace():
    docs = _render()
    (role,) = [r for r in _by_kind(docs, "Role") if not _is_hook(r) and not _is_election(r)]
    (binding,) = [b for b in _by_kind(docs, "RoleBinding") if not _is_hook(b) and not _is_election(b)]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "modelrollout-system"
    cluster = [
        r
        for d in _by_kind(docs, "ClusterRole")
        if d["metadata"]["name"] != "mr-modelrollout-router"
        for r in d["rules"]
    ]
    assert {res for r in cluster for res in r["resources"]} == {"customresourcedefinitions", "namespaces"}
    assert {v for r in cluster for v in r["verbs"]} <= {"get", "list", "watch"}
    assert not [b for b in _by_kind(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == "mr-modelrollout"]


def test_cluster_wide_is_an_opt_in_with_the_same_rules(tmp_path):
    docs = _render("--set", "operator.clusterWide=true")
    (container,) = _deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert _settings_from_container(container).namespaces == ()
    (cluster_role,) = [d for d in _by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "mr-modelrollout"]
    assert [r for r in _by_kind(docs, "Role") if not _is_hook(r) and not _is_election(r)] == []
    namespaced = [r for r in _by_kind(_render(), "Role") if not _is_hook(r) and not _is_election(r)][0]
    assert cluster_role["rules"] == namespaced["rules"]
    proc = _run_helm(
        "template",
        "mr",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "operator.clusterWide=true,operator.watchNamespaces={team-a}",
        check=False,
    )
    assert proc.returncode != 0 and "leave operator.watchNamespaces empty" in proc.stderr


def test_pod_and_policy_values_reach_the_operator(tmp_path):
    values = {
        "operator": {
            "allowedImageRegistries": ["registry.example/ml"],
            "routerImage": "registry.example/ml/router:1",
            "modelServerImage": "registry.example/ml/model-server:1",
            "allowEnvValueFrom": True,
            "modelServerAllowedArgs": ["max-batch"],
            "podRunAsUser": 10001,
            "routerResources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            "modelServerResources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "3", "memory": "4Gi"},
            },
            "networkPolicies": {
                "enabled": False,
                "prometheusNamespaceSelector": "team=obs",
                "prometheusPodSelector": "app=prom,tier=db",
            },
        }
    }
    (container,) = _deployment(_render("-f", _values_file(tmp_path, values)))["spec"]["template"]["spec"]["containers"]
    s = _settings_from_container(container)
    assert s.allowed_image_registries == ("registry.example/ml",) and s.allow_env_value_from is True
    assert s.model_server_allowed_args == ("max-batch",) and s.pod_run_as_user == 10001
    assert (s.router_cpu_request, s.router_memory_request, s.router_cpu_limit, s.router_memory_limit) == (
        "1",
        "1Gi",
        "2",
        "2Gi",
    )
    assert (
        s.model_server_cpu_request,
        s.model_server_memory_request,
        s.model_server_cpu_limit,
        s.model_server_memory_limit,
    ) == ("500m", "512Mi", "3", "4Gi")
    pods = s.pod_settings()
    assert s.pod_policy().network_policies is False
    assert pods.prometheus_namespace_labels == {"team": "obs"}
    assert pods.prometheus_pod_labels == {"app": "prom", "tier": "db"}


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_rbac_never_grants_secrets_or_wildcards(tmp_path, values):
    rules = _all_rules(_render("-f", _values_file(tmp_path, values)))
    assert rules
    for rule in rules:
        assert "secrets" not in rule["resources"], rule
        assert "*" not in rule["resources"] and "*" not in rule["verbs"], rule
        assert "*" not in rule["apiGroups"], rule
        assert not {"escalate", "impersonate"} & set(rule["verbs"]), rule
        # `bind` only on the routers' read-only ClusterRole, by name.
        if "bind" in rule["verbs"]:
            assert rule["verbs"] == ["bind"] and rule["resources"] == ["clusterroles"], rule
            assert rule["resourceNames"] == ["mr-modelrollout-router"], rule


def test_every_rbac_rule_carries_a_comment_saying_why():
    out = _run_helm("template", "mr", str(CHART), "--kube-version", KUBE_VERSION).stdout
    for doc in out.split("\n---"):
        if not re.search(r"^kind: (Cluster)?Role$", doc, re.M):
            continue
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[i - 1].strip().startswith("#"), f"rule without a why-comment: {line!r}"


@pytest.mark.parametrize(
    "override, message",
    [
        ("unknownTopLevel=1", "unknownTopLevel"),
        ("operator.tickIntervall=2", "tickIntervall"),
        ("metrics.serviceMonitor.enable=true", "enable"),
        ("operator.logLevel=verbose", "logLevel"),
        ("operator.prometheusUrl=prometheus:9090", "prometheusUrl"),
        ("operator.routerEndpointsSource=dns", "routerEndpointsSource"),
        # The path of the bad quantity, not "additional properties": the key is known, its value wrong.
        ("operator.modelServerResources.limits.memory=1GB", "/operator/modelServerResources/limits/memory"),
        ("operator.modelServerResources.requests.cpu=fast", "/operator/modelServerResources/requests/cpu"),
    ],
)
def test_values_schema_rejects_unknown_keys_and_bad_values(override, message):
    proc = _run_helm("template", "mr", str(CHART), "--kube-version", KUBE_VERSION, "--set", override, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr


def test_schema_forbids_additional_properties_on_every_object_it_defines():
    schema = json.loads((CHART / "values.schema.json").read_text())
    free_form = {"podSecurityContext", "securityContext", "affinity", "extraEnv", "tolerations"}

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in node["properties"].items():
                if key not in free_form:
                    walk(child, f"{path}.{key}")
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "values")


def test_every_top_level_value_is_documented_inline():
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^[A-Za-z]+:", line):
            continue
        above = lines[i - 1].strip() if i else ""
        first_child = lines[i + 1].strip() if i + 1 < len(lines) else ""
        assert above.startswith("#") or first_child.startswith("#"), (
            f"values.yaml line {i + 1} has no comment: {line!r}"
        )


def test_optional_monitoring_objects_are_well_formed(tmp_path):
    docs = _render("-f", _values_file(tmp_path, NON_DEFAULT))
    (rule,) = _by_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "ModelRolloutFailed",
        "ModelRolloutStuck",
        "ModelServerErrorRate",
        "ModelServerInputLevelDrift",
        "ModelServerSpeechRatioDrift",
    } <= set(alerts)
    assert "0.05" in alerts["ModelServerErrorRate"]["expr"]
    (cm,) = _by_kind(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (dashboard_json,) = cm["data"].values()
    dashboard = json.loads(dashboard_json)
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for series in (
        "router_traffic_weight",
        "router_shadow_comparisons_total",
        "router_shadow_segment_comparisons_total",
        "router_request_duration_seconds_bucket",
        "router_requests_total",
    ):
        assert series in exprs
    (pm,) = _by_kind(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_helm_test_pod_is_a_hook_running_one_of_our_images():
    docs = _render()
    (pod,) = _by_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "modelrollout/operator:dev"
    assert container["command"] == ["python3", "-c"]
    script, namespace, service = container["args"]
    compile(script, "helm-test-check.py", "exec")  # the inline check is valid Python
    assert (namespace, service) == ("modelrollout-system", "mr-modelrollout-metrics")
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["serviceAccountName"] == "mr-modelrollout-test"
    test_rules = [r for d in docs if d["kind"] == "Role" and _is_hook(d) for r in d["rules"]]
    assert {v for r in test_rules for v in r["verbs"]} == {"list", "get"}


def _generate_crds_module():
    spec = importlib.util.spec_from_file_location("generate_crds", REPO / "charts" / "generate_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_crd_copy_matches_the_crds_directory():
    gen = _generate_crds_module()
    problems = gen.compute_drift(gen.compute_chart_crds())
    assert problems == [], "chart CRDs drifted; run: python charts/generate_crds.py"


def test_crd_drift_is_detected(tmp_path):
    gen = _generate_crds_module()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.yaml").write_text("kind: CustomResourceDefinition\n")
    expected = gen.compute_chart_crds(tmp_path / "src")
    chart_dir = tmp_path / "chart"
    gen.apply_chart_crds(expected, chart_dir)
    assert gen.compute_drift(expected, chart_dir) == []
    (chart_dir / "a.yaml").write_text("kind: Changed\n")
    (chart_dir / "old.yaml").write_text("x: 1\n")
    assert gen.compute_drift(expected, chart_dir) == [
        "stale in chart (no source in crds/): old.yaml",
        "differs from crds/a.yaml",
    ]


def test_rendered_crd_is_the_modelrollout_crd():
    docs = _render("--include-crds")
    (crd,) = _by_kind(docs, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "modelrollouts.modelrollout.dev"
    assert crd["spec"]["names"]["shortNames"] == ["mro"]
