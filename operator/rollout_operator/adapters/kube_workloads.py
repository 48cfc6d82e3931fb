"""Workloads provider on the Kubernetes API: per-version model servers, the router and its RBAC,
their PodDisruptionBudgets and the rollout's NetworkPolicies.

Every ensure is a server-side apply (idempotent). To keep API calls per tick low, the Deployment
carries a hash of everything applied with it; when the last list shows that hash, the apply is skipped.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from ..domain.observations import WorkloadState
from .kube import (
    DEPLOYMENTS,
    NETWORK_POLICIES,
    POD_DISRUPTION_BUDGETS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    SERVICES,
    KubeApi,
    KubeError,
    ResourceRef,
    compute_controller_uid,
)
from .manifests import (
    NAME_LABEL,
    ROLLOUT_LABEL,
    VERSION_LABEL,
    Owner,
    PodSettings,
    ServerTemplate,
    compute_model_server_policy_name,
    compute_network_policies,
    compute_preview_name,
    compute_preview_service,
    compute_router_deployment,
    compute_router_name,
    compute_router_pdb,
    compute_router_policy_name,
    compute_router_rbac,
    compute_router_service,
    compute_version_deployment,
    compute_version_name,
    compute_version_pdb,
    compute_version_service,
)

HASH_ANNOTATION = "modelrollout.dev/applied-hash"
_KINDS: dict[str, ResourceRef] = {
    "Deployment": DEPLOYMENTS,
    "Service": SERVICES,
    "ServiceAccount": SERVICE_ACCOUNTS,
    "RoleBinding": ROLE_BINDINGS,
    "PodDisruptionBudget": POD_DISRUPTION_BUDGETS,
    "NetworkPolicy": NETWORK_POLICIES,
}


def compute_applied_hash(objects: list[Mapping[str, Any]]) -> str:
    """A short stable digest of the manifests applied together."""
    blob = json.dumps(objects, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def compute_workload_state(deployment: Mapping[str, Any]) -> WorkloadState:
    """Readiness of one Deployment as the domain sees it."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    desired = int(spec.get("replicas", 1))
    generation = deployment.get("metadata", {}).get("generation", 0)
    updated = status.get("observedGeneration", 0) >= generation and int(status.get("updatedReplicas", 0)) >= desired
    return WorkloadState(
        exists=True, desired_replicas=desired, ready_replicas=int(status.get("readyReplicas", 0)), updated=updated
    )


class KubeWorkloads:
    """Workloads backed by the API server through `KubeApi`."""

    def __init__(
        self, api: KubeApi, router_endpoints_source: str = "endpointslices", pods: PodSettings = PodSettings()
    ) -> None:
        self._api = api
        self._endpoints_source = router_endpoints_source
        self._pods = pods
        self._seen_hashes: dict[tuple[str, str], str] = {}  # (namespace, deployment) → applied hash
        # Rollout uids whose NetworkPolicies were seen gone (or never ours): the ensure-absent
        # then costs no API call per tick. Lost on restart, which only means one more look.
        self._policies_absent: set[str] = set()
        self._lock = threading.Lock()

    def fetch_workloads(self, namespace: str, rollout: str) -> dict[str, WorkloadState]:
        """All of this rollout's model-server versions (one list call; also refreshes the hash cache)."""
        items = self._api.list(DEPLOYMENTS, namespace, f"{ROLLOUT_LABEL}={rollout}")
        states: dict[str, WorkloadState] = {}
        with self._lock:
            for key in [
                k
                for k in self._seen_hashes
                if k[0] == namespace and (k[1] == rollout or k[1].startswith(rollout + "-"))
            ]:
                del self._seen_hashes[key]
            for item in items:
                meta = item["metadata"]
                self._seen_hashes[(namespace, meta["name"])] = meta.get("annotations", {}).get(HASH_ANNOTATION, "")
                labels = meta.get("labels", {})
                if labels.get(NAME_LABEL) == "model-server" and VERSION_LABEL in labels:
                    states[labels[VERSION_LABEL]] = compute_workload_state(item)
        return states

    def _apply_group(self, namespace: str, deployment: dict[str, Any], others: list[dict[str, Any]]) -> None:
        """Applies the others, then the Deployment stamped with the group's hash (so its hash implies all)."""
        digest = compute_applied_hash([deployment, *others])
        name = deployment["metadata"]["name"]
        with self._lock:
            if self._seen_hashes.get((namespace, name)) == digest:
                return
        for obj in others:
            self._api.apply(_KINDS[obj["kind"]], obj)
        deployment["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest
        self._api.apply(DEPLOYMENTS, deployment)
        with self._lock:
            self._seen_hashes[(namespace, name)] = digest

    def ensure_version(self, owner: Owner, version: str, replicas: int, server: ServerTemplate) -> None:
        deployment = compute_version_deployment(owner, version, replicas, server, self._pods)
        self._apply_group(
            owner.namespace, deployment, [compute_version_service(owner, version), compute_version_pdb(owner, version)]
        )

    def scale_version(self, namespace: str, rollout: str, version: str, replicas: int) -> None:
        name = compute_version_name(rollout, version)
        # Dropping the hash makes the next ensure_version re-apply (it no longer describes the replicas).
        self._api.patch(
            DEPLOYMENTS,
            namespace,
            name,
            {"metadata": {"annotations": {HASH_ANNOTATION: None}}, "spec": {"replicas": replicas}},
        )
        with self._lock:
            self._seen_hashes.pop((namespace, name), None)

    def delete_version(self, namespace: str, rollout: str, version: str) -> None:
        name = compute_version_name(rollout, version)
        self._api.delete(DEPLOYMENTS, namespace, name)
        self._api.delete(SERVICES, namespace, name)
        self._api.delete(POD_DISRUPTION_BUDGETS, namespace, name)
        with self._lock:
            self._seen_hashes.pop((namespace, name), None)

    def ensure_router(self, owner: Owner, image: str, replicas: int = 1, network_policies: bool = True) -> None:
        deployment = compute_router_deployment(owner, image, replicas, self._endpoints_source, self._pods)
        policies = compute_network_policies(owner, self._pods) if network_policies else []
        if policies:
            with self._lock:
                self._policies_absent.discard(owner.uid)
        self._apply_group(
            owner.namespace,
            deployment,
            [
                *compute_router_rbac(owner, self._pods.router_cluster_role),
                compute_router_service(owner),
                compute_router_pdb(owner),
                *policies,
            ],
        )

    def delete_network_policies(self, owner: Owner) -> None:
        """Ensure-absent of `<rollout>.router` and `<rollout>.model-servers`: deletes only a
        policy this rollout controls, and only that object (uid precondition)."""
        with self._lock:
            if owner.uid in self._policies_absent:
                return
        deleted, settled = False, True
        for name in (compute_router_policy_name(owner.name), compute_model_server_policy_name(owner.name)):
            existing = self._api.get(NETWORK_POLICIES, owner.namespace, name)
            meta = (existing or {}).get("metadata") or {}
            if existing is None or compute_controller_uid(meta) != owner.uid:
                continue  # gone, or someone else's object under that name: left alone
            try:
                deleted |= self._api.delete(NETWORK_POLICIES, owner.namespace, name, uid=meta.get("uid"))
            except KubeError as err:
                if not err.conflict:
                    raise
                settled = False  # replaced since the read: look again next tick
        if deleted:
            self._forget_router_hash(owner)
        if settled:
            with self._lock:
                self._policies_absent.add(owner.uid)

    def _forget_router_hash(self, owner: Owner) -> None:
        """The router Deployment's hash vouches for its whole group, policies included; once a
        policy is deleted it no longer does, so a router that wants them again re-applies."""
        name = compute_router_name(owner.name)
        with self._lock:
            self._seen_hashes.pop((owner.namespace, name), None)
        try:
            self._api.patch(DEPLOYMENTS, owner.namespace, name, {"metadata": {"annotations": {HASH_ANNOTATION: None}}})
        except KubeError as err:
            if not err.not_found:  # no router Deployment: nothing vouches for anything
                raise

    def ensure_preview(self, owner: Owner, version: str) -> None:
        self._api.apply(SERVICES, compute_preview_service(owner, version))

    def delete_preview(self, namespace: str, rollout: str) -> None:
        self._api.delete(SERVICES, namespace, compute_preview_name(rollout))
