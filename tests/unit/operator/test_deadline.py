"""The total deadline on Kubernetes API calls (adapters/deadline.py), against real loopback servers
that trickle their answers: every read sees progress, so only a total deadline ends the call."""

import copy
from dataclasses import replace

import pytest

from rollout_operator import metrics as m
from rollout_operator.adapters.deadline import Deadline
from rollout_operator.adapters.kube import DEPLOYMENTS, KubeApi, KubeTransportError
from rollout_operator.adapters.kube_workloads import KubeWorkloads
from rollout_operator.runtime import Runtime
from tests.support.reconcile_world import World
from tests.support.stub_kube import StubKube
from tests.support.stub_prometheus import TricklingPrometheus

pytestmark = pytest.mark.unit

# A valid list answer padded so that trickling it (one byte per 50 ms) takes ~15 s.
SLOW_LIST = (200, {"kind": "DeploymentList", "items": [], "padding": "x" * 300})


def _api(server, timeout=0.5):
    from kubernetes import client

    config = client.Configuration()
    config.host = server.url
    return KubeApi(client.ApiClient(config), timeout=timeout)


def test_a_trickling_body_ends_in_a_deadline_error_naming_the_bound():
    with TricklingPrometheus(SLOW_LIST) as slow:
        with pytest.raises(KubeTransportError) as err:
            _api(slow).list(DEPLOYMENTS, "ml", "modelrollout.dev/rollout=speech")
    assert err.value.deadline and err.value.status == 0
    assert "no complete answer within 0.5s (total deadline)" in str(err.value)
    assert str(err.value).startswith("GET /apis/apps/v1/namespaces/ml/deployments: ")


def test_a_header_that_never_ends_ends_in_a_deadline_error():
    with TricklingPrometheus(endless_header=True) as slow:
        with pytest.raises(KubeTransportError) as err:
            _api(slow).get(DEPLOYMENTS, "ml", "speech-v1")
    assert err.value.deadline


def test_a_refused_connection_is_a_transport_error_not_a_crash():
    with StubKube() as kube:
        url = kube.url
    from kubernetes import client

    config = client.Configuration()
    config.host = url  # nothing listens there any more
    config.retries = 0
    with pytest.raises(KubeTransportError) as err:
        KubeApi(client.ApiClient(config), timeout=5).get(DEPLOYMENTS, "ml", "speech-v1")
    assert not err.value.deadline


def test_calls_within_the_deadline_answer_as_before():
    with StubKube() as kube:
        api = _api(kube, timeout=5)
        assert api.get(DEPLOYMENTS, "ml", "absent") is None
        assert api.list(DEPLOYMENTS, "ml", "a=b") == []


def test_a_trickling_api_server_fails_the_tick_as_an_api_error_and_writes_nothing():
    """What happens when the deadline fires: the reconcile fails as a transport error before
    anything is decided, the status is not written, an event says why, the tick is retried."""
    with TricklingPrometheus(SLOW_LIST) as slow:
        w = World()
        w.live = replace(w.live, workloads=KubeWorkloads(_api(slow, timeout=0.3)))
        clock = [0.0]
        rt = Runtime(settings=w.settings, adapters=w.live, clock=lambda: w.now, monotonic=lambda: clock[0])
        before = m.RECONCILE_ERRORS.labels("api")._value.get()
        rt.tick(copy.deepcopy(w.obj))  # must not raise
    assert m.RECONCILE_ERRORS.labels("api")._value.get() == before + 1
    assert "status" not in w.obj
    [(kind, reason, message)] = w.adapters.events.events
    assert (kind, reason) == ("Warning", "ReconcileError")
    assert "no complete answer within 0.3s (total deadline); retrying every 5s" in message
    assert rt.schedule.is_due("u1", w.obj["metadata"]["resourceVersion"], clock[0] + 5)


def test_a_call_that_ends_forgets_its_sockets():
    """A pooled socket outlives its call: an ended call's watchdog must hold none of them."""
    from rollout_operator.adapters import deadline

    with TricklingPrometheus((200, {"items": []}), delay=0.0) as fast:
        api = _api(fast, timeout=5)
        for _ in range(3):
            assert api.list(DEPLOYMENTS, "ml", "a=b") == []
    assert deadline._owners == {}


def test_the_deadline_message_names_the_budget_not_the_rounding_left_by_a_shared_round():
    # A check round shares one deadline between its queries (reconcile.fetch_round), so each
    # query gets what is left of it, e.g. 0.999997 s of a 1 s budget: the message says 1s.
    assert "no complete answer within 1s (total deadline)" in str(Deadline(0.999997).error())
    assert "no complete answer within 0.25s (total deadline)" in str(Deadline(0.25).error())
