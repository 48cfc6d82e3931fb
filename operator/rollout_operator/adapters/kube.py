"""A thin JSON-in/JSON-out Kubernetes REST client over the official client's auth and connection pool.

The adapters speak plain dicts (server-side apply, merge patches, lists by label) so that fakes
and manifests stay simple; every call is reported to an `on_call` hook (the API-calls metric).
Every call has a total deadline (deadline.py); a failed or late call is a KubeTransportError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .deadline import Deadline, install_on_pool_manager

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON = "application/json"

CallHook = Callable[[str, str, int], None]  # (verb, resource path kind, HTTP status)


class KubeError(RuntimeError):
    """A non-2xx answer from the API server, with the status code and the server's message."""

    def __init__(
        self, status: int, message: str, *, method: str = "", path: str = "", causes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}".strip())
        self.status = status
        self.message = message
        self.causes = causes  # the Status body's details.causes[].field: what was rejected

    @property
    def invalid(self) -> bool:
        """The server refused the object itself (422 Invalid, 400 e.g. an undecodable quantity):
        sending it again cannot succeed."""
        return self.status in (400, 422)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class KubeTransportError(KubeError):
    """No answer: the API server could not be reached, broke the connection, or did not answer
    within the total deadline (`deadline` True). Transient: the tick is retried."""

    def __init__(self, message: str, *, method: str, path: str, deadline: bool = False) -> None:
        super().__init__(0, message, method=method, path=path)
        self.args = (f"{method} {path}: {message}",)  # no HTTP status: none was answered
        self.deadline = deadline


class TakeoverRefused(RuntimeError):
    """An object we would create already exists and is not ours; we leave it alone."""

    def __init__(self, kind: str, namespace: str, name: str, existing_meta: Mapping[str, Any]) -> None:
        refs = [r for r in existing_meta.get("ownerReferences") or [] if r.get("controller")]
        holder = (
            f"controlled by {refs[0].get('kind')} {refs[0].get('name')}" if refs else "not created by this operator"
        )
        super().__init__(
            f"{kind} {namespace}/{name} already exists and is {holder}; the operator "
            "does not take over objects it did not create: rename this ModelRollout "
            "(or the version), or delete that object"
        )
        self.kind, self.name = kind, name


def compute_controller_uid(meta: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller owner reference, if any."""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref.get("uid")
    return None


@dataclass(frozen=True)
class ResourceRef:
    """Where a kind lives in the REST API: prefix (`/api/v1`, `/apis/apps/v1`) and plural."""

    prefix: str
    plural: str

    def path(self, namespace: str, name: str = "", sub: str = "") -> str:
        for part in (namespace, name):
            # Names come from specs: '/', '..' or '?' would address another object (the HTTP
            # client resolves dot segments), so refuse them here whatever validated them.
            if any(c in part for c in "/?#%") or part in (".", ".."):
                raise ValueError(f"not a Kubernetes object name: {part!r}")
        base = f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


DEPLOYMENTS = ResourceRef("/apis/apps/v1", "deployments")
SERVICES = ResourceRef("/api/v1", "services")
SERVICE_ACCOUNTS = ResourceRef("/api/v1", "serviceaccounts")
EVENTS = ResourceRef("/api/v1", "events")
ROLES = ResourceRef("/apis/rbac.authorization.k8s.io/v1", "roles")
ROLE_BINDINGS = ResourceRef("/apis/rbac.authorization.k8s.io/v1", "rolebindings")
HTTP_ROUTES = ResourceRef("/apis/gateway.networking.k8s.io/v1", "httproutes")
POD_DISRUPTION_BUDGETS = ResourceRef("/apis/policy/v1", "poddisruptionbudgets")
NETWORK_POLICIES = ResourceRef("/apis/networking.k8s.io/v1", "networkpolicies")
MODEL_ROLLOUTS = ResourceRef("/apis/modelrollout.dev/v1alpha1", "modelrollouts")


class KubeApi:
    """JSON requests against the API server using a configured `kubernetes.client.ApiClient`."""

    def __init__(
        self,
        api_client: Any,
        *,
        timeout: float = 30.0,
        on_call: CallHook | None = None,
        field_manager: str = "modelrollout-operator",
    ) -> None:
        self._client = api_client
        self._timeout = timeout  # total seconds per call: connect, send, headers and body
        install_on_pool_manager(api_client.rest_client.pool_manager)
        import urllib3
        from kubernetes.client.exceptions import ApiException  # the client's SSL failures

        self._transport_errors = (urllib3.exceptions.HTTPError, OSError, ApiException)
        self._on_call = on_call
        self.field_manager = field_manager

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict:
        """One HTTP call; returns the decoded JSON body or raises KubeError on non-2xx."""
        headers = {"Accept": JSON, "Content-Type": content_type}
        request = self._client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        with Deadline(self._timeout) as deadline:
            try:
                response = self._client.call_api(*request, _request_timeout=self._timeout)
                raw = response.read() or b"{}"
            except self._transport_errors as err:
                if deadline.expired:
                    raise KubeTransportError(str(deadline.error()), method=method, path=path, deadline=True) from None
                raise KubeTransportError(f"{type(err).__name__}: {str(err)[:300]}", method=method, path=path) from err
        if deadline.expired:  # the shutdown can also look like an early end of the body
            raise KubeTransportError(str(deadline.error()), method=method, path=path, deadline=True)
        if self._on_call:
            self._on_call(method, _resource_of(path), response.status)
        data = json.loads(raw)
        if not 200 <= response.status <= 299:
            details = data.get("details") if isinstance(data.get("details"), dict) else {}
            causes = tuple(
                c["field"]
                for c in details.get("causes") or []
                if isinstance(c, dict) and isinstance(c.get("field"), str)
            )
            raise KubeError(response.status, data.get("message", str(data)), method=method, path=path, causes=causes)
        return data

    def get(self, ref: ResourceRef, namespace: str, name: str) -> dict | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", ref.path(namespace, name))
        except KubeError as err:
            if err.not_found:
                return None
            raise

    def list(self, ref: ResourceRef, namespace: str, label_selector: str) -> list[dict]:
        return self.request("GET", ref.path(namespace), query={"labelSelector": label_selector})["items"]

    def apply(self, ref: ResourceRef, obj: Mapping[str, Any]) -> dict:
        """Server-side apply: idempotent create-or-update of exactly the fields we own.

        Apply with force takes over whatever has the name, so an object that names a controller
        is applied only over nothing or over an object that controller already owns."""
        meta = obj["metadata"]
        controller = compute_controller_uid(meta)
        if controller is not None:
            existing = self.get(ref, meta["namespace"], meta["name"])
            if existing is not None and compute_controller_uid(existing.get("metadata") or {}) != controller:
                raise TakeoverRefused(
                    obj.get("kind", ref.plural), meta["namespace"], meta["name"], existing.get("metadata") or {}
                )
        return self.request(
            "PATCH",
            ref.path(meta["namespace"], meta["name"]),
            body=dict(obj),
            content_type=APPLY,
            query={"fieldManager": self.field_manager, "force": "true"},
        )

    def patch(self, ref: ResourceRef, namespace: str, name: str, patch: Mapping[str, Any], sub: str = "") -> dict:
        """JSON merge patch (RFC 7386) of one object or its subresource (e.g. `status`, `scale`)."""
        return self.request(
            "PATCH",
            ref.path(namespace, name, sub),
            body=dict(patch),
            content_type=MERGE,
            query={"fieldManager": self.field_manager},
        )

    def delete(self, ref: ResourceRef, namespace: str, name: str, uid: str | None = None) -> bool:
        """Deletes with foreground-independent background propagation; False if already gone.
        With `uid`, only that object (a precondition: a 409 if the name now holds another)."""
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", ref.path(namespace, name), body=options)
            return True
        except KubeError as err:
            if err.not_found:
                return False
            raise

    def create(self, ref: ResourceRef, namespace: str, obj: Mapping[str, Any]) -> dict:
        return self.request("POST", ref.path(namespace), body=dict(obj))


def _resource_of(path: str) -> str:
    """`/apis/apps/v1/namespaces/ns/deployments/x` → `deployments` (a low-cardinality metric label)."""
    parts = path.split("?")[0].strip("/").split("/")
    if "namespaces" in parts and parts.index("namespaces") + 2 < len(parts):
        return parts[parts.index("namespaces") + 2]
    return parts[-1]


# The client's own default is 5 per CPU (10 on a 2-core node), fewer than the reconcile threads.
DEFAULT_API_CONNECTIONS = 10


def load_api_client(connections: int = DEFAULT_API_CONNECTIONS) -> Any:
    """An ApiClient from $KUBECONFIG / ~/.kube/config, falling back to the in-cluster service account.

    `connections`: API-server connections the pool keeps open. Give it at least the number of
    threads that call at once: a call finding the pool full opens a new TLS connection and drops it
    afterwards (urllib3's "Connection pool is full" warning), a handshake per call under load."""
    from kubernetes import client, config  # local import: unit tests with fakes never need it

    try:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    except Exception:  # noqa: BLE001 - any kubeconfig problem means "try in-cluster"
        config.load_incluster_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)
