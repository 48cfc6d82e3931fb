"""Simulation benchmark: how often each analysis mode promotes a worse candidate or rolls back a
healthy one, and how long a verdict takes, on synthetic streams with known truth.

Pure domain, no cluster: every rollout goes through the real parse_spec / plan_queries / decide,
in threshold mode (two step configurations) and in sequential mode on the same per-second
request streams.
Run: `python -m benchmarks.bench_sequential [--rollouts-per-cell 60]`. Writes
benchmarks/results/sequential.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from rollout_operator.domain import (
    DeleteVersion,
    EnsureVersion,
    Measurement,
    Observations,
    Phase,
    Role,
    RolloutStatus,
    ScaleDownVersion,
    WorkloadState,
    compute_metric_observations,
    decide,
    parse_spec,
    plan_queries,
)

RESULTS = Path(__file__).resolve().parent / "results" / "sequential.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STABLE_RATE = 0.03  # stable's error rate
MARGIN = 0.02  # maxIncrease: candidate - stable must stay within this
WEIGHT = 20  # canary weight during the analysis step
STEP = timedelta(minutes=20)  # analysis step: threshold mode's duration, sequential mode's maximum
INTERVAL = timedelta(seconds=30)  # 40 looks in the step
DECLARED = 0.05  # falsePromotionRate and falseRollbackRate
TRUTHS = {  # candidate's error rate
    "better": 0.02,
    "equal": 0.03,
    "slightly-worse": 0.04,  # inside the margin: a promotion is allowed
    "worse-by-margin": 0.05,  # exactly on the margin: the hardest case for a false promotion
    "clearly-worse": 0.07,
}
BAD = ("worse-by-margin", "clearly-worse")  # worse by at least the margin
TRAFFIC = (0.5, 2.0, 10.0, 50.0, 200.0)  # requests per second, both versions together
HORIZON = int((STEP + timedelta(minutes=4)).total_seconds())  # seconds of stream per rollout


# The configurations compared: the analysis mode and the analysis step. "threshold" checks for
# the whole step (promote when it is over and the latest round passed, roll back at failureLimit
# failing rounds); "threshold-first-pass" is `analysis: {}` (the blue-green/shadow default: go on
# at the first passing round); "sequential" ends the step on the verdict, at most STEP.
CONFIGS = {
    "threshold": ("threshold", {"duration": f"{int(STEP.total_seconds())}s"}),
    "threshold-first-pass": ("threshold", {}),
    "sequential": ("sequential", {"duration": f"{int(STEP.total_seconds())}s"}),
}


def compute_spec(config: str, version: str) -> dict:
    mode, step = CONFIGS[config]
    return {
        "model": {"name": "speech-commands", "version": version},
        "strategy": {"canary": {"steps": [{"setWeight": WEIGHT}, {"analysis": step}]}},
        "analysis": {
            "mode": mode,
            "interval": f"{int(INTERVAL.total_seconds())}s",
            "window": "1m",
            "falsePromotionRate": DECLARED,
            "falseRollbackRate": DECLARED,
            "metrics": [
                {"name": "error-rate", "template": "error-rate", "relativeTo": "stable", "maxIncrease": MARGIN}
            ],
        },
        "progressDeadline": "10m",
    }


@dataclass
class Stream:
    """Per-second cumulative requests and errors of each version from t=0 (the canary start)."""

    trials: dict[Role, np.ndarray]
    events: dict[Role, np.ndarray]

    @classmethod
    def draw(cls, rng: np.random.Generator, rps: float, candidate_rate: float) -> Stream:
        trials, events = {}, {}
        for role, share, p in (
            (Role.CANDIDATE, WEIGHT / 100, candidate_rate),
            (Role.STABLE, 1 - WEIGHT / 100, STABLE_RATE),
        ):
            n = rng.poisson(rps * share, size=HORIZON)
            trials[role] = np.concatenate([[0], np.cumsum(n)])
            events[role] = np.concatenate([[0], np.cumsum(rng.binomial(n, p))])
        return cls(trials, events)

    def between(self, role: Role, start: float, end: float) -> tuple[float, float]:
        lo, hi = int(max(0, min(start, HORIZON))), int(max(0, min(end, HORIZON)))
        return (
            float(self.events[role][hi] - self.events[role][lo]),
            float(self.trials[role][hi] - self.trials[role][lo]),
        )


def measure(
    mode: str, stream: Stream, role: Role, status: RolloutStatus, now: datetime, canary_start: datetime
) -> Measurement:
    """What Prometheus would answer: a window's rate (threshold) or counts since the step (sequential)."""
    t = (now - canary_start).total_seconds()
    if status.step_started_at is None:
        return Measurement.no_data()  # the admission forecast's stable counts: no history before t=0
    if CONFIGS[mode][0] == "sequential":
        start = (status.step_started_at - canary_start).total_seconds()
        events, trials = stream.between(role, start, t)
        return Measurement.of(events, samples=int(trials))
    events, trials = stream.between(role, t - 60, t)
    return Measurement.of(events / trials if trials else float("nan"), samples=int(trials))


def establish_stable(mode: str) -> tuple[RolloutStatus, dict[str, WorkloadState], datetime]:
    spec = parse_spec(compute_spec(mode, "v1"), name="speech", namespace="models")
    status, now = RolloutStatus(), T0
    workloads: dict[str, WorkloadState] = {}
    for _ in range(50):
        d = decide(spec, status, Observations(dict(workloads), {}, 1), now)
        apply_actions(d.actions, workloads)
        status, now = d.status, now + max(d.requeue_after, timedelta(seconds=1))
        if status.phase is Phase.HEALTHY:
            return status, workloads, now
    raise RuntimeError(f"first version never became Healthy: {status.phase} {status.message}")


def apply_actions(actions, workloads: dict[str, WorkloadState]) -> None:
    for a in actions:
        if isinstance(a, EnsureVersion):
            workloads[a.version] = WorkloadState(True, a.replicas, a.replicas, True)
        elif isinstance(a, ScaleDownVersion):
            workloads[a.version] = WorkloadState(True, 0, 0, True)
        elif isinstance(a, DeleteVersion):
            workloads.pop(a.version, None)


def run_rollout(mode: str, start: tuple[RolloutStatus, dict[str, WorkloadState], datetime], stream: Stream) -> dict:
    spec = parse_spec(compute_spec(mode, "v2"), name="speech", namespace="models")
    status, workloads, now = start[0], dict(start[1]), start[2]
    canary_start: datetime | None = None
    analysis_start: datetime | None = None
    for _ in range(5000):
        if canary_start is None and status.traffic.candidate_weight > 0:
            canary_start = now
        if analysis_start is None and status.current_step_index == 1 and status.step_started_at:
            analysis_start = status.step_started_at
        planned = plan_queries(spec, status, now)
        results = [(q, measure(mode, stream, q.role, status, now, canary_start or now)) for q in planned]
        obs = Observations(dict(workloads), compute_metric_observations(results), 2)
        d = decide(spec, status, obs, now)
        apply_actions(d.actions, workloads)
        status = d.status
        if status.phase in (Phase.PROMOTING, Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            break  # the verdict: this canary promotes straight after its analysis step
        now += max(d.requeue_after, timedelta(seconds=1))
    promoted = status.phase is Phase.PROMOTING
    t = (now - (canary_start or now)).total_seconds()
    _, trials = stream.between(Role.CANDIDATE, 0, t)
    return {
        "promoted": promoted,
        "reason": "Promoted" if promoted else status.reason,
        "seconds": (now - (analysis_start or canary_start or now)).total_seconds(),
        "samples": trials,
    }


def summarize(runs: list[dict]) -> dict:
    n = len(runs)
    decided = [r for r in runs if r["reason"] in ("Promoted", "AnalysisFailed")]
    return {
        "rollouts": n,
        "promoted": sum(r["promoted"] for r in runs) / n,
        # Rolled back because a gate failed; running out of time undecided is counted apart.
        "failed": sum(r["reason"] == "AnalysisFailed" for r in runs) / n,
        "no_verdict": sum(r["reason"] == "InconclusiveAnalysis" for r in runs) / n,
        "median_seconds_to_verdict": _median([r["seconds"] for r in decided]),
        "median_samples_to_verdict": _median([r["samples"] for r in decided]),
        "reasons": {k: sum(r["reason"] == k for r in runs) for k in sorted({r["reason"] for r in runs})},
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rollouts-per-cell",
        type=int,
        default=60,
        help="rollouts per (truth, traffic) cell and mode (default 60: 3000 in all)",
    )
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    starts = {mode: establish_stable(mode) for mode in CONFIGS}
    cells: dict[str, dict] = {}
    runs: dict[str, list[dict]] = {mode: [] for mode in CONFIGS}
    for truth, rate in TRUTHS.items():
        for rps in TRAFFIC:
            rng = np.random.default_rng([args.seed, int(rate * 1000), int(rps * 10)])
            streams = [Stream.draw(rng, rps, rate) for _ in range(args.rollouts_per_cell)]
            cell = {}
            for mode in CONFIGS:
                done = [{**run_rollout(mode, starts[mode], s), "truth": truth} for s in streams]
                runs[mode].extend(done)
                cell[mode] = summarize(done)
            cells[f"{truth}@{rps:g}rps"] = {"truth": truth, "candidate_rate": rate, "rps": rps, **cell}
    totals = {mode: compute_totals(mode_runs) for mode, mode_runs in runs.items()}
    wall = round(time.perf_counter() - started, 1)
    result = {
        "setup": {
            "stable_rate": STABLE_RATE,
            "margin": MARGIN,
            "weight": WEIGHT,
            "step_seconds": STEP.total_seconds(),
            "interval_seconds": INTERVAL.total_seconds(),
            "looks": int(STEP / INTERVAL),
            "declared_rates": DECLARED,
            "truths": TRUTHS,
            "traffic_rps": list(TRAFFIC),
            "rollouts_per_cell": args.rollouts_per_cell,
            "seed": args.seed,
        },
        "totals": totals,
        "cells": cells,
        "wall_seconds": wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary_line(totals, sum(len(r) for r in runs.values()), wall))
    return 0


def compute_totals(runs: list[dict]) -> dict:
    """Pooled over traffic levels: error rates by truth, and time/samples over decided rollouts."""

    def share(truths: tuple[str, ...], reason: str) -> float:
        chosen = [r for r in runs if r["truth"] in truths]
        return round(sum(r["reason"] == reason for r in chosen) / len(chosen), 4)

    decided = [r for r in runs if r["reason"] in ("Promoted", "AnalysisFailed")]
    return {
        "false_promotion": share(BAD, "Promoted"),  # worse by at least the margin, promoted
        "false_promotion_at_margin": share(("worse-by-margin",), "Promoted"),
        "false_promotion_clearly_worse": share(("clearly-worse",), "Promoted"),
        "false_rollback_equal": share(("equal",), "AnalysisFailed"),  # a gate failed a healthy candidate
        "false_rollback_better": share(("better",), "AnalysisFailed"),
        "false_rollback_slightly_worse": share(("slightly-worse",), "AnalysisFailed"),  # inside the margin
        "no_verdict_equal": share(("equal",), "InconclusiveAnalysis"),
        "promoted_equal": share(("equal",), "Promoted"),
        "rolled_back_clearly_worse": share(("clearly-worse",), "AnalysisFailed"),
        "median_seconds_to_verdict": _median([r["seconds"] for r in decided]),
        "median_samples_to_verdict": _median([r["samples"] for r in decided]),
        "decided": round(len(decided) / len(runs), 4),
    }


def summary_line(totals: dict, rollouts: int, wall: float) -> str:
    s, t, f = totals["sequential"], totals["threshold"], totals["threshold-first-pass"]
    return (
        f"{rollouts} rollouts: false promotion (worse by >= margin) sequential {s['false_promotion']:.3f} "
        f"(declared {DECLARED}) vs threshold {t['false_promotion']:.3f} / first-pass "
        f"{f['false_promotion']:.3f}; false rollback when equal {s['false_rollback_equal']:.3f} vs "
        f"{t['false_rollback_equal']:.3f} / {f['false_rollback_equal']:.3f}; equal promoted "
        f"{s['promoted_equal']:.2f} vs {t['promoted_equal']:.2f} / {f['promoted_equal']:.2f}; median to a "
        f"verdict {s['median_samples_to_verdict']:.0f} samples / {s['median_seconds_to_verdict']:.0f}s vs "
        f"{t['median_samples_to_verdict']:.0f} / {t['median_seconds_to_verdict']:.0f}s; {wall:.0f}s wall"
    )


if __name__ == "__main__":
    sys.exit(main())
