"""The pods, PodDisruptionBudgets, NetworkPolicies and router RBAC the operator creates (pure builders):
hardened pods, resources on the router, a token only where needed, no Role, one budget per Deployment."""

import pytest

from rollout_operator.adapters.manifests import (
    Owner,
    PodSettings,
    ServerTemplate,
    compute_network_policies,
    compute_router_deployment,
    compute_router_pdb,
    compute_router_rbac,
    compute_version_deployment,
    compute_version_pdb,
)
from rollout_operator.settings import Settings, load_settings

pytestmark = pytest.mark.unit
OWNER = Owner("speech", "ml", "uid-1")
SERVER = ServerTemplate("speech-commands", "builtin:v2", "modelrollout/model-server:dev")


def _pods():
    return {
        "model-server": compute_version_deployment(OWNER, "v2", 2, SERVER)["spec"]["template"]["spec"],
        "router": compute_router_deployment(OWNER, "modelrollout/router:dev")["spec"]["template"]["spec"],
    }


@pytest.mark.parametrize("kind", ["model-server", "router"])
def test_every_pod_is_hardened(kind):
    pod = _pods()[kind]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (c,) = pod["containers"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    # The root filesystem is read-only: /tmp (the images' HOME and tempdir) is a bounded emptyDir.
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert pod["enableServiceLinks"] is False


def test_only_the_router_mounts_a_service_account_token():
    pods = _pods()
    assert pods["model-server"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pods["model-server"], "model servers run as the namespace default, tokenless"
    assert pods["router"]["automountServiceAccountToken"] is True
    assert pods["router"]["serviceAccountName"] == "speech-router"


def test_the_router_has_resources_from_the_settings():
    (c,) = _pods()["router"]["containers"]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    pods = PodSettings(
        router_cpu_request="1", router_memory_request="1Gi", router_cpu_limit="2", router_memory_limit=""
    )
    (c,) = compute_router_deployment(OWNER, "r:1", pods=pods)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2"}}


def test_model_server_resources_come_from_the_spec_and_the_uid_from_the_settings():
    server = ServerTemplate("m", "", "img:1", resources={"limits": {"memory": "1Gi"}})
    pod = compute_version_deployment(OWNER, "v1", 1, server, PodSettings(run_as_user=10001))["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    assert pod["securityContext"]["runAsUser"] == 10001 == pod["securityContext"]["runAsGroup"]


def test_model_servers_whose_spec_sets_no_resources_get_the_bounded_defaults():
    # Without a memory limit the kubelet enforces nothing: a careless spec must not run unbounded.
    (c,) = _pods()["model-server"]["containers"]
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    pods = PodSettings(
        server_cpu_request="500m", server_memory_request="512Mi", server_cpu_limit="2", server_memory_limit="2Gi"
    )
    (c,) = compute_version_deployment(OWNER, "v1", 1, SERVER, pods)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


def test_a_spec_with_resources_keeps_exactly_its_own_not_merged_with_the_defaults():
    own = {"requests": {"cpu": "1"}}
    server = ServerTemplate("m", "", "img:1", resources=own)
    (c,) = compute_version_deployment(OWNER, "v1", 1, server)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"requests": {"cpu": "1"}}, "no default memory request or limit added"


def test_an_empty_model_server_limit_means_no_limits_key():
    pods = PodSettings(server_memory_limit="")
    (c,) = compute_version_deployment(OWNER, "v1", 1, SERVER, pods)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}}


def test_settings_defaults_are_the_manifest_defaults_and_flags_reach_them():
    assert Settings().pod_settings() == PodSettings()
    s = load_settings(
        [
            "--pod-run-as-user=10001",
            "--router-memory-limit=",
            "--router-cpu-limit=500m",
            "--router-cluster-role=team-router",
            "--network-policies=false",
            "--prometheus-namespace-selector=kubernetes.io/metadata.name=monitoring",
            "--prometheus-pod-selector=app=prom,role=server",
        ],
        environ={},
    )
    pods = s.pod_settings()
    assert (pods.run_as_user, pods.router_cpu_limit, pods.router_memory_limit) == (10001, "500m", "")
    assert pods.router_cluster_role == "team-router" and s.pod_policy().network_policies is False
    s = load_settings(
        [
            "--model-server-cpu-request=1",
            "--model-server-memory-request=1Gi",
            "--model-server-cpu-limit=3",
            "--model-server-memory-limit=",
        ],
        environ={},
    )
    assert s.pod_settings().server_resources() == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "3"}}
    assert pods.prometheus_namespace_labels == {"kubernetes.io/metadata.name": "monitoring"}
    assert pods.prometheus_pod_labels == {"app": "prom", "role": "server"}


def test_router_rbac_is_a_binding_to_the_chart_cluster_role_and_no_role():
    account, binding = compute_router_rbac(OWNER, "mr-modelrollout-router")
    assert account["kind"] == "ServiceAccount" and account["metadata"]["name"] == "speech-router"
    assert binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] == "ml"
    # Not `speech-router`: an older operator's RoleBinding of that name refers to a Role, and a
    # roleRef cannot change (the integration test applies ours next to one).
    assert binding["metadata"]["name"] == "speech.router"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "mr-modelrollout-router",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "speech-router", "namespace": "ml"}]
    for obj in (account, binding):
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_one_pdb_per_deployment_never_blocking_a_drain():
    version, router = compute_version_pdb(OWNER, "v2"), compute_router_pdb(OWNER)
    assert version["metadata"]["name"] == "speech-v2" and router["metadata"]["name"] == "speech"
    for pdb, deployment in (
        (version, compute_version_deployment(OWNER, "v2", 1, SERVER)),
        (router, compute_router_deployment(OWNER, "r:1")),
    ):
        assert pdb["apiVersion"] == "policy/v1"
        # maxUnavailable, not minAvailable: a 1-replica Deployment stays drainable.
        assert pdb["spec"] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
        }
        assert pdb["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"


def test_network_policies_admit_only_the_router_and_prometheus_to_model_servers():
    router_np, servers_np = compute_network_policies(
        OWNER, PodSettings(prometheus_namespace_labels={"kubernetes.io/metadata.name": "monitoring"})
    )
    assert servers_np["metadata"]["name"] == "speech.model-servers"
    assert servers_np["spec"]["podSelector"] == {
        "matchLabels": {"modelrollout.dev/rollout": "speech", "app.kubernetes.io/name": "model-server"}
    }
    assert servers_np["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = servers_np["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"modelrollout.dev/rollout": "speech", "app.kubernetes.io/name": "router"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
    ]
    # The selectors really pick the pods the Deployments create.
    server_pod = compute_version_deployment(OWNER, "v9", 1, SERVER)["spec"]["template"]["metadata"]["labels"]
    router_pod = compute_router_deployment(OWNER, "r:1")["spec"]["template"]["metadata"]["labels"]
    assert servers_np["spec"]["podSelector"]["matchLabels"].items() <= server_pod.items()
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= router_pod.items()
    # The router is the front door: any client, on its port only.
    assert router_np["metadata"]["name"] == "speech.router"
    assert router_np["spec"]["podSelector"]["matchLabels"].items() <= router_pod.items()
    assert router_np["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]


def test_default_prometheus_peer_is_any_namespace_pods_named_prometheus():
    _, servers_np = compute_network_policies(OWNER, PodSettings())
    assert servers_np["spec"]["ingress"][0]["from"][1] == {
        "namespaceSelector": {"matchLabels": {}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }


def test_policy_names_cannot_collide_across_rollouts():
    names = set()
    for rollout in ("a", "a-router", "a-model-servers", "speech"):
        for np in compute_network_policies(Owner(rollout, "ml", "u"), PodSettings()):
            assert np["metadata"]["name"] not in names
            names.add(np["metadata"]["name"])


def test_default_images_outside_the_allowed_registries_fail_at_startup():
    from rollout_operator.settings import SettingsError

    with pytest.raises(SettingsError) as err:
        load_settings(["--allowed-image-registries=registry.example/ml"], environ={})
    assert "--model-server-image: 'modelrollout/model-server:dev' is not under --allowed-image-registries" in str(
        err.value
    )
    ok = load_settings(
        [
            "--allowed-image-registries=registry.example/ml",
            "--model-server-image=registry.example/ml/model-server:7",
            "--router-image=registry.example/ml/router:7",
        ],
        environ={},
    )
    assert ok.pod_policy().allowed_registries == ("registry.example/ml",)
