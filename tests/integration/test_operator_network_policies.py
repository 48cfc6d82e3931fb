"""The rollout's NetworkPolicies against the real API server: applied with the built-in router,
deleted by the operator once unwanted (a switch to gatewayAPI, or --network-policies=false)."""

from __future__ import annotations

import pytest

from rollout_operator.adapters.kube import DEPLOYMENTS, HTTP_ROUTES, MODEL_ROLLOUTS, NETWORK_POLICIES
from tests.integration.test_operator_gateway_api import _route, _state
from tests.support.operator_harness import apply, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

OURS = ["speech.model-servers", "speech.router"]


def _policies(api, ns) -> list[str]:
    return sorted(p["metadata"]["name"] for p in api.list(NETWORK_POLICIES, ns, "modelrollout.dev/rollout=speech"))


def _status(api, ns):
    return (api.get(MODEL_ROLLOUTS, ns, "speech") or {}).get("status") or {}


def _healthy_with_policies(tb, api, ns, operator) -> None:
    apply(tb, rollout_manifest("speech", ns, "v1"))
    wait_for(lambda: _status(api, ns).get("phase") == "Healthy", "v1 Healthy", timeout=180, describe=operator.log_tail)
    wait_for(lambda: _policies(api, ns) == OURS, "both policies applied", describe=operator.log_tail)


def test_switching_to_gateway_api_deletes_the_routers_policies(tb, api, ns, operator):
    _healthy_with_policies(tb, api, ns, operator)
    apply(tb, _route(ns))
    # `router: null`: kubectl apply would otherwise keep the router the CRD defaulted in.
    apply(tb, rollout_manifest("speech", ns, "v1", routing={"router": None, "gatewayAPI": {"httpRoute": "speech"}}))
    wait_for(lambda: _policies(api, ns) == [], "policies deleted after the switch", describe=operator.log_tail)
    wait_for(lambda: _state(api.get(HTTP_ROUTES, ns, "speech"))[0] == (("speech-v1", 100),), "route on v1")
    assert _status(api, ns).get("phase") == "Healthy"
    # Back to the built-in router: its policies are applied again.
    apply(tb, rollout_manifest("speech", ns, "v1", routing={"router": {}, "gatewayAPI": None}))
    wait_for(lambda: _policies(api, ns) == OURS, "policies back with the router", describe=operator.log_tail)


def test_restarting_with_network_policies_off_deletes_them_and_keeps_the_router(tb, api, ns, operator):
    _healthy_with_policies(tb, api, ns, operator)
    operator.stop()
    operator.args.append("--network-policies=false")
    operator.start()
    wait_for(lambda: _policies(api, ns) == [], "policies deleted after the restart", describe=operator.log_tail)
    assert api.get(DEPLOYMENTS, ns, "speech") is not None
    assert _status(api, ns).get("phase") == "Healthy"
