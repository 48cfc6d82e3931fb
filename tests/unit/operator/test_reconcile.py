"""reconcile() with in-memory adapters, driven tick by tick with an injected clock.

Checks the shell's contract: actions executed as ensures, one status write per changed tick
through a resourceVersion precondition, events only after a persisted decision, traffic never
on a deleted or scaled-down version.
"""

import copy

import pytest

from rollout_operator import metrics as m
from rollout_operator.adapters.fakes import FakeWorkloads
from rollout_operator.reconcile import compute_status_patch, reconcile
from rollout_operator.runtime import Runtime
from rollout_operator.settings import Settings
from tests.support.reconcile_world import SPEC, CountingWorkloads, World, healthy

pytestmark = pytest.mark.unit


def test_images_are_the_operators_when_the_spec_names_none():
    w = World()
    w.settings = Settings(
        prometheus_url="",
        model_server_image="registry.example/ml/model-server:7",
        router_image="registry.example/ml/router:7",
    )
    w.run_until(healthy("v1"))
    assert w.adapters.workloads.routers == {("ml", "speech"): "registry.example/ml/router:7"}
    (dep,) = w.adapters.workloads.deployments.values()
    assert dep.server is not None and dep.server.image == "registry.example/ml/model-server:7"


def test_a_pod_field_the_operator_does_not_allow_makes_the_rollout_invalid():
    spec = copy.deepcopy(SPEC)
    spec["server"]["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]
    w = World(spec)
    w.tick()
    assert w.status["phase"] == "Invalid"
    assert "spec.server.env[0].valueFrom" in w.status["message"]
    assert "--allow-env-value-from" in w.status["message"]
    assert w.adapters.workloads.deployments == {}, "nothing reaches a pod"


def test_first_version_comes_up_with_router_and_full_traffic():
    w = World()
    w.run_until(healthy("v1"))
    assert w.adapters.workloads.routers == {("ml", "speech"): "modelrollout/router:dev"}
    assert w.adapters.workloads.replicas("ml", "speech") == {"v1": 2}
    assert w.status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert "Ready" in w.adapters.events.reasons()


def test_canary_promotes_step_by_step_then_scales_down_the_old_version():
    w = World()
    w.run_until(healthy("v1"))
    w.set_version("v2")
    w.run_until(healthy("v2"))
    candidate_weights = [c for (_, (_, c)) in w.traffic_seen if c is not None]
    assert 10 in candidate_weights and 50 in candidate_weights
    assert candidate_weights == sorted(candidate_weights), "canary weight never goes backwards"
    assert w.status["traffic"] == {"stable": {"version": "v2", "weight": 100}}
    assert w.adapters.events.reasons().count("Promoted") == 1
    assert w.status["history"][-1]["version"] == "v2" and w.status["history"][-1]["outcome"] == "Promoted"
    # Queries ran against the spec's Prometheus, for the candidate version.
    assert {q.version for q in w.adapters.metrics.queries} == {"v2"}
    # The old stable goes to zero after its scale-down delay.
    w.run_until(lambda s: w.adapters.workloads.replicas("ml", "speech").get("v1", 0) == 0)
    assert w.adapters.workloads.replicas("ml", "speech")["v2"] == 2


def test_breach_rolls_back_to_stable_with_the_numbers_in_an_event():
    w = World()
    w.run_until(healthy("v1"))
    w.error_rate = 0.2
    w.set_version("v3")
    w.run_until(lambda s: s.get("phase") == "RolledBack")
    assert w.status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert w.status["stableVersion"] == "v1"
    warnings = [msg for t, _, msg in w.adapters.events.events if t == "Warning"]
    assert any("0.2" in msg and "0.01" in msg for msg in warnings), warnings
    w.run_until(lambda s: w.adapters.workloads.replicas("ml", "speech").get("v3", 0) == 0)
    assert "Promoted" not in w.adapters.events.reasons()[1:]


def test_unchanged_status_is_not_written_again():
    w = World()
    w.run_until(healthy("v1"))
    writes = w.adapters.status.writes
    for _ in range(3):
        outcome = w.tick()
        assert not outcome.written
    assert w.adapters.status.writes == writes


def test_stale_read_writes_nothing_and_emits_no_events():
    w = World()
    body = copy.deepcopy(w.obj)
    w.obj["metadata"]["resourceVersion"] = "99"  # someone changed the object meanwhile
    outcome = reconcile(body, w.adapters, w.settings, w.now)
    assert outcome.conflict and not outcome.written
    assert w.adapters.events.events == [] and "status" not in w.obj


def test_invalid_spec_is_phase_invalid_with_the_field_and_one_event():
    w = World()
    w.obj["spec"]["strategy"]["canary"]["steps"][2]["setWeight"] = 5
    for _ in range(3):
        w.tick()
    assert w.status["phase"] == "Invalid"
    assert "spec.strategy.canary.steps[2].setWeight" in w.status["message"]
    assert w.adapters.events.reasons() == ["InvalidSpec"]
    assert w.adapters.workloads.deployments == {}


def test_no_prometheus_address_is_an_error_measurement_that_never_promotes():
    spec = copy.deepcopy(SPEC)
    del spec["analysis"]["prometheus"]
    w = World(spec)
    w.run_until(healthy("v1"))
    w.set_version("v2")
    w.run_until(lambda s: s.get("phase") == "RolledBack")
    assert w.status["stableVersion"] == "v1" and w.status["candidateVersion"] == "v2"
    gate = w.status["analysis"]["metrics"][0]
    assert "no Prometheus address" in gate["message"]


def test_operator_metrics_show_phase_weights_value_and_threshold():
    w = World()
    w.run_until(healthy("v1"))
    w.set_version("v2")
    w.run_until(lambda s: (s.get("analysis") or {}).get("metrics", [{}])[0].get("value") is not None)
    text = m.generate_text()
    assert 'modelrollout_rollout_phase{namespace="ml",phase="Progressing",rollout="speech"} 1.0' in text
    assert 'modelrollout_analysis_value{metric="error-rate",namespace="ml",rollout="speech"} 0.001' in text
    assert (
        'modelrollout_analysis_threshold{bound="max",metric="error-rate",namespace="ml",rollout="speech"} 0.01' in text
    )
    assert 'modelrollout_traffic_weight{namespace="ml",role="candidate",rollout="speech",version="v2"}' in text


def test_runtime_skips_ticks_until_due_or_changed():
    workloads = CountingWorkloads()
    w = World(workloads=workloads)
    clock = [100.0]
    rt = Runtime(settings=w.settings, adapters=w.adapters, clock=lambda: w.now, monotonic=lambda: clock[0])
    rt.tick(copy.deepcopy(w.obj))
    first = workloads.fetches
    body = copy.deepcopy(w.obj)  # after our own write: new resourceVersion → due at once
    rt.tick(body)
    assert workloads.fetches - first == 1
    rt.tick(body)  # same resourceVersion, requeue time not reached → no work at all
    assert workloads.fetches - first == 1
    clock[0] += 3600
    rt.tick(body)
    assert workloads.fetches - first == 2


def test_compute_status_patch_removes_sets_and_skips_unchanged():
    old = {
        "phase": "Progressing",
        "traffic": {"stable": {"version": "v1", "weight": 90}, "candidate": {"version": "v2", "weight": 10}},
        "history": [{"version": "v1"}],
        "gone": 1,
    }
    new = {
        "phase": "Healthy",
        "traffic": {"stable": {"version": "v2", "weight": 100}, "candidate": None, "mirror": None},
        "history": [{"version": "v1"}],
        "message": None,
    }
    assert compute_status_patch(old, new) == {
        "phase": "Healthy",
        "traffic": {"stable": {"version": "v2", "weight": 100}, "candidate": None},
        "gone": None,
    }
    assert compute_status_patch(new | {"message": None}, new) == {}


def test_runtime_turns_api_errors_into_a_retry_not_an_exception():
    from rollout_operator.adapters import KubeError

    class Broken(FakeWorkloads):
        def fetch_workloads(self, namespace, rollout):
            raise KubeError(503, "etcd leader changed", method="GET", path="/apis/apps/v1/...")

    w = World(workloads=Broken())
    clock = [0.0]
    rt = Runtime(settings=w.settings, adapters=w.adapters, clock=lambda: w.now, monotonic=lambda: clock[0])
    before = m.RECONCILE_ERRORS.labels("api")._value.get()
    rt.tick(copy.deepcopy(w.obj))  # must not raise
    assert m.RECONCILE_ERRORS.labels("api")._value.get() == before + 1
    assert "status" not in w.obj  # nothing decided on a failed observation
    assert not rt.schedule.is_due("u1", w.obj["metadata"]["resourceVersion"], clock[0] + 1)
    assert rt.schedule.is_due("u1", w.obj["metadata"]["resourceVersion"], clock[0] + 5)
    # The failure is explained once in an event (status may not move at all), not once per retry.
    clock[0] += 5
    rt.tick(copy.deepcopy(w.obj))
    assert w.adapters.events.events == [
        ("Warning", "ReconcileError", "GET /apis/apps/v1/...: HTTP 503: etcd leader changed; retrying every 5s")
    ]


def _rolls_back_on_errors(w, needle):
    w.run_until(healthy("v1"))
    w.set_version("v2")
    w.run_until(lambda s: s.get("phase") == "RolledBack")
    gate = w.status["analysis"]["metrics"][0]
    assert needle in gate["message"], gate
    assert gate["consecutiveErrors"] == 4  # spec default consecutiveErrorLimit
    assert w.status["stableVersion"] == "v1" and "Promoted" not in w.adapters.events.reasons()[1:]


def test_a_metrics_provider_that_raises_is_an_error_measurement_counted_to_the_limit():
    w = World()

    def explode(q):
        raise RecursionError("maximum recursion depth exceeded while decoding")

    w.adapters.metrics._answer = explode
    _rolls_back_on_errors(w, "metrics provider failed: RecursionError")


def test_a_trickling_prometheus_rolls_back_at_the_error_limit_instead_of_freezing():
    from dataclasses import replace

    from rollout_operator.adapters.prometheus import PrometheusMetrics
    from tests.support.stub_prometheus import TricklingPrometheus, vector

    spec = copy.deepcopy(SPEC)
    with TricklingPrometheus(vector(0.001), delay=0.05) as slow:
        spec["analysis"]["prometheus"]["address"] = slow.url
        w = World(spec)
        w.live = replace(w.live, metrics=PrometheusMetrics(timeout=0.3))
        _rolls_back_on_errors(w, "DeadlineExceeded")
        assert slow.connections >= 4


def test_switching_to_gateway_api_or_turning_policies_off_removes_the_routers_policies():
    w = World()
    w.run_until(healthy("v1"))
    assert w.adapters.workloads.policies == {("ml", "speech")}
    w.obj["spec"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": "speech"}}
    w.obj["metadata"]["resourceVersion"] = str(int(w.obj["metadata"]["resourceVersion"]) + 1)
    w.tick()
    assert w.adapters.workloads.policies == set()

    off = World()
    off.settings = Settings(prometheus_url="", network_policies=False)
    off.run_until(healthy("v1"))
    assert off.adapters.workloads.routers and off.adapters.workloads.policies == set()
