"""Pure builders of the Kubernetes objects the operator owns: per-version model servers, the router,
its RoleBinding, PodDisruptionBudgets and NetworkPolicies.

Names, labels, ports and annotations follow the project contract (shared brief); every object
carries a controller owner reference to its ModelRollout so deleting the rollout garbage-collects it.
Every pod is hardened the same way (non-root, read-only root filesystem, no capabilities,
RuntimeDefault seccomp, a scratch /tmp); only the router mounts a ServiceAccount token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Names are derived in one place, where parse_spec also checks they are valid and distinct.
from ..domain.names import compute_preview_name, compute_router_account_name, compute_router_name, compute_version_name  # noqa: F401

GROUP = "modelrollout.dev"
ROLLOUT_LABEL = f"{GROUP}/rollout"
VERSION_LABEL = f"{GROUP}/version"
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelrollout-operator"}
PORT = 8080
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PORT),
    "prometheus.io/path": "/metrics",
}
POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
# The one writable path a process gets (Python's tempfile, the images' HOME); bounded so a
# runaway writer is evicted instead of filling the node's disk.
TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


@dataclass(frozen=True)
class PodSettings:
    """Operator-wide choices for every pod and policy it creates (Settings.pod_settings() builds
    it; these defaults are the settings' defaults)."""

    run_as_user: int = 65532  # UID and GID; the project's images run as 65532 too
    router_cpu_request: str = "100m"
    router_memory_request: str = "64Mi"
    router_cpu_limit: str = ""  # empty: none
    router_memory_limit: str = (
        "512Mi"  # above the router's worst case with its default budgets (~410 MiB: docs/router.md)
    )
    router_cluster_role: str = "modelrollout-router"  # installed by the chart
    # Model servers whose spec.server.resources is empty get these, so no pod runs unbounded.
    # The image idles at ~190 MB RSS and one request at the 8 MiB body limit adds ~80 MB at peak
    # (docs/security.md "Model server"): 256Mi requested, 1Gi leaves room for a few concurrent
    # large requests. No CPU limit, as for the router: throttling adds latency to every request.
    server_cpu_request: str = "250m"
    server_memory_request: str = "256Mi"
    server_cpu_limit: str = ""  # empty: none
    server_memory_limit: str = "1Gi"
    prometheus_namespace_labels: Mapping[str, str] = field(default_factory=dict)  # empty: any namespace
    prometheus_pod_labels: Mapping[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})

    def router_resources(self) -> dict[str, Any]:
        return _resources(
            self.router_cpu_request, self.router_memory_request, self.router_cpu_limit, self.router_memory_limit
        )

    def server_resources(self) -> dict[str, Any]:
        """The default of a model server whose spec gives no resources."""
        return _resources(
            self.server_cpu_request, self.server_memory_request, self.server_cpu_limit, self.server_memory_limit
        )


def _resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    """Requests always; a limits key only for the non-empty limits (empty means none)."""
    limits = {k: v for k, v in (("cpu", cpu_limit), ("memory", memory_limit)) if v}
    return {"requests": {"cpu": cpu_request, "memory": memory_request}, **({"limits": limits} if limits else {})}


@dataclass(frozen=True)
class Owner:
    """The ModelRollout that owns what we create (for owner references and names)."""

    name: str
    namespace: str
    uid: str
    api_version: str = f"{GROUP}/v1alpha1"
    kind: str = "ModelRollout"

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ServerTemplate:
    """What a model-server pod for one version needs, taken from spec.model and spec.server."""

    model_name: str
    model_uri: str
    image: str
    resources: Mapping[str, Any] = field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    args: tuple[str, ...] = ()  # extra model-server flags from spec.server.args


def _meta(owner: Owner, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**labels, **MANAGED_BY},
        "ownerReferences": [owner.reference()],
    }


def compute_version_labels(rollout: str, version: str) -> dict[str, str]:
    return {ROLLOUT_LABEL: rollout, VERSION_LABEL: version, NAME_LABEL: "model-server"}


def compute_pod_security(pods: PodSettings) -> dict[str, Any]:
    """Pod-level: a fixed non-root UID/GID (so runAsNonRoot holds whatever the image says) and
    the container runtime's default seccomp profile."""
    uid = pods.run_as_user
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# Container-level: nothing to escalate to, no capabilities, nothing written outside /tmp.
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_spec(
    pods: PodSettings, container: dict[str, Any], *, token: bool, account: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # A model server talks to nobody; the router needs its token to watch its rollout and
        # its backends. A token a process does not use is only something to steal.
        "automountServiceAccountToken": token,
        # No $<SERVICE>_PORT variables of every Service in the namespace in the environment.
        "enableServiceLinks": False,
        "securityContext": compute_pod_security(pods),
        "containers": [{**container, "securityContext": dict(CONTAINER_SECURITY), "volumeMounts": [TMP_MOUNT]}],
        "volumes": [TMP_VOLUME],
    }
    if account:
        spec["serviceAccountName"] = account
    return spec


def compute_version_deployment(
    owner: Owner, version: str, replicas: int, server: ServerTemplate, pods: PodSettings = PodSettings()
) -> dict[str, Any]:
    """The model-server Deployment of one version (args only: the image's entrypoint runs)."""
    labels = compute_version_labels(owner.name, version)
    container = {
        "name": "model-server",
        "image": server.image,
        "args": [
            f"--model-name={server.model_name}",
            f"--model-version={version}",
            # An empty spec.model.uri means "the server's default": pass no flag at all.
            *([f"--model-uri={server.model_uri}"] if server.model_uri else []),
            "--host=$(POD_IP)",
            f"--port={PORT}",
            *server.args,
        ],
        "env": [POD_IP_ENV, *server.env],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # A busy 2-core node answered health checks in > 1 s (the default timeout) and flapped
        # readiness, emptying a version's endpoints for seconds: allow 5 s.
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": PORT},
            "periodSeconds": 2,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Liveness is lenient: restarting a slow but working server only loses capacity.
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        # A spec's own resources are kept exactly (not merged with the defaults): it may mean to
        # leave a limit out.
        "resources": dict(server.resources) if server.resources else pods.server_resources(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, compute_version_name(owner.name, version), labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": SCRAPE_ANNOTATIONS},
                "spec": _pod_spec(pods, container, token=False),
            },
        },
    }


def _service(owner: Owner, name: str, labels: Mapping[str, str], selector: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner, name, labels),
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    }


def compute_version_service(owner: Owner, version: str) -> dict[str, Any]:
    labels = compute_version_labels(owner.name, version)
    return _service(owner, compute_version_name(owner.name, version), labels, labels)


def compute_preview_service(owner: Owner, version: str) -> dict[str, Any]:
    """Blue-green preview: reaches the candidate's pods only, takes no user traffic."""
    labels = {ROLLOUT_LABEL: owner.name, NAME_LABEL: "model-server-preview"}
    return _service(owner, compute_preview_name(owner.name), labels, compute_version_labels(owner.name, version))


def compute_router_labels(rollout: str) -> dict[str, str]:
    return {ROLLOUT_LABEL: rollout, NAME_LABEL: "router"}


def compute_router_deployment(
    owner: Owner,
    image: str,
    replicas: int = 1,
    endpoints_source: str = "endpointslices",
    pods: PodSettings = PodSettings(),
) -> dict[str, Any]:
    """The built-in router: the model's front door, reading its split from the rollout's status."""
    labels = compute_router_labels(owner.name)
    args = [f"--rollout={owner.name}", f"--namespace={owner.namespace}", "--host=$(POD_IP)", f"--port={PORT}"]
    if endpoints_source != "endpointslices":  # the router's default needs no flag
        args.append(f"--endpoints-source={endpoints_source}")
    container = {
        "name": "router",
        "image": image,
        "args": args,
        "env": [POD_IP_ENV],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # The router is ready once it has a split and a stable endpoint (a not-ready one counts
        # while panic routing serves it); before that the front door must not send clients to it.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": PORT},
            "periodSeconds": 2,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": pods.router_resources(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, compute_router_name(owner.name), labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": SCRAPE_ANNOTATIONS},
                "spec": _pod_spec(pods, container, token=True, account=compute_router_account_name(owner.name)),
            },
        },
    }


def compute_router_service(owner: Owner) -> dict[str, Any]:
    labels = compute_router_labels(owner.name)
    return _service(owner, compute_router_name(owner.name), labels, labels)


def compute_router_binding_name(rollout: str) -> str:
    """`<rollout>.router`, not the account's `<rollout>-router`: earlier operators made a
    RoleBinding of that name to their own Role, and a RoleBinding's roleRef cannot change, so
    applying ours over it would be refused. The dot keeps it apart from every rollout's names."""
    return f"{rollout}.router"


def compute_router_rbac(owner: Owner, cluster_role: str) -> list[dict[str, Any]]:
    """ServiceAccount and RoleBinding: the router gets the chart's read-only ClusterRole
    `cluster_role` (its rollout, EndpointSlices, pods) in this namespace only. The operator
    creates no Role: it may bind exactly that ClusterRole (RBAC `bind` with resourceNames)."""
    name = compute_router_account_name(owner.name)
    labels = compute_router_labels(owner.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(owner, name, labels)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(owner, compute_router_binding_name(owner.name), labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def _pdb(owner: Owner, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    # maxUnavailable 1, not minAvailable: it never blocks a node drain (a 1-replica Deployment
    # may lose its pod, as it would without a PDB) and keeps at most one pod of a multi-replica
    # Deployment voluntarily down at a time; it also holds when the Deployment is scaled to 0.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(owner, name, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(labels)}},
    }


def compute_version_pdb(owner: Owner, version: str) -> dict[str, Any]:
    """The version Deployment's PodDisruptionBudget, named like the Deployment."""
    return _pdb(owner, compute_version_name(owner.name, version), compute_version_labels(owner.name, version))


def compute_router_pdb(owner: Owner) -> dict[str, Any]:
    return _pdb(owner, compute_router_name(owner.name), compute_router_labels(owner.name))


def compute_router_policy_name(rollout: str) -> str:
    """NetworkPolicy names end in `.router` / `.model-servers` (dots: Services and Deployments
    can't have them), so no rollout's or version's name can produce another's."""
    return f"{rollout}.router"


def compute_model_server_policy_name(rollout: str) -> str:
    return f"{rollout}.model-servers"


def compute_network_policies(owner: Owner, pods: PodSettings) -> list[dict[str, Any]]:
    """Ingress for a rollout with the built-in router: clients reach the router's port; model
    servers (every version, and so the preview Service) admit only this rollout's router and
    Prometheus. Egress is left alone (the router must reach the API server and backends)."""
    port = [{"protocol": "TCP", "port": PORT}]
    server_labels = {ROLLOUT_LABEL: owner.name, NAME_LABEL: "model-server"}
    prometheus = {
        "namespaceSelector": {"matchLabels": dict(pods.prometheus_namespace_labels)},
        "podSelector": {"matchLabels": dict(pods.prometheus_pod_labels)},
    }
    router = compute_router_labels(owner.name)
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(owner, compute_router_policy_name(owner.name), router),
            "spec": {"podSelector": {"matchLabels": router}, "policyTypes": ["Ingress"], "ingress": [{"ports": port}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(owner, compute_model_server_policy_name(owner.name), server_labels),
            "spec": {
                "podSelector": {"matchLabels": server_labels},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": router}}, prometheus], "ports": port}],
            },
        },
    ]
