"""What one operator process spends per rollout when nothing is due (issue 17's 1,000-rollout run).

A timer per rollout fires every --tick-interval; at 1,000 rollouts most of those ticks are "not
yet", and they must cost a schedule lookup, not a copy of the body or any I/O.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from rollout_operator.adapters.factory import build_fake_adapters
from rollout_operator.runtime import Runtime
from rollout_operator.settings import Settings

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
