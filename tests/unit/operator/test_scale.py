"""What one operator process spends per rollout when nothing is due (issue 17's 1,000-rollout run).

A timer per rollout fires every --tick-interval; at 1,000 rollouts most of those ticks are "not
yet", and they must cost a schedule lookup, not a copy of the body or any I/O.
"""

import asyncio
import copy
import inspect
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import pytest

from rollout_operator.adapters.factory import build_fake_adapters
from rollout_operator.handlers import register
from rollout_operator.runtime import SUPERSEDED_GRACE_SECONDS, Runtime
from rollout_operator.settings import Settings
from tests.support.reconcile_world import CountingWorkloads, World

pytestmark = pytest.mark.unit


class Untouchable(Mapping[str, Any]):
    """A spec/status that fails the test when anything reads it."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError(f"a tick that is not due read [{key!r}]")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("a tick that is not due copied the body")

    def __len__(self) -> int:
        raise AssertionError("a tick that is not due measured the body")


def test_a_tick_that_is_not_due_reads_only_uid_and_resource_version():
    adapters = build_fake_adapters()
    rt = Runtime(settings=Settings(), adapters=adapters, monotonic=lambda: 100.0)
    rt.schedule.set("u1", "7", 160.0)  # decided at the last tick: nothing to do before 160
    body = {"metadata": {"name": "r", "namespace": "ns", "uid": "u1", "resourceVersion": "7"}}
    rt.tick({**body, "spec": Untouchable(), "status": Untouchable()})
    assert adapters.status.writes == 0 and adapters.events.events == []


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_api_client_keeps_a_connection_per_reconcile_thread(tmp_path, monkeypatch):
    from kubernetes import client

    from rollout_operator.runtime import build_runtime

    monkeypatch.setattr(client.Configuration, "_default", None)  # load_kube_config sets a global default
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    runtime = build_runtime(Settings(max_workers=37))
    # Fewer pooled connections than threads: every call past the pool's size is a new TLS handshake.
    pool = runtime.adapters.status._api._client.rest_client.pool_manager  # type: ignore[attr-defined]
    assert pool.connection_pool_kw["maxsize"] == 37


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_the_timer_answers_not_yet_in_the_event_loop_and_reconciles_on_the_executor():
    runtime = Runtime(settings=Settings(), adapters=build_fake_adapters(), monotonic=lambda: 100.0)
    registry = kopf.OperatorRegistry()
    register(registry, Settings(), runtime=runtime)
    (timer,) = registry._spawning.get_all_handlers()
    # A sync handler would cost a hop onto kopf's executor per rollout per tick interval.
    assert inspect.iscoroutinefunction(timer.fn)
    timer_fn: Callable[..., Any] = timer.fn
    executor = CountingExecutor()
    memo = kopf.Memo(runtime=runtime, executor=executor)
    meta = {"name": "r", "namespace": "ns", "uid": "u1", "resourceVersion": "7"}
    runtime.schedule.set("u1", "7", 160.0)
    asyncio.run(timer_fn(body={"metadata": meta, "spec": Untouchable()}, memo=memo))
    assert executor.submitted == 0
    runtime.schedule.set("u1", "7", 50.0)  # the requeue time has passed: reconcile, on a thread
    asyncio.run(timer_fn(body={"metadata": meta, "spec": {}}, memo=memo))
    assert executor.submitted == 1
    assert runtime.schedule.due["u1"] != ("7", 50.0)  # the tick ran and set the next due time
    executor.shutdown()


def test_a_wake_on_a_body_older_than_our_own_write_waits_for_the_fresh_body():
    workloads = CountingWorkloads()
    w = World(workloads=workloads)
    clock = [100.0]
    rt = Runtime(settings=w.settings, adapters=w.adapters, clock=lambda: w.now, monotonic=lambda: clock[0])
    before_write = copy.deepcopy(w.obj)
    rt.tick(before_write)
    assert w.adapters.status.writes == 1
    fetches = workloads.fetches
    # A Deployment event wakes the rollout on kopf's index body, which has not seen our write yet:
    # deciding on it again could only be refused (409) and cost a list and a patch.
    rt.wake(before_write)
    assert (workloads.fetches, w.adapters.status.conflicts) == (fetches, 0)
    rt.tick(copy.deepcopy(w.obj))  # the watch delivers the written body: the wake still stands
    assert workloads.fetches == fetches + 1 and w.adapters.status.conflicts == 0
    clock[0] += SUPERSEDED_GRACE_SECONDS  # a body that never catches up is decided on again, as before
    rt.wake(before_write)
    assert workloads.fetches == fetches + 2
