"""Per-slice gates on the testbed (issue 15): the API server's CEL rules for `slices`, and a rollout
whose candidate is better on most slices but worse on one, judged from grouped answers of a stub
Prometheus by the operator process: rolled back with the slice named, every slice in the status
the real API server stored (its structural schema keeps them), and `kubectl modelrollout status`
showing them."""

from __future__ import annotations

import copy
import re

import pytest

from rollout_operator.adapters.kube import MODEL_ROLLOUTS
from rollout_operator.cli import compute_status_text
from tests.support.operator_harness import OperatorProcess, apply, assert_rejected_at_admission, rollout_manifest
from tests.support.stub_prometheus import StubPrometheus
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SLICES = ["clean", "young", "noisy"]
GATE = {
    "name": "accuracy",
    "template": "accuracy",
    "relativeTo": "stable",
    "maxDecrease": 0.05,
    "minSamples": 10,
    "slices": {"label": "slice", "values": SLICES},
}
VERSION = re.compile(r'version="([^"]+)"')


def _manifest(ns: str, version: str, metrics: list[dict]) -> dict:
    obj = rollout_manifest("speech", ns, version)
    obj["spec"]["analysis"]["metrics"] = metrics
    return obj


@pytest.mark.parametrize(
    "metric, needles",
    [
        (
            {"name": "p99", "template": "latency-p99", "max": 0.5, "slices": {}},
            ["spec.analysis.metrics[0].slices", "the template has no slice label on its series"],
        ),
        (
            {"name": "e", "template": "error-rate", "max": 0.5, "slices": {"label": "level_band"}},
            ["spec.analysis.metrics[0].slices.label", "support slices by slice only"],
        ),
        (
            {"name": "e", "template": "error-rate", "max": 0.5, "slices": {"values": ["young"], "max": 4}},
            ["spec.analysis.metrics[0].slices.max", "with values listed it is not used"],
        ),
        (
            {"name": "e", "template": "error-rate", "max": 0.5, "slices": {"values": ['young"|.*']}},
            ["spec.analysis.metrics[0].slices.values[0]", "should match"],
        ),
    ],
)
def test_bad_slices_are_rejected_at_admission_naming_the_field(tb, crd, ns, metric, needles):
    assert_rejected_at_admission(tb, _manifest(ns, "v1", [metric]), ns, needles)


def _feedback(query: str):
    """Per-slice accuracy: v1 (stable) at 0.9 everywhere; v2 0.95 on clean and noisy, 0.5 on young."""
    if "sum by (slice)" not in query:
        return None
    found = VERSION.search(query)
    version = found.group(1) if found else ""
    shares = {s: 0.9 for s in SLICES} if version != "v2" else {"clean": 0.95, "young": 0.5, "noisy": 0.95}
    samples = query.startswith("sum by (slice) (increase(")
    result = [
        {"metric": {"slice": s}, "value": [1700000000.0, str(400 if samples else share)]} for s, share in shares.items()
    ]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_worse_on_one_slice_rolls_back_naming_it_and_the_status_keeps_every_slice(tb, api, crd, ns, tmp_path):
    with StubPrometheus() as prom:
        prom.responder = _feedback
        proc = OperatorProcess(tb, ns, prom.url, tmp_path).start()
        try:
            apply(tb, _manifest(ns, "v1", [GATE]))
            wait_for(
                lambda: _status(api, ns).get("phase") == "Healthy", "v1 Healthy", timeout=180, describe=proc.log_tail
            )
            apply(tb, _manifest(ns, "v2", [GATE]))
            status = wait_for(
                lambda: _status(api, ns).get("phase") == "RolledBack" and _status(api, ns),
                "v2 rolled back",
                timeout=180,
                describe=proc.log_tail,
            )
        finally:
            proc.stop()
    assert status["reason"] == "AnalysisFailed"
    assert status["message"].startswith("accuracy[young] 0.5 < stable-0.05 = 0.85 (n=400)"), status["message"]
    (gate,) = status["analysis"]["metrics"]
    by_name = {s["name"]: s for s in gate["slices"]}
    assert set(by_name) == set(SLICES)
    assert by_name["young"] == {
        "name": "young",
        "verdict": "Fail",
        "value": 0.5,
        "stableValue": 0.9,
        "samples": 400,
        "stableSamples": 400,
        "message": "0.5 < stable-0.05 = 0.85 (n=400)",
    }
    assert by_name["clean"]["verdict"] == "Pass" and by_name["noisy"]["verdict"] == "Pass"
    assert any('slice=~"clean|young|noisy"' in q for q in prom.queries)
    text = compute_status_text(api.get(MODEL_ROLLOUTS, ns, "speech") or {}, [])
    assert re.search(r"\[young\]\s+0\.5\s+0\.9\s+400\s+Fail", text), text


def _status(api, ns, name="speech"):
    return copy.deepcopy((api.get(MODEL_ROLLOUTS, ns, name) or {}).get("status") or {})
