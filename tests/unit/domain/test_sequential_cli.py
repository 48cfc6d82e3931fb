"""`kubectl modelrollout status` for sequential gates: interval, samples and time still needed
(cli.compute_status_text; kept here with the other sequential tests)."""

import pytest

from rollout_operator.cli import compute_status_text, compute_wait_text

pytestmark = pytest.mark.unit


def rollout(*gates):
    return {
        "metadata": {"name": "speech", "namespace": "models"},
        "status": {"phase": "Progressing", "analysis": {"lastVerdict": "Inconclusive", "metrics": list(gates)}},
    }


UNDECIDED = {
    "name": "error-rate",
    "value": 0.031,
    "stableValue": 0.02,
    "threshold": "<= stable+0.02",
    "samples": 1200,
    "verdict": "Inconclusive",
    "lower": -0.004,
    "upper": 0.031,
    "stableSamples": 4800,
    "samplesNeeded": 2500,
    "secondsToVerdict": 820.0,
}
DECIDED = {
    "name": "agreement",
    "value": 0.99,
    "threshold": ">= 0.95",
    "samples": 1200,
    "verdict": "Pass",
    "lower": 0.97,
    "upper": 0.995,
    "samplesNeeded": 0,
    "secondsToVerdict": 0.0,
}


def test_status_shows_each_gates_interval_and_what_a_verdict_still_needs():
    text = compute_status_text(rollout(UNDECIDED, DECIDED), [])
    row = next(line for line in text.splitlines() if "[-0.004, 0.031]" in line)
    assert "4800" in row and "2500" in row and "~14m at the current request rate" in row
    done = next(line for line in text.splitlines() if "[0.97, 0.995]" in line)
    assert "decided" in done and done.rstrip().endswith("now")


def test_threshold_mode_status_has_no_evidence_table():
    plain = {"name": "error-rate", "value": 0.001, "threshold": "<= 0.01", "samples": 500, "verdict": "Pass"}
    assert "INTERVAL" not in compute_status_text(rollout(plain), [])


@pytest.mark.parametrize(
    "seconds, needed, text",
    [
        (0.0, 0, "now"),
        (45.0, 10, "~45s at the current request rate"),
        (900.0, 10, "~15m at the current request rate"),
        (36000.0, 10, "~10.0h at the current request rate"),
        (None, 10, "unknown"),
        (None, None, "unknown"),
    ],
)
def test_wait_text(seconds, needed, text):
    assert compute_wait_text(seconds, needed) == text
