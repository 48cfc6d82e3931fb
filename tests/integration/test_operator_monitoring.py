"""spec.monitoring on the testbed: the API server's CEL rules refuse a relative monitoring gate and a
pairwise template naming the field; a Healthy rollout whose stable answers turn unknown (the stub
Prometheus's unknown-rate goes to 0.31) goes Degraded as the real operator process judges it -
`kubectl wait --for=condition=Degraded` returns, one warning event with the numbers, traffic
untouched, modelrollout_degraded 1 - and clears with a Recovered event when the answers recover; with
rollbackWithin, a v2 degraded right after its promotion is switched back to v1 (RolledBack, reason
DegradedAfterPromotion, the history entry, v1 kept at full size, v2 scaled to 0)."""

from __future__ import annotations

import urllib.request

import pytest

from rollout_operator.adapters.kube import EVENTS, MODEL_ROLLOUTS
from tests.support.operator_harness import (
    OperatorProcess,
    apply,
    assert_rejected_at_admission,
    delete_rollouts,
    kubectl,
    rollout_manifest,
)
from tests.support.stub_prometheus import StubPrometheus, vector
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

GATE = {"name": "unknown-rate", "template": "unknown-rate", "max": 0.2}


def _manifest(ns: str, metrics: list[dict]) -> dict:
    obj = rollout_manifest("speech", ns, "v1", metrics=False, steps=[{"setWeight": 50}])
    obj["spec"]["monitoring"] = {
        "interval": "1s",
        "window": "1m",
        "minSamples": 10,
        "failureLimit": 2,
        "metrics": metrics,
    }
    return obj


@pytest.mark.parametrize(
    "metric, needles",
    [
        (
            {**GATE, "relativeTo": "stable", "maxIncrease": 0.05},
            ["spec.monitoring.metrics[0].relativeTo", "monitoring judges the stable version alone"],
        ),
        (
            {"name": "agree", "template": "shadow-agreement", "min": 0.9},
            ["spec.monitoring.metrics[0].template", "monitoring has no candidate"],
        ),
    ],
)
def test_bad_monitoring_gates_are_rejected_at_admission_naming_the_field(tb, crd, ns, metric, needles):
    assert_rejected_at_admission(tb, _manifest(ns, [metric]), ns, needles)


class Stable:
    """The stub's unknown-rate answer for v1 (share of unknown/silence predictions), 412 samples."""

    def __init__(self) -> None:
        self.unknown = 0.05

    def answer(self, query: str):
        if "speech_predictions_total" not in query:
            return None
        return vector(412) if query.startswith("sum(increase(") else vector(self.unknown)


def _status(api, ns):
    return (api.get(MODEL_ROLLOUTS, ns, "speech") or {}).get("status") or {}


def _degraded(api, ns) -> dict:
    return next((c for c in _status(api, ns).get("conditions") or [] if c["type"] == "Degraded"), {})


def _events(api, ns, reason: str) -> list[dict]:
    items = api.request("GET", EVENTS.path(ns), query={"fieldSelector": "involvedObject.name=speech"})["items"]
    return [e for e in items if e["reason"] == reason]


def test_stable_answers_turning_unknown_set_degraded_and_recovery_clears_it(tb, api, crd, ns, tmp_path):
    stable = Stable()
    with StubPrometheus() as prom:
        prom.responder = stable.answer
        proc = OperatorProcess(tb, ns, prom.url, tmp_path).start()
        try:
            apply(tb, _manifest(ns, [GATE]))
            wait_for(
                lambda: _degraded(api, ns).get("status") == "False",
                "v1 Healthy and not Degraded",
                timeout=180,
                describe=proc.log_tail,
            )
            assert _degraded(api, ns)["reason"] == "GatesPass"
            stable.unknown = 0.31
            kubectl(tb, "wait", "-n", ns, "--for=condition=Degraded", "--timeout=60s", "modelrollout/speech")
            condition = _degraded(api, ns)
            status = _status(api, ns)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=10).read().decode()
            warned = wait_for(lambda: _events(api, ns, "Degraded"), "the Degraded event", timeout=30)
            stable.unknown = 0.02
            kubectl(tb, "wait", "-n", ns, "--for=condition=Degraded=false", "--timeout=60s", "modelrollout/speech")
            recovered = _degraded(api, ns)
            told = wait_for(lambda: _events(api, ns, "Recovered"), "the Recovered event", timeout=30)
            after = urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=10).read().decode()
        finally:
            delete_rollouts(tb, ns, operator_running=proc.proc is not None and proc.proc.poll() is None)
            proc.stop()
    assert condition["reason"] == "unknown-rate"
    assert condition["message"].startswith("unknown-rate 0.31 > max 0.2 (n=412) for "), condition["message"]
    assert condition["message"].endswith(" on stable v1")
    assert status["phase"] == "Healthy" and status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert status["monitoring"]["degraded"] is True and status["monitoring"]["version"] == "v1"
    assert f'modelrollout_degraded{{namespace="{ns}",rollout="speech"}} 1.0' in metrics
    assert len(warned) == 1 and warned[0]["type"] == "Warning"
    assert warned[0]["message"].startswith("unknown-rate 0.31 > max 0.2 (n=412) for 2 rounds on stable v1")
    assert (recovered["status"], recovered["reason"]) == ("False", "Recovered")
    assert "unknown-rate 0.02 within <= 0.2 (n=412) on stable v1" in recovered["message"]
    assert len(told) == 1 and told[0]["type"] == "Normal"
    assert f'modelrollout_degraded{{namespace="{ns}",rollout="speech"}} 0.0' in after
    assert any('version="v1"' in q and 'label=~"_unknown_|_silence_"' in q for q in prom.queries)


class ByVersion:
    """unknown-rate 0.05 for v1, 0.31 for v2 (v2 turns out degraded once it serves everyone)."""

    def answer(self, query: str):
        if "speech_predictions_total" not in query:
            return None
        if query.startswith("sum(increase("):
            return vector(412)
        return vector(0.31 if 'version="v2"' in query else 0.05)


def _replicas(tb, ns) -> list[str]:
    jsonpath = "jsonpath={range .items[*]}{.metadata.name}={.spec.replicas} {end}"
    return kubectl(tb, "get", "deployments", "-n", ns, "-o", jsonpath).stdout.split()


def _with_version(ns: str, version: str, within: str) -> dict:
    obj = _manifest(ns, [GATE])
    obj["spec"]["model"]["version"] = version
    obj["spec"]["monitoring"]["rollbackWithin"] = within
    return obj


def test_rollback_within_switches_a_degraded_new_stable_back_to_the_previous_version(tb, api, crd, ns, tmp_path):
    with StubPrometheus() as prom:
        prom.responder = ByVersion().answer
        proc = OperatorProcess(tb, ns, prom.url, tmp_path).start()
        try:
            apply(tb, _with_version(ns, "v1", "10m"))
            wait_for(
                lambda: _degraded(api, ns).get("status") == "False", "v1 Healthy", timeout=180, describe=proc.log_tail
            )
            apply(tb, _with_version(ns, "v2", "10m"))
            status = wait_for(
                lambda: _status(api, ns).get("phase") == "RolledBack" and _status(api, ns),
                "v2 promoted, degraded, rolled back",
                timeout=240,
                describe=proc.log_tail,
            )
            rolled = wait_for(lambda: _events(api, ns, "DegradedAfterPromotion"), "the rollback event", timeout=30)
            wait_for(lambda: "speech-v2=0" in _replicas(tb, ns), "v2 scaled to 0", timeout=60, describe=proc.log_tail)
            replicas = _replicas(tb, ns)
        finally:
            delete_rollouts(tb, ns, operator_running=proc.proc is not None and proc.proc.poll() is None)
            proc.stop()
    assert status["reason"] == "DegradedAfterPromotion"
    assert status["stableVersion"] == "v1" and status["candidateVersion"] == "v2"
    assert status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert status["message"].startswith("unknown-rate 0.31 > max 0.2 (n=412) for 2 rounds on stable v2 within 10m")
    assert status["message"].endswith("-> rolled back to v1")
    outcomes = [(h["version"], h["outcome"], h["reason"]) for h in status["history"]]
    assert outcomes[-2:] == [("v2", "Promoted", "Promoted"), ("v2", "RolledBack", "DegradedAfterPromotion")]
    assert len(rolled) == 1 and rolled[0]["type"] == "Warning"
    assert "speech-v1=1" in replicas, replicas
