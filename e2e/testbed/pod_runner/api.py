"""The pod runner's few calls to the API server, on plain dicts (no generated models).

Uses the `kubernetes` client for transport and auth (the admin kubeconfig of the testbed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("pod-runner")

MERGE_PATCH = "application/merge-patch+json"


def _json_body(resp: object) -> Any:
    """The decoded body of a call made with `_preload_content=False`: the client then returns the
    raw urllib3 response, although its annotations name the model type."""
    return json.loads(cast(urllib3.BaseHTTPResponse, resp).data)


class PodApi:
    def __init__(self, kubeconfig: str):
        self.api_client = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    def list_node_pods(self, node: str) -> tuple[list[dict], str]:
        resp = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", _preload_content=False)
        body = _json_body(resp)
        return body["items"], body["metadata"]["resourceVersion"]

    def watch_node_pods(self, node: str, resource_version: str, timeout_s: int):
        """Yields (type, pod dict) events; raises ApiException(410) when the version is too old."""
        w = watch.Watch()
        for event in w.stream(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            allow_watch_bookmarks=True,
            deserialize=False,
        ):
            obj = event["object"]
            if isinstance(obj, str):
                obj = json.loads(obj)
            if event["type"] == "ERROR":
                raise ApiException(status=obj.get("code", 500), reason=obj.get("message", "watch error"))
            yield event["type"], obj

    def patch_pod_status(self, pod: dict, patch: dict) -> None:
        meta = pod["metadata"]
        self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], patch, _content_type=MERGE_PATCH)

    def delete_pod_now(self, pod: dict) -> None:
        """Final delete after the process stopped, pinned to this pod's uid (like the kubelet)."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            # The client serialises plain dicts as it does models (this module stays on dicts).
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=body,  # type: ignore[arg-type]
                grace_period_seconds=0,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def request_token(self, pod: dict, expiration_s: int = 86400) -> str:
        meta, spec = pod["metadata"], pod["spec"]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": expiration_s,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
            },
        }
        resp = self.core.create_namespaced_service_account_token(
            spec.get("serviceAccountName") or "default",
            meta["namespace"],
            body,  # type: ignore[arg-type]  # a plain dict, serialised like a model
            _preload_content=False,
        )
        return _json_body(resp)["status"]["token"]

    def ensure_logs_object(self, pod: dict, container: str, log_path: Path) -> None:
        """A kwok Logs object pointing `kubectl logs` at the pod's log file (owned by the pod,
        so garbage collection removes it with the pod)."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}],
            },
            "spec": {"logs": [{"containers": [container], "logsFile": str(log_path), "follow": True}]},
        }
        try:
            self.custom.create_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", meta["namespace"], "logs", body)
        except ApiException as exc:
            if exc.status != 409:
                log.warning(
                    "%s/%s: cannot create the kwok Logs object (kubectl logs will not work): %s",
                    meta["namespace"],
                    meta["name"],
                    exc.reason,
                )
        except Exception as exc:  # noqa: BLE001 - logs are a convenience; never fail the pod for them
            log.warning("%s/%s: cannot create the kwok Logs object: %s", meta["namespace"], meta["name"], exc)

    def lookup(self, kind: str, namespace: str, name: str) -> dict | None:
        """ConfigMap or Secret as a dict, None if absent."""
        read = self.core.read_namespaced_config_map if kind == "ConfigMap" else self.core.read_namespaced_secret
        try:
            return _json_body(read(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
