"""The Deployment watch: a readiness change of a rollout's model-server Deployment ticks that
rollout at once (not at its next requeue time); other Deployments and noise do not."""

import copy
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from rollout_operator.adapters import build_fake_adapters
from rollout_operator.adapters.fakes import FakeWorkloads
from rollout_operator.handlers import register
from rollout_operator.runtime import Runtime
from rollout_operator.settings import Settings
from rollout_operator.workload_watch import (
    WATCH_LABEL_SELECTOR,
    WorkloadWatch,
    apply_workload_event,
    compute_readiness_key,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SPEC = {
    "model": {"name": "speech-commands", "version": "v1", "uri": "file:///models/v1.onnx"},
    "server": {"replicas": 2},
    "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}]}},
    "progressDeadline": "5m",
}
OWNER_REF = {
    "apiVersion": "modelrollout.dev/v1alpha1",
    "kind": "ModelRollout",
    "name": "speech",
    "uid": "u1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def deployment(ready: int, *, uid="d1", owner=OWNER_REF, generation=1, annotations=None) -> dict:
    """A model-server Deployment as the watch delivers it (what kube_workloads reads, and more)."""
    return {
        "metadata": {
            "name": "speech-v1",
            "namespace": "ml",
            "uid": uid,
            "generation": generation,
            "labels": {
                "modelrollout.dev/rollout": "speech",
                "modelrollout.dev/version": "v1",
                "app.kubernetes.io/name": "model-server",
            },
            "annotations": annotations or {},
            "ownerReferences": [owner] if owner else [],
        },
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": generation,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


class CountingWorkloads(FakeWorkloads):
    """The fake Deployments, counting readiness reads (one per reconcile)."""

    def __init__(self) -> None:
        super().__init__(auto_ready=False)
        self.fetches = 0

    def fetch_workloads(self, namespace, rollout):
        self.fetches += 1
        return super().fetch_workloads(namespace, rollout)


class Cluster:
    """One ModelRollout in the fake status store, its pods not Ready until `make_ready()`."""

    def __init__(self):
        self.workloads = CountingWorkloads()
        self.adapters = replace(build_fake_adapters(auto_ready=False), workloads=self.workloads)
        self.adapters.status.put(
            {
                "metadata": {"name": "speech", "namespace": "ml", "uid": "u1", "generation": 1},
                "spec": copy.deepcopy(SPEC),
            }
        )
        self.mono = [100.0]
        self.runtime = Runtime(
            settings=Settings(prometheus_url=""),
            adapters=self.adapters,
            clock=lambda: T0,
            monotonic=lambda: self.mono[0],
        )

    @property
    def fetches(self) -> int:
        return self.workloads.fetches

    @property
    def obj(self):
        return self.adapters.status.objects[("ml", "speech")]

    def body(self):
        return copy.deepcopy(self.obj)

    def settle(self):
        """Ticks (without the clock moving) until a tick writes nothing: waiting for pods."""
        for _ in range(10):
            rv = self.obj["metadata"]["resourceVersion"]
            self.runtime.tick(self.body())
            if self.obj["metadata"]["resourceVersion"] == rv:
                return
        raise AssertionError(f"never settled: {self.obj.get('status')}")

    def make_ready(self):
        for d in self.adapters.workloads.deployments.values():
            d.ready = d.replicas

    def index(self):
        return {"u1": [self.body()]}


@pytest.fixture
def cluster():
    c = Cluster()
    c.settle()
    assert c.obj["status"]["phase"] == "Initializing"
    rv = c.obj["metadata"]["resourceVersion"]
    assert not c.runtime.schedule.is_due("u1", rv, c.mono[0] + 1), "the precondition: not due for a while"
    return c


def test_a_readiness_change_of_the_rollouts_deployment_ticks_it_at_once(cluster):
    watch = WorkloadWatch()
    apply_workload_event(watch, cluster.runtime, None, deployment(ready=0), cluster.index())  # initial list
    fetches = cluster.fetches
    cluster.make_ready()
    woke = apply_workload_event(watch, cluster.runtime, "MODIFIED", deployment(ready=2), cluster.index())
    assert woke
    assert cluster.fetches == fetches + 1, "reconciled now, the monotonic clock never moved"
    assert cluster.obj["status"]["phase"] == "Healthy"
    assert cluster.obj["status"]["traffic"] == {"stable": {"version": "v1", "weight": 100}}


def test_without_the_watch_the_same_readiness_waits_for_the_requeue_time(cluster):
    # The counterpart of the test above: the timer alone does not look before the poll delay.
    fetches = cluster.fetches
    cluster.make_ready()
    cluster.runtime.tick(cluster.body())
    assert cluster.fetches == fetches and cluster.obj["status"]["phase"] == "Initializing"


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(deployment(ready=2, owner={**OWNER_REF, "uid": "u-other"}), id="another rollout's"),
        pytest.param(deployment(ready=2, owner=None), id="no owner"),
        pytest.param(deployment(ready=2, owner={**OWNER_REF, "kind": "ReplicaSet"}), id="owned by something else"),
        pytest.param(deployment(ready=2, owner={**OWNER_REF, "controller": False}), id="not the controller"),
        pytest.param(
            deployment(ready=2, owner={**OWNER_REF, "apiVersion": "other.dev/v1"}), id="same kind, other group"
        ),
    ],
)
def test_unrelated_deployments_tick_nothing(cluster, event):
    watch = WorkloadWatch()
    cluster.make_ready()
    fetches = cluster.fetches
    assert not apply_workload_event(watch, cluster.runtime, "MODIFIED", event, cluster.index())
    assert cluster.fetches == fetches
    rv = cluster.obj["metadata"]["resourceVersion"]
    assert not cluster.runtime.schedule.is_due("u1", rv, cluster.mono[0] + 1)


def test_events_that_change_nothing_the_domain_reads_tick_nothing(cluster):
    watch = WorkloadWatch()
    assert not apply_workload_event(watch, cluster.runtime, None, deployment(ready=0), cluster.index())
    fetches = cluster.fetches
    same = deployment(ready=0, annotations={"modelrollout.dev/applied-hash": "abc"})
    assert not apply_workload_event(watch, cluster.runtime, "MODIFIED", same, cluster.index())
    assert cluster.fetches == fetches
    # A generation bump the controller has not observed yet is a change (the rollout may wait on it).
    bumped = deployment(ready=0, generation=2)
    bumped["status"]["observedGeneration"] = 1
    assert apply_workload_event(watch, cluster.runtime, "MODIFIED", bumped, cluster.index())


def test_a_deleted_deployment_wakes_its_rollout_and_is_forgotten(cluster):
    watch = WorkloadWatch()
    apply_workload_event(watch, cluster.runtime, None, deployment(ready=0), cluster.index())
    assert apply_workload_event(watch, cluster.runtime, "DELETED", deployment(ready=0), cluster.index())
    # Seen again (re-created): a first sight outside the initial listing is a change.
    assert watch.compute_woken_rollout("ADDED", deployment(ready=0)) == "u1"


def test_a_rollout_missing_from_the_index_is_not_ticked(cluster):
    watch = WorkloadWatch()
    fetches = cluster.fetches
    assert not apply_workload_event(watch, cluster.runtime, "MODIFIED", deployment(ready=2), {})
    assert cluster.fetches == fetches


def test_a_wake_during_a_running_tick_keeps_the_next_tick_due(cluster):
    """The tick observed the workloads before the change: the wake must not be swallowed by it."""
    fetch = cluster.adapters.workloads.fetch_workloads

    def fetch_then_change(namespace, rollout):
        states = fetch(namespace, rollout)
        cluster.runtime.schedule.wake("u1")  # the watch fires while this tick is still running
        return states

    cluster.adapters.workloads.fetch_workloads = fetch_then_change
    cluster.runtime.schedule.wake("u1")
    cluster.runtime.tick(cluster.body())
    assert cluster.runtime.schedule.is_due("u1", cluster.obj["metadata"]["resourceVersion"], cluster.mono[0])
    cluster.adapters.workloads.fetch_workloads = fetch
    cluster.runtime.tick(cluster.body())  # consumes it
    assert not cluster.runtime.schedule.is_due("u1", cluster.obj["metadata"]["resourceVersion"], cluster.mono[0])


def test_the_readiness_key_covers_what_the_domain_reads():
    base = compute_readiness_key(deployment(ready=1))
    for path, value in [
        (("spec", "replicas"), 3),
        (("status", "readyReplicas"), 2),
        (("status", "updatedReplicas"), 1),
        (("status", "observedGeneration"), 0),
        (("metadata", "generation"), 2),
        (("status", "availableReplicas"), 0),
    ]:
        changed = deployment(ready=1)
        changed[path[0]][path[1]] = value
        assert compute_readiness_key(changed) != base, path


def test_the_handler_wiring_selects_model_server_deployments_and_ticks_through_the_index(cluster):
    registry = kopf.OperatorRegistry()
    register(registry, Settings(tick_interval=30), runtime=cluster.runtime)
    settings, memo = kopf.OperatorSettings(), kopf.Memo()
    (startup,) = [
        h for h in registry._activities.get_all_handlers() if h.activity is not None and h.activity.value == "startup"
    ]
    # kopf types each fn as its full keyword protocol; ours take `**_`, so the test passes only what they read.
    startup_fn: Callable[..., Any] = startup.fn
    startup_fn(settings=settings, memo=memo)
    assert list(settings.watching.label_selectors.values()) == [WATCH_LABEL_SELECTOR]
    assert WATCH_LABEL_SELECTOR == "modelrollout.dev/rollout,app.kubernetes.io/name=model-server"
    (index,) = registry._indexing.get_all_handlers()
    index_fn: Callable[..., Any] = index.fn
    assert index_fn(uid="u1", body=cluster.body()) == {"u1": cluster.body()}
    (changed,) = [h for h in registry._watching.get_all_handlers() if _name(h.fn) == "workload_changed"]
    assert changed.labels == {"modelrollout.dev/rollout": kopf.PRESENT, "app.kubernetes.io/name": "model-server"}
    changed_fn: Callable[..., Any] = changed.fn
    changed_fn(type=None, body=deployment(ready=0), memo=memo, rollouts_by_uid=cluster.index())
    cluster.make_ready()
    changed_fn(type="MODIFIED", body=deployment(ready=2), memo=memo, rollouts_by_uid=cluster.index())
    assert cluster.obj["status"]["phase"] == "Healthy"


def _name(fn: Callable[..., Any]) -> str:
    return fn.__name__
