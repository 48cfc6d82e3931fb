"""SIGKILL the operator at each step of a canary, restart it: same final state, exactly one promotion.

Status is the only memory, so a restarted process must resume where the killed one stood, never
move a canary's weight backwards, and never promote twice.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rollout_operator.adapters.kube import DEPLOYMENTS, EVENTS, MODEL_ROLLOUTS
from tests.support.operator_harness import OperatorProcess, apply, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "3s"}},
    {"setWeight": 50},
    {"analysis": {"checks": 2}},
]


class Sampler(threading.Thread):
    """Reads the rollout's status.traffic continuously (what the router would follow)."""

    def __init__(self, api, ns: str, name: str) -> None:
        super().__init__(daemon=True)
        self.api, self.ns, self.name = api, ns, name
        self.weights: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            obj = self.api.get(MODEL_ROLLOUTS, self.ns, self.name) or {}
            traffic = (obj.get("status") or {}).get("traffic") or {}
            stable = (traffic.get("stable") or {}).get("version")
            candidate = traffic.get("candidate") or {}
            if candidate.get("version") == "v2":
                self.weights.append(candidate["weight"])
            elif stable == "v2":
                self.weights.append(100)


def _status(api, ns, name):
    return (api.get(MODEL_ROLLOUTS, ns, name) or {}).get("status") or {}


@pytest.mark.parametrize("kill_at", ["step-0", "step-1", "step-2", "step-3", "Promoting"])
def test_sigkill_at_each_step_then_restart_promotes_exactly_once(tb, api, ns, operator: OperatorProcess, kill_at):
    name = "speech"
    apply(tb, rollout_manifest(name, ns, "v1", steps=STEPS))
    wait_for(
        lambda: _status(api, ns, name).get("phase") == "Healthy", "v1 Healthy", timeout=180, describe=operator.log_tail
    )
    sampler = Sampler(api, ns, name)
    sampler.start()
    apply(tb, rollout_manifest(name, ns, "v2", steps=STEPS))

    def reached() -> bool:
        s = _status(api, ns, name)
        if kill_at == "Promoting":
            return s.get("phase") == "Promoting"
        return (
            s.get("candidateVersion") == "v2"
            and s.get("currentStepIndex") == int(kill_at[-1])
            and s.get("phase") in ("Progressing", "Paused")
        )

    # Promoting lasts one tick; if it was missed, the kill lands right after the promotion write.
    wait_for(
        lambda: reached() or (kill_at == "Promoting" and _status(api, ns, name).get("stableVersion") == "v2"),
        f"the canary at {kill_at}",
        timeout=180,
        every=0.05,
        describe=operator.log_tail,
    )
    operator.kill()
    operator.start()
    wait_for(
        lambda: (
            _status(api, ns, name).get("phase") == "Healthy" and _status(api, ns, name).get("stableVersion") == "v2"
        ),
        "v2 promoted after the restart",
        timeout=180,
        describe=operator.log_tail,
    )
    sampler.stop.set()
    sampler.join()

    status = _status(api, ns, name)
    assert status["traffic"] == {"stable": {"version": "v2", "weight": 100}}
    promoted = [h for h in status["history"] if h["version"] == "v2" and h["outcome"] == "Promoted"]
    assert len(promoted) == 1, status["history"]
    events = api.request("GET", EVENTS.path(ns), query={"fieldSelector": f"involvedObject.name={name}"})["items"]
    assert [e["reason"] for e in events].count("Promoted") == 1
    assert sampler.weights == sorted(sampler.weights), f"weight went backwards: {sampler.weights}"
    assert set(sampler.weights) <= {0, 10, 50, 100} and sampler.weights[-1] == 100
    # The old stable is scaled down after its delay; never while traffic still routes to it.
    wait_for(
        lambda: api.get(DEPLOYMENTS, ns, f"{name}-v1")["spec"]["replicas"] == 0,
        "v1 scaled down",
        timeout=180,
        describe=operator.log_tail,
    )
