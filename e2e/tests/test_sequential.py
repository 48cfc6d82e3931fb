"""Sequential analysis on the testbed (issue 14): a low-traffic canary of a worse model stays
Inconclusive while the evidence is thin and then rolls back with the interval in the message;
a good candidate promotes as soon as its gates pass, before the step's longest wait.

The shipped models: v2 is the good one; v3 (a broken training run) answers mostly "_unknown_".
At 2 req/s with 20% on the candidate it gets a request every couple of seconds, so its first
rounds cannot tell yet.
"""

from __future__ import annotations

import copy
import re

import pytest

from e2e import rollouts, scenario
from e2e.load import LoadRunner
from e2e.tests.conftest import front_door
from e2e.tests.support import NAME, ROLLOUT_TIMEOUT, apply_and_wait, deploy_first, metric

pytestmark = pytest.mark.e2e

GATES = [
    {"name": "error-rate", "template": "error-rate", "max": 0.05},
    {"name": "unknown-rate", "template": "unknown-rate", "max": 0.5},
    {"name": "mean-confidence", "template": "mean-confidence", "min": 0.4},
]
STEP_LONGEST = "4m"


def compute_sequential(version: str, namespace: str) -> dict:
    manifest = rollouts.compute_rollout(
        NAME,
        version,
        {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"duration": STEP_LONGEST}}, {"promote": {}}]}},
        namespace=namespace,
        gates=GATES,
        progress_deadline="5m",
    )
    analysis = manifest["spec"]["analysis"]
    analysis.update(mode="sequential", falsePromotionRate=0.05, falseRollbackRate=0.05)
    for key in ("minSamples", "failureLimit", "inconclusiveLimit"):  # not used in this mode
        analysis.pop(key, None)
    return copy.deepcopy(manifest)


def test_thin_evidence_waits_then_a_worse_candidate_rolls_back_with_its_interval(cluster, api, namespace):
    deploy_first(cluster, api, namespace, version="v2")
    with (
        scenario.StatusRecorder(api, namespace, NAME) as rec,
        LoadRunner(front_door(api, namespace, NAME), rate=2) as _load,
    ):
        obj = apply_and_wait(cluster, api, compute_sequential("v3", namespace), ["RolledBack"], ROLLOUT_TIMEOUT)
    status = obj["status"]
    assert status["reason"] == "AnalysisFailed", status.get("message")
    # The interval is in the message: "<gate> <estimate> [<lower>, <upper>] > max ... (n=...)".
    assert re.search(r"\[[0-9.e-]+, [0-9.e-]+\] [<>] (max|min) [0-9.]+ \(n=\d+\)", status["message"]), status["message"]
    # Before it failed, rounds were Inconclusive: the evidence was thin, nothing was decided.
    rounds = [
        {m["name"]: m.get("verdict") for m in s.metrics}
        for s in rec.history()
        if s.candidate_version == "v3" and s.phase == "Progressing"
    ]
    thin = [r for r in rounds if "Inconclusive" in r.values() and "Fail" not in r.values()]
    assert thin, rounds
    failed = [m for m in status["analysis"]["metrics"] if m["verdict"] == "Fail"]
    assert failed and all(m["lower"] is not None and m["upper"] is not None for m in failed), failed
    assert status["stableVersion"] == "v2"


def test_a_good_candidate_promotes_on_evidence(cluster, api, namespace):
    deploy_first(cluster, api, namespace, version="v1")
    with LoadRunner(front_door(api, namespace, NAME), rate=10) as _load:
        obj = apply_and_wait(cluster, api, compute_sequential("v2", namespace), ["Healthy"], ROLLOUT_TIMEOUT)
    status = obj["status"]
    assert status["stableVersion"] == "v2", status.get("message")
    for name in ("error-rate", "unknown-rate", "mean-confidence"):
        gate = metric(status, name)
        assert gate["verdict"] == "Pass", gate
        assert gate["samplesNeeded"] == 0 and gate["lower"] <= gate["value"] <= gate["upper"], gate
    assert status["history"][-1]["outcome"] == "Promoted"
