"""The gatewayAPI traffic provider against the real API server with the Gateway API CRDs installed.

The API server must accept exactly what the operator writes (no rejected or defaulted-away fields:
a steady rollout stops writing), and the HTTPRoute's weights and RequestMirror follow each step.
"""

from __future__ import annotations

import threading
import time

import pytest

from rollout_operator.adapters.kube import HTTP_ROUTES, MODEL_ROLLOUTS
from tests.support.operator_harness import apply, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ROUTING = {"gatewayAPI": {"httpRoute": "speech"}}
STRATEGY = {
    "shadow": {
        "mirrorPercent": 50,
        "duration": "4s",
        "then": "canary",
        "canary": {"steps": [{"setWeight": 30}, {"pause": {"duration": "3s"}}]},
    }
}


def _route(namespace: str) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "speech", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "shared-gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-team", "value": "ml"}]},
                        }
                    ],
                    "backendRefs": [{"name": "placeholder", "port": 8080}],
                }
            ],
        },
    }


def _state(route: dict) -> tuple:
    rule = route["spec"]["rules"][0]
    weights = tuple((r["name"], r.get("weight")) for r in rule.get("backendRefs", []))
    mirrors = tuple(
        (f["requestMirror"]["backendRef"]["name"], f["requestMirror"].get("percent"))
        for f in rule.get("filters", [])
        if f["type"] == "RequestMirror"
    )
    return weights, mirrors


class RouteSampler(threading.Thread):
    def __init__(self, api, ns: str) -> None:
        super().__init__(daemon=True)
        self.api, self.ns = api, ns
        self.states: list[tuple] = []
        self.versions: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            route = self.api.get(HTTP_ROUTES, self.ns, "speech")
            self.versions.add(route["metadata"]["resourceVersion"])
            state = _state(route)
            if not self.states or self.states[-1] != state:
                self.states.append(state)


def _status(api, ns):
    return (api.get(MODEL_ROLLOUTS, ns, "speech") or {}).get("status") or {}


def test_httproute_weights_and_mirror_follow_each_step(tb, api, ns, operator):
    apply(tb, _route(ns))
    apply(tb, rollout_manifest("speech", ns, "v1", strategy=STRATEGY, routing=ROUTING))
    wait_for(lambda: _status(api, ns).get("phase") == "Healthy", "v1 Healthy", timeout=180, describe=operator.log_tail)
    wait_for(lambda: _state(api.get(HTTP_ROUTES, ns, "speech"))[0] == (("speech-v1", 100),), "route on v1")
    sampler = RouteSampler(api, ns)
    sampler.start()
    apply(tb, rollout_manifest("speech", ns, "v2", strategy=STRATEGY, routing=ROUTING))
    wait_for(
        lambda: _status(api, ns).get("phase") == "Healthy" and _status(api, ns).get("stableVersion") == "v2",
        "v2 promoted through shadow and canary",
        timeout=240,
        describe=operator.log_tail,
    )
    wait_for(lambda: sampler.states and sampler.states[-1] == ((("speech-v2", 100),), ()), "route on v2 only")
    sampler.stop.set()
    sampler.join()
    states = sampler.states
    # Shadow: users on v1, half the requests copied to v2.
    assert any(
        mirrors == (("speech-v2", 50),) and dict(weights).get("speech-v1") == 100 for weights, mirrors in states
    ), states
    # Canary: 70/30 with no mirror.
    assert ((("speech-v1", 70), ("speech-v2", 30)), ()) in states, states
    # The user's match and filter survive every write.
    rule = api.get(HTTP_ROUTES, ns, "speech")["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2/models"}}]
    assert [f["type"] for f in rule["filters"]] == ["RequestHeaderModifier"]
    # What the operator wrote is what the API server kept: once settled, no more writes.
    before = api.get(HTTP_ROUTES, ns, "speech")["metadata"]["resourceVersion"]
    time.sleep(4)
    assert api.get(HTTP_ROUTES, ns, "speech")["metadata"]["resourceVersion"] == before


def test_missing_httproute_holds_the_rollout_without_declaring_traffic(tb, api, ns, operator):
    apply(tb, rollout_manifest("speech", ns, "v1", routing={"gatewayAPI": {"httpRoute": "absent"}}))
    wait_for(
        lambda: (
            "spec.trafficRouting.gatewayAPI.httpRoute: HTTPRoute " + ns + "/absent not found" in operator.log_tail(400)
        ),
        "the operator to report the missing route",
        timeout=180,
        describe=operator.log_tail,
    )
    # The split is only declared in status once the route carries it.
    status = _status(api, ns)
    assert status.get("phase") == "Initializing", status
    assert not (status.get("traffic") or {}).get("stable"), status
