"""The demo's timeline helpers: gate thresholds read from status, decision points, the PNG."""

from __future__ import annotations

import pytest

from e2e.scenario import Snapshot, is_settled
from e2e.timeline import (
    compute_decisions,
    compute_gate_series,
    compute_slice_series,
    compute_threshold,
    write_timeline_png,
)

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
        ({"threshold": ">= stable-0.1", "stableValue": 0.9}, pytest.approx(0.8)),  # maxDecrease
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


def _sliced(young: float | None, clean: float, stable_young: float = 0.9) -> dict:
    """A per-slice gate's status entry as the operator writes it (status.analysis.metrics[].slices)."""
    return {
        "name": "accuracy",
        "threshold": ">= stable-0.1",
        "value": young,
        "stableValue": stable_young,
        "verdict": "Fail",
        "slices": [
            {"name": "clean", "value": clean, "stableValue": 0.95, "samples": 80, "verdict": "Pass"},
            {"name": "young", "value": young, "stableValue": stable_young, "samples": 30, "verdict": "Fail"},
        ],
    }


def test_slice_series_has_each_slice_against_its_own_stable_baseline(tmp_path):
    snaps = [
        _snap(0, "Progressing", stable="v2", cand="v6", sw=80, cw=20, metrics=[_sliced(None, 0.97)]),
        _snap(5, "Progressing", stable="v2", cand="v6", sw=80, cw=20, metrics=[_sliced(0.6, 0.96)]),
        _snap(9, "RolledBack", stable="v2", cand_version="v6", metrics=[_sliced(0.55, 0.96, stable_young=0.92)]),
    ]
    series = compute_slice_series(snaps)
    assert set(series) == {"accuracy"} and set(series["accuracy"]) == {"clean", "young"}
    young = series["accuracy"]["young"]
    assert young["t"] == [5, 9] and young["value"] == [0.6, 0.55]  # no data at t=0 is no point
    assert young["threshold"] == [pytest.approx(0.8), pytest.approx(0.82)]  # stable's young minus 0.1
    assert series["accuracy"]["clean"]["threshold"] == [pytest.approx(0.85)] * 3
    assert compute_slice_series([_snap(0, "Healthy", metrics=[{"name": "error-rate", "value": 0.0}])]) == {}
    path = write_timeline_png(snaps, tmp_path / "sliced.png")
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
