"""The demo's timeline helpers: gate thresholds read from status, decision points, the PNG."""

from __future__ import annotations

import pytest

from e2e.scenario import Snapshot, is_settled
from e2e.timeline import compute_decisions, compute_gate_series, compute_threshold, write_timeline_png

pytestmark = pytest.mark.unit


def _snap(t, phase, stable="v1", sw=100, cand=None, cw=0, metrics=(), cand_version=None):
    return Snapshot(
        t=t,
        generation=2,
        phase=phase,
        reason="",
        message="",
        step="",
        stable=stable,
        candidate_version=cand_version or cand,
        stable_weight=sw,
        candidate=cand,
        candidate_weight=cw,
        mirror=None,
        mirror_percent=0,
        metrics=tuple(metrics),
    )


@pytest.mark.parametrize(
    "metric, expected",
    [
        ({"threshold": "<= 0.02"}, 0.02),
        ({"threshold": ">= 0.9"}, 0.9),
        ({"threshold": "<= stable+0.2", "stableValue": 0.1}, pytest.approx(0.3)),
        ({"threshold": "<= stable+0.2"}, None),  # no stable reading yet
        ({"threshold": ""}, None),
    ],
)
def test_threshold_is_read_from_the_status_text(metric, expected):
    assert compute_threshold(metric) == expected


def test_decisions_are_phase_changes_into_an_outcome():
    snaps = [
        _snap(0, "Healthy"),
        _snap(5, "Progressing", cand="v2", sw=80, cw=20),
        _snap(9, "Progressing", cand="v2", sw=50, cw=50),
        _snap(12, "Healthy", stable="v2"),
        _snap(20, "Progressing", stable="v2", cand="v3", sw=80, cw=20),
        _snap(24, "RollingBack", stable="v2", cand_version="v3"),
        _snap(25, "RolledBack", stable="v2", cand_version="v3"),
    ]  # traffic no longer names v3
    assert compute_decisions(snaps) == [(0, "v1 promoted"), (12, "v2 promoted"), (25, "v3 rolled back")]


def test_png_is_written_with_a_panel_per_gate(tmp_path):
    gate = {"name": "error-rate", "value": 0.01, "threshold": "<= 0.02", "verdict": "Pass"}
    snaps = [
        _snap(0, "Healthy"),
        _snap(5, "Progressing", cand="v2", sw=80, cw=20, metrics=[gate]),
        _snap(8, "Healthy", stable="v2", metrics=[{**gate, "value": 0.0}]),
    ]
    assert compute_gate_series(snaps)["error-rate"]["value"] == [0.01, 0.0]
    path = write_timeline_png(snaps, tmp_path / "out" / "timeline.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settled_needs_the_new_generation_and_the_applied_version():
    def obj(phase, gen, stable, cand=None):
        return {
            "status": {"phase": phase, "observedGeneration": gen, "stableVersion": stable, "candidateVersion": cand}
        }

    settled = is_settled("v3", generation=3)
    assert not settled(obj("Healthy", 2, "v2"))  # old generation
    assert not settled(obj("Healthy", 3, "v2"))  # new generation seen, rollout not started
    assert not settled(obj("Progressing", 3, "v2", "v3"))
    assert settled(obj("RolledBack", 3, "v2", "v3"))
    assert settled(obj("Healthy", 3, "v3"))
    assert settled(obj("Invalid", 3, "v2"))
