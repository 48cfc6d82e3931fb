"""Workloads, events, status and traffic adapters through the real client against a stub API on loopback."""

from typing import Any

import pytest

from rollout_operator.adapters.gateway_api import GatewayApiTraffic, RouteError
from rollout_operator.adapters.kube import KubeApi
from rollout_operator.adapters.kube_events import KubeEvents
from rollout_operator.adapters.kube_status import KubeStatusWriter
from rollout_operator.adapters.kube_workloads import HASH_ANNOTATION, KubeWorkloads
from rollout_operator.adapters.manifests import Owner, ServerTemplate
from rollout_operator.adapters.router import RouterTraffic
from rollout_operator.domain import GatewayAPISpec, MirrorTarget, TrafficSplit, VersionWeight, WorkloadState

pytestmark = pytest.mark.unit

NS = "/namespaces/ml"
DEPLOY = "/apis/apps/v1" + NS + "/deployments"
SVC = "/api/v1" + NS + "/services"
PDB = "/apis/policy/v1" + NS + "/poddisruptionbudgets"
NETPOL = "/apis/networking.k8s.io/v1" + NS + "/networkpolicies"
ROUTES = "/apis/gateway.networking.k8s.io/v1" + NS + "/httproutes"
MROS = "/apis/modelrollout.dev/v1alpha1" + NS + "/modelrollouts"
OWNER = Owner("speech", "ml", "uid-1")
SERVER = ServerTemplate("speech-commands", "file:///models/v2.onnx", "modelrollout/model-server:dev")


class RecordingKubeApi(KubeApi):
    """A KubeApi that keeps every (verb, resource kind, status) its call hook saw."""

    def __init__(self, api_client: Any) -> None:
        self.calls: list[tuple[str, str, int]] = []
        super().__init__(api_client, on_call=lambda *c: self.calls.append(c))


@pytest.fixture
def api(kube):
    return RecordingKubeApi(kube.api_client())


def test_ensure_version_applies_service_pdb_and_deployment_once(kube, api):
    w = KubeWorkloads(api)
    w.ensure_version(OWNER, "v2", 2, SERVER)
    dep, svc = kube.get(DEPLOY, "speech-v2"), kube.get(SVC, "speech-v2")
    assert dep["spec"]["replicas"] == 2 and svc["spec"]["ports"][0]["name"] == "http"
    assert kube.get(PDB, "speech-v2")["spec"]["maxUnavailable"] == 1
    applies = [r for r in kube.writes() if r[2] == "application/apply-patch+yaml"]
    assert len(applies) == 3
    # Each apply is preceded by a GET (the takeover check); the Service is applied first.
    assert [c for c in api.calls if c[0] == "PATCH"][0] == ("PATCH", "services", 200)
    # The next tick lists (learning the applied hash) and the same ensure writes nothing.
    w.fetch_workloads("ml", "speech")
    before = len(kube.writes())
    w.ensure_version(OWNER, "v2", 2, SERVER)
    assert len(kube.writes()) == before
    # A different replica count is applied again.
    w.ensure_version(OWNER, "v2", 3, SERVER)
    assert kube.get(DEPLOY, "speech-v2")["spec"]["replicas"] == 3


def test_fetch_workloads_reads_readiness_per_version(kube, api):
    w = KubeWorkloads(api)
    w.ensure_version(OWNER, "v1", 2, SERVER)
    w.ensure_router(OWNER, "modelrollout/router:dev")
    dep = kube.get(DEPLOY, "speech-v1")
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1}
    states = w.fetch_workloads("ml", "speech")
    assert states == {"v1": WorkloadState(exists=True, desired_replicas=2, ready_replicas=1, updated=True)}
    assert not states["v1"].is_ready(2)


def test_scale_down_then_ensure_scales_back_up(kube, api):
    w = KubeWorkloads(api)
    w.ensure_version(OWNER, "v1", 2, SERVER)
    w.fetch_workloads("ml", "speech")
    w.scale_version("ml", "speech", "v1", 0)
    dep = kube.get(DEPLOY, "speech-v1")
    assert dep["spec"]["replicas"] == 0 and HASH_ANNOTATION not in dep["metadata"].get("annotations", {})
    w.fetch_workloads("ml", "speech")
    w.ensure_version(OWNER, "v1", 2, SERVER)  # must not be skipped as "already applied"
    assert kube.get(DEPLOY, "speech-v1")["spec"]["replicas"] == 2


def test_delete_version_removes_deployment_and_service_and_tolerates_absence(kube, api):
    w = KubeWorkloads(api)
    w.ensure_version(OWNER, "v1", 1, SERVER)
    assert kube.get(PDB, "speech-v1") is not None
    w.delete_version("ml", "speech", "v1")
    assert kube.get(DEPLOY, "speech-v1") is None and kube.get(SVC, "speech-v1") is None
    assert kube.get(PDB, "speech-v1") is None
    w.delete_version("ml", "speech", "v1")  # idempotent


def test_router_gets_a_binding_to_the_chart_role_service_pdb_policies_and_deployment(kube, api):
    KubeWorkloads(api).ensure_router(OWNER, "modelrollout/router:dev")
    kinds = sorted(p.split("/")[-2] for p in kube.objects)
    assert kinds == [
        "deployments",
        "networkpolicies",
        "networkpolicies",
        "poddisruptionbudgets",
        "rolebindings",
        "serviceaccounts",
        "services",
    ], "no Role: the chart's ClusterRole is bound"
    binding = kube.get("/apis/rbac.authorization.k8s.io/v1" + NS + "/rolebindings", "speech.router")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "modelrollout-router",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "speech-router", "namespace": "ml"}]
    assert kube.get(NETPOL, "speech.model-servers") and kube.get(NETPOL, "speech.router")


def test_network_policies_can_be_switched_off(kube, api):
    KubeWorkloads(api).ensure_router(OWNER, "r:1", network_policies=False)
    assert not [p for p in kube.objects if "/networkpolicies/" in p]


def test_removing_network_policies_deletes_only_the_ones_this_rollout_controls(kube, api):
    w = KubeWorkloads(api)
    w.ensure_router(OWNER, "r:1")
    # Someone else's policy now holds the router policy's name: it is left alone.
    foreign = {
        "metadata": {
            "name": "speech.router",
            "namespace": "ml",
            "uid": "np-foreign",
            "ownerReferences": [{"kind": "ModelRollout", "name": "speech", "uid": "uid-other", "controller": True}],
        }
    }
    kube.put(NETPOL, foreign)
    kube.objects[NETPOL + "/speech.model-servers"]["metadata"]["uid"] = "np-ours"
    w.delete_network_policies(OWNER)
    assert kube.get(NETPOL, "speech.model-servers") is None
    assert kube.get(NETPOL, "speech.router")["metadata"]["uid"] == "np-foreign"
    deletes = [r for r in kube.requests if r[0] == "DELETE"]
    assert deletes == [
        (
            "DELETE",
            NETPOL + "/speech.model-servers",
            "application/json",
            {"propagationPolicy": "Background", "preconditions": {"uid": "np-ours"}},
        )
    ]
    # Settled: the next ticks' ensure-absent costs no API call.
    before = len(kube.requests)
    w.delete_network_policies(OWNER)
    assert len(kube.requests) == before


def test_removing_network_policies_is_idempotent_and_they_come_back_with_the_router(kube, api):
    w = KubeWorkloads(api)
    w.ensure_router(OWNER, "r:1")
    w.fetch_workloads("ml", "speech")  # learns the router group's hash (policies included)
    w.delete_network_policies(OWNER)
    assert not [p for p in kube.objects if "/networkpolicies/" in p]
    assert HASH_ANNOTATION not in kube.get(DEPLOY, "speech")["metadata"].get("annotations", {})
    KubeWorkloads(api).delete_network_policies(OWNER)  # nothing left: no error, no delete
    # Back to the built-in router: the same group is applied again, policies and all.
    w.fetch_workloads("ml", "speech")
    w.ensure_router(OWNER, "r:1")
    assert kube.get(NETPOL, "speech.model-servers") and kube.get(NETPOL, "speech.router")


def test_removing_network_policies_without_a_router_deployment(kube, api):
    from rollout_operator.adapters.manifests import PodSettings, compute_network_policies

    for policy in compute_network_policies(OWNER, PodSettings()):
        kube.put(NETPOL, policy)
    KubeWorkloads(api).delete_network_policies(OWNER)  # e.g. a gatewayAPI rollout from the start
    assert not [p for p in kube.objects if "/networkpolicies/" in p]


def test_preview_service_selects_the_candidate(kube, api):
    w = KubeWorkloads(api)
    w.ensure_preview(OWNER, "v2")
    assert kube.get(SVC, "speech-preview")["spec"]["selector"]["modelrollout.dev/version"] == "v2"
    w.delete_preview("ml", "speech")
    assert kube.get(SVC, "speech-preview") is None


def test_events_are_core_v1_events_on_the_rollout(kube, api):
    KubeEvents(api).emit(OWNER, "Warning", "RollingBack", "p99 0.84s > max 0.5s (2/2 failures)")
    ((key, event),) = kube.objects.items()
    assert key.startswith("/api/v1/namespaces/ml/events/speech.")
    assert event["involvedObject"] == {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "name": "speech",
        "namespace": "ml",
        "uid": "uid-1",
    }
    assert (event["type"], event["reason"]) == ("Warning", "RollingBack")
    assert event["message"] == "p99 0.84s > max 0.5s (2/2 failures)"


def test_status_write_has_a_resource_version_precondition(kube, api):
    obj = kube.put(MROS, {"metadata": {"name": "speech", "namespace": "ml"}, "spec": {"x": 1}})
    writer = KubeStatusWriter(api)
    rv = obj["metadata"]["resourceVersion"]
    assert writer.patch_status("ml", "speech", rv, {"phase": "Healthy"})
    assert kube.get(MROS, "speech")["status"] == {"phase": "Healthy"}
    assert kube.get(MROS, "speech")["spec"] == {"x": 1}
    assert not writer.patch_status("ml", "speech", rv, {"phase": "Progressing"})  # stale read
    assert kube.get(MROS, "speech")["status"] == {"phase": "Healthy"}
    assert not writer.patch_status("ml", "gone", "1", {"phase": "Healthy"})


def test_router_provider_leaves_the_switch_to_the_status_write(kube, api):
    kube.put(
        MROS,
        {
            "metadata": {"name": "speech", "namespace": "ml"},
            "status": {
                "traffic": {"stable": {"version": "v1", "weight": 90}, "candidate": {"version": "v2", "weight": 10}}
            },
        },
    )
    writes = len(kube.writes())
    provider = RouterTraffic(api)
    split = TrafficSplit(VersionWeight("v1", 90), VersionWeight("v2", 10))
    assert provider.ensure_traffic("ml", "speech", split, None) is False  # the status write is the switch
    assert len(kube.writes()) == writes


ROUTE: dict[str, Any] = {
    "metadata": {"name": "speech", "namespace": "ml"},
    "spec": {
        "parentRefs": [{"name": "gw"}],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                "filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
                ],
                "backendRefs": [{"name": "speech-v1", "port": 8080}],
            }
        ],
    },
}


def test_gateway_api_writes_weights_and_mirror_and_keeps_user_parts(kube, api):
    kube.put(ROUTES, ROUTE)
    gw, cfg = GatewayApiTraffic(api), GatewayAPISpec(http_route="speech")
    split = TrafficSplit(VersionWeight("v1", 90), VersionWeight("v2", 10), MirrorTarget("v2", 50))
    assert gw.ensure_traffic("ml", "speech", split, cfg) is True
    rule = kube.get(ROUTES, "speech")["spec"]["rules"][0]
    assert rule["matches"] == ROUTE["spec"]["rules"][0]["matches"]
    assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [("speech-v1", 90), ("speech-v2", 10)]
    types = [f["type"] for f in rule["filters"]]
    assert types == ["RequestHeaderModifier", "RequestMirror"]
    assert rule["filters"][1]["requestMirror"] == {
        "backendRef": {"group": "", "kind": "Service", "name": "speech-v2", "port": 8080},
        "percent": 50,
    }
    # Same split again: no write. Mirror gone: filter removed, user filter kept.
    writes = len(kube.writes())
    assert gw.ensure_traffic("ml", "speech", split, cfg) is False and len(kube.writes()) == writes
    done = TrafficSplit(VersionWeight("v2", 100))
    gw.ensure_traffic("ml", "speech", done, cfg)
    rule = kube.get(ROUTES, "speech")["spec"]["rules"][0]
    assert [f["type"] for f in rule["filters"]] == ["RequestHeaderModifier"]
    assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [("speech-v2", 100)]


def test_gateway_api_missing_route_names_the_field(api):
    with pytest.raises(RouteError, match=r"spec.trafficRouting.gatewayAPI.httpRoute: HTTPRoute ml/nope not found"):
        GatewayApiTraffic(api).ensure_traffic(
            "ml", "speech", TrafficSplit(VersionWeight("v1", 100)), GatewayAPISpec(http_route="nope")
        )
