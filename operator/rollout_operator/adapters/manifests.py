"""Pure builders of the Kubernetes objects the operator owns: per-version model servers, the router, its RBAC.

Names, labels, ports and annotations follow the project contract (shared brief); every object
carries a controller owner reference to its ModelRollout so deleting the rollout garbage-collects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# Names are derived in one place, where parse_spec also checks they are valid and distinct.
from ..domain.names import (compute_preview_name, compute_router_account_name,  # noqa: F401
                            compute_router_name, compute_version_name)


GROUP = "modelrollout.dev"
ROLLOUT_LABEL = f"{GROUP}/rollout"
VERSION_LABEL = f"{GROUP}/version"
ROLE_LABEL = f"{GROUP}/role"
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelrollout-operator"}
PORT = 8080
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PORT),
    "prometheus.io/path": "/metrics",
}
POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


@dataclass(frozen=True)
class Owner:
    """The ModelRollout that owns what we create (for owner references and names)."""

    name: str
    namespace: str
    uid: str
    api_version: str = f"{GROUP}/v1alpha1"
    kind: str = "ModelRollout"

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
                "uid": self.uid, "controller": True, "blockOwnerDeletion": True}


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
    return {"name": name, "namespace": owner.namespace, "labels": {**labels, **MANAGED_BY},
            "ownerReferences": [owner.reference()]}


def compute_version_labels(rollout: str, version: str) -> dict[str, str]:
    return {ROLLOUT_LABEL: rollout, VERSION_LABEL: version, NAME_LABEL: "model-server"}


def compute_version_deployment(owner: Owner, version: str, replicas: int,
                               server: ServerTemplate) -> dict[str, Any]:
    """The model-server Deployment of one version (args only: the image's entrypoint runs)."""
    labels = compute_version_labels(owner.name, version)
    container = {
        "name": "model-server",
        "image": server.image,
        "args": [f"--model-name={server.model_name}", f"--model-version={version}",
                 # An empty spec.model.uri means "the server's default": pass no flag at all.
                 *([f"--model-uri={server.model_uri}"] if server.model_uri else []),
                 "--host=$(POD_IP)", f"--port={PORT}", *server.args],
        "env": [POD_IP_ENV, *server.env],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # A busy 2-core node answered health checks in > 1 s (the default timeout) and flapped
        # readiness, emptying a version's endpoints for seconds: allow 5 s.
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": PORT},
                           "periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 3},
        # Liveness is lenient: restarting a slow but working server only loses capacity.
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": PORT},
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
    }
    if server.resources:
        container["resources"] = dict(server.resources)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(owner, compute_version_name(owner.name, version), labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": SCRAPE_ANNOTATIONS},
                "spec": {"containers": [container]},
            },
        },
    }


def _service(owner: Owner, name: str, labels: Mapping[str, str],
             selector: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(owner, name, labels),
        "spec": {"selector": dict(selector),
                 "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]},
    }


def compute_version_service(owner: Owner, version: str) -> dict[str, Any]:
    labels = compute_version_labels(owner.name, version)
    return _service(owner, compute_version_name(owner.name, version), labels, labels)


def compute_preview_service(owner: Owner, version: str) -> dict[str, Any]:
    """Blue-green preview: reaches the candidate's pods only, takes no user traffic."""
    labels = {ROLLOUT_LABEL: owner.name, NAME_LABEL: "model-server-preview"}
    return _service(owner, compute_preview_name(owner.name), labels,
                    compute_version_labels(owner.name, version))


def compute_router_labels(rollout: str) -> dict[str, str]:
    return {ROLLOUT_LABEL: rollout, NAME_LABEL: "router"}


def compute_router_deployment(owner: Owner, image: str, replicas: int = 1,
                              endpoints_source: str = "endpointslices") -> dict[str, Any]:
    """The built-in router: the model's front door, reading its split from the rollout's status."""
    labels = compute_router_labels(owner.name)
    args = [f"--rollout={owner.name}", f"--namespace={owner.namespace}", "--host=$(POD_IP)", f"--port={PORT}"]
    if endpoints_source != "endpointslices":  # the router's default needs no flag
        args.append(f"--endpoints-source={endpoints_source}")
    container = {
        "name": "router", "image": image,
        "args": args,
        "env": [POD_IP_ENV],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # The router is ready once it has a split and a stable endpoint (a not-ready one counts
        # while panic routing serves it); before that the front door must not send clients to it.
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": PORT},
                           "periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": PORT},
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(owner, compute_router_name(owner.name), labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": SCRAPE_ANNOTATIONS},
                "spec": {"serviceAccountName": compute_router_account_name(owner.name),
                         "containers": [container]},
            },
        },
    }


def compute_router_service(owner: Owner) -> dict[str, Any]:
    labels = compute_router_labels(owner.name)
    return _service(owner, compute_router_name(owner.name), labels, labels)


def compute_router_rbac(owner: Owner) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding: the router watches its rollout and EndpointSlices only."""
    name = compute_router_account_name(owner.name)
    labels = compute_router_labels(owner.name)
    rules = [
        # The desired split is read from status.traffic of the ModelRollout (watch, not poll).
        {"apiGroups": [GROUP], "resources": ["modelrollouts"], "verbs": ["get", "list", "watch"]},
        # Backends of a version are the endpoints of its Service's EndpointSlices (ready ones;
        # the not-ready ones only when none is ready - panic routing).
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]},
        # With --endpoints-source=pods the backends are a version's pods instead.
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(owner, name, labels)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": _meta(owner, name, labels), "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(owner, name, labels),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}]},
    ]
