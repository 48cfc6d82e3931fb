"""Traffic provider `gatewayAPI`: carries the split in an HTTPRoute (backendRefs weights + RequestMirror).

Any Gateway implementation then enforces it. Only the backendRefs and our own RequestMirror filter
of each rule are rewritten; matches and other filters stay as the user wrote them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..domain.spec import GatewayAPISpec
from ..domain.status import TrafficSplit
from .kube import HTTP_ROUTES, KubeApi, KubeError
from .manifests import PORT, compute_version_name

MIRROR = "RequestMirror"


class RouteError(RuntimeError):
    """The HTTPRoute named in spec.trafficRouting.gatewayAPI is missing or unusable."""


def _ref(rollout: str, version: str, port: int) -> dict[str, Any]:
    # group/kind spelled out (they are the CRD defaults) so a read-back compares equal.
    return {"group": "", "kind": "Service", "name": compute_version_name(rollout, version), "port": port}


def compute_backend_refs(rollout: str, split: TrafficSplit, port: int = PORT) -> list[dict[str, Any]]:
    """backendRefs for stable (+ candidate); a zero-weight candidate stays listed so weights read back."""
    targets = [t for t in (split.stable, split.candidate) if t is not None]
    return [{**_ref(rollout, t.version, port), "weight": t.weight} for t in targets]


def compute_mirror_filter(rollout: str, split: TrafficSplit, port: int = PORT) -> dict[str, Any] | None:
    """A RequestMirror filter with `percent` (Gateway API >= v1.3), or None when not shadowing."""
    if split.mirror is None or split.mirror.percent <= 0:
        return None
    return {
        "type": MIRROR,
        "requestMirror": {"backendRef": _ref(rollout, split.mirror.version, port), "percent": split.mirror.percent},
    }


def compute_route_rules(
    rules: list[Mapping[str, Any]], rollout: str, split: TrafficSplit, port: int = PORT
) -> list[dict[str, Any]]:
    """The route's rules with our backendRefs and mirror filter in each of them."""
    refs = compute_backend_refs(rollout, split, port)
    mirror = compute_mirror_filter(rollout, split, port)
    out: list[dict[str, Any]] = []
    for given in rules:
        rule = copy.deepcopy(dict(given))
        rule["backendRefs"] = copy.deepcopy(refs)
        filters = [f for f in rule.get("filters", []) if f.get("type") != MIRROR]
        if mirror is not None:
            filters.append(copy.deepcopy(mirror))
        if filters:
            rule["filters"] = filters
        else:
            rule.pop("filters", None)
        out.append(rule)
    return out


class GatewayApiTraffic:
    """Writes the split into an existing HTTPRoute with an optimistic-concurrency merge patch."""

    name = "gatewayAPI"

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def _route(self, namespace: str, config: GatewayAPISpec) -> dict[str, Any]:
        route = self._api.get(HTTP_ROUTES, namespace, config.http_route)
        if route is None:
            raise RouteError(
                f"spec.trafficRouting.gatewayAPI.httpRoute: HTTPRoute "
                f"{namespace}/{config.http_route} not found; create it (with parentRefs "
                "to your Gateway) before the rollout uses it"
            )
        if not route.get("spec", {}).get("rules"):
            raise RouteError(f"HTTPRoute {namespace}/{config.http_route} has no spec.rules to carry the split")
        return route

    def ensure_traffic(self, namespace: str, rollout: str, split: TrafficSplit, config: GatewayAPISpec | None) -> bool:
        """Patches the route only when its managed rules differ; True if a patch was written."""
        if config is None:
            raise RouteError("spec.trafficRouting.gatewayAPI.httpRoute is required for the gatewayAPI provider")
        route = self._route(namespace, config)
        rules = route["spec"]["rules"]
        if split.stable is None:  # nothing routable yet (first version not Ready)
            return False
        desired = compute_route_rules(rules, rollout, split, config.port)
        if desired == rules:
            return False
        patch = {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"]}, "spec": {"rules": desired}}
        try:
            self._api.patch(HTTP_ROUTES, namespace, config.http_route, patch)
        except KubeError as err:
            if err.conflict:  # someone else wrote it meanwhile: the next tick retries on fresh data
                raise RouteError(
                    f"HTTPRoute {namespace}/{config.http_route} changed while patching; will retry"
                ) from err
            raise
        return True
