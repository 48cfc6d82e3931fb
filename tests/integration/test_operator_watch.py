"""The Deployment watch against a real API server: a version's readiness is picked up at once,
not at the next timer tick.

The operator runs with a 300 s tick interval, so within this test its timer fires once per
rollout (kopf runs a timer when the object appears, then every interval). That first tick can
only create the Deployment, whose pods are not Ready yet; reaching Healthy needs another tick,
and the only other source of ticks is the watch.
"""

from __future__ import annotations

import re
import urllib.request

import pytest

from rollout_operator.adapters.kube import DEPLOYMENTS, MODEL_ROLLOUTS
from tests.support.operator_harness import OperatorProcess, apply, delete_rollouts, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

LONG_TICK = 300.0  # the settings' upper bound; far beyond this test's waits
TIMER_RUN = re.compile(r"Timer '[^']*tick' succeeded")


@pytest.fixture
def slow_timer_operator(tb, ns, prom, tmp_path):
    proc = OperatorProcess(tb, ns, prom.url, tmp_path, tick=LONG_TICK).start()
    yield proc
    delete_rollouts(tb, ns, operator_running=proc.proc is not None and proc.proc.poll() is None)
    proc.stop()


def fetch_reconciles(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith("modelrollout_reconcile_duration_seconds_count")]
    return float(line.rsplit(" ", 1)[1])


def count_timer_runs(op: OperatorProcess) -> int:
    return len(TIMER_RUN.findall(op.log_tail(lines=100_000)))


def test_readiness_is_picked_up_by_the_watch_not_the_timer(tb, api, ns, slow_timer_operator):
    op = slow_timer_operator
    apply(tb, rollout_manifest("watched", ns, "v1", metrics=False, steps=[{"setWeight": 10}, {"pause": {}}]))

    def healthy():
        status = (api.get(MODEL_ROLLOUTS, ns, "watched") or {}).get("status") or {}
        return status if status.get("phase") == "Healthy" else None

    status = wait_for(
        healthy, "Healthy on v1 (needs a tick after the pods are Ready)", timeout=120, describe=op.log_tail
    )
    assert status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert count_timer_runs(op) == 1, op.log_tail()
    assert fetch_reconciles(op.port) >= 2, "the tick that saw the pods Ready was not the timer's"
    # The watch only reads: kopf keeps no finalizer or annotation of its own on the Deployment.
    meta = api.get(DEPLOYMENTS, ns, "watched-v1")["metadata"]
    assert not meta.get("finalizers")
    assert not [k for k in meta.get("annotations") or {} if "kopf" in k], meta["annotations"]
