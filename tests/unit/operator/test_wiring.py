"""Manifests per the project contract, the health/metrics HTTP app, and the kopf handler wiring."""

import asyncio
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kopf._core.intents.handlers import TimerHandler  # the registry below is kopf's private layout too

from rollout_operator.adapters.manifests import (
    Owner,
    ServerTemplate,
    compute_router_deployment,
    compute_router_service,
    compute_version_deployment,
    compute_version_service,
)
from rollout_operator.handlers import register
from rollout_operator.main import build_http_app, main
from rollout_operator.settings import Settings

pytestmark = pytest.mark.unit
OWNER = Owner("speech", "ml", "uid-1")


def test_version_deployment_and_service_follow_the_contract():
    dep = compute_version_deployment(
        OWNER,
        "v2",
        3,
        ServerTemplate("speech-commands", "file:///m/v2.onnx", "modelrollout/model-server:dev", args=("--batch=8",)),
    )
    labels = {
        "modelrollout.dev/rollout": "speech",
        "modelrollout.dev/version": "v2",
        "app.kubernetes.io/name": "model-server",
    }
    assert dep["metadata"]["name"] == "speech-v2"
    assert labels.items() <= dep["metadata"]["labels"].items()
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "modelrollout.dev/v1alpha1",
            "kind": "ModelRollout",
            "name": "speech",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    pod = dep["spec"]["template"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    (c,) = pod["spec"]["containers"]
    assert "command" not in c
    assert c["args"] == [
        "--model-name=speech-commands",
        "--model-version=v2",
        "--model-uri=file:///m/v2.onnx",
        "--host=$(POD_IP)",
        "--port=8080",
        "--batch=8",
    ]
    assert c["env"][0] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    svc = compute_version_service(OWNER, "v2")
    assert svc["metadata"]["name"] == "speech-v2" and svc["spec"]["selector"] == labels
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]


def test_router_is_the_front_door_and_selects_only_router_pods():
    dep = compute_router_deployment(OWNER, "modelrollout/router:dev")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--rollout=speech", "--namespace=ml", "--host=$(POD_IP)", "--port=8080"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "speech-router"
    svc = compute_router_service(OWNER)
    assert svc["metadata"]["name"] == "speech"
    assert svc["spec"]["selector"] == {"modelrollout.dev/rollout": "speech", "app.kubernetes.io/name": "router"}


async def test_http_app_serves_probes_and_metrics():
    ready = asyncio.Event()
    async with TestClient(TestServer(build_http_app(ready))) as client:
        assert (await client.get("/healthz")).status == 200
        not_ready = await client.get("/readyz")
        assert not_ready.status == 503 and "not watching yet" in await not_ready.text()
        ready.set()
        assert (await client.get("/readyz")).status == 200
        text = await (await client.get("/metrics")).text()
        assert "modelrollout_reconcile_duration_seconds_bucket" in text
        assert "modelrollout_api_calls_total" in text or "# HELP modelrollout_api_calls_total" in text


def test_handlers_are_a_timer_event_watchers_and_an_index_only():
    registry = kopf.OperatorRegistry()
    register(registry, Settings(tick_interval=2.5))
    (timer,) = registry._spawning.get_all_handlers()
    assert isinstance(timer, TimerHandler) and timer.interval == 2.5
    # No change handlers: kopf keeps no last-handled-configuration annotation on user objects.
    assert list(registry._changing.get_all_handlers()) == []
    # The ModelRollout delete watcher and the Deployment watch (handlers/workloads.py).
    assert sorted(_name(h.fn) for h in registry._watching.get_all_handlers()) == ["forget", "workload_changed"]
    assert [h.id for h in registry._indexing.get_all_handlers()] == ["rollouts_by_uid"]  # its kwarg name


def _name(fn: Callable[..., Any]) -> str:
    return fn.__name__


def test_startup_bounds_kopfs_own_api_calls_by_the_kube_timeout():
    registry = kopf.OperatorRegistry()
    register(registry, Settings(kube_timeout=12.0), runtime=object())  # type: ignore[arg-type]
    (startup,) = [
        h for h in registry._activities.get_all_handlers() if h.activity is not None and h.activity.value == "startup"
    ]
    settings = kopf.OperatorSettings()
    assert settings.networking.request_timeout == 300  # kopf's default, which we replace
    # kopf types each fn as its full keyword protocol; ours take `**_`, so the test passes only what they read.
    startup_fn: Callable[..., Any] = startup.fn
    startup_fn(settings=settings, memo=kopf.Memo())
    assert settings.networking.request_timeout == 12.0
    assert settings.networking.connect_timeout == 12.0
    assert settings.watching.connect_timeout == 12.0
    assert settings.watching.server_timeout == 300.0
    # kopf sends str(server_timeout) as timeoutSeconds; the API server parses an integer and
    # answers 400 to "300.0", so every watch (and the operator) would fail.
    assert str(settings.watching.server_timeout) == "300"
    assert settings.watching.client_timeout == 312.0


def test_main_rejects_bad_settings_before_starting(capsys):
    assert main(["--port=99999"]) == 2
    assert "--port (--port / MODELROLLOUT_PORT): expected an integer between 1 and 65535" in capsys.readouterr().err


def test_empty_model_uri_passes_no_flag_so_the_server_default_applies():
    dep = compute_version_deployment(OWNER, "v1", 1, ServerTemplate("m", "", "img"))
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--model-uri") for a in args)


def test_router_endpoints_source_flag_only_when_not_the_default():
    pods = compute_router_deployment(OWNER, "r", endpoints_source="pods")
    assert pods["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--endpoints-source=pods"
    default = compute_router_deployment(OWNER, "r")
    assert not any("endpoints-source" in a for a in default["spec"]["template"]["spec"]["containers"][0]["args"])


def test_router_probes_use_its_health_endpoints_with_a_tolerant_timeout():
    (c,) = compute_router_deployment(OWNER, "r")["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    # A 1 s default timeout flapped readiness on a loaded node (seen in the e2e runs).
    assert c["readinessProbe"]["timeoutSeconds"] >= 5


def test_model_server_probes_use_the_kserve_health_endpoints():
    dep = compute_version_deployment(OWNER, "v1", 1, ServerTemplate("m", "", "img"))
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert c["readinessProbe"]["timeoutSeconds"] >= 5
