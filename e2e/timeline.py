"""Draws a rollout timeline PNG from recorded status snapshots: traffic weights on top, one panel
per analysis gate (value against its threshold; a per-slice gate: one line per slice) below,
decision points marked on every panel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a build machine
import matplotlib.pyplot as plt  # noqa: E402

from e2e.scenario import Snapshot  # noqa: E402

# Outcomes marked on the timeline, and how each is labelled.
DECISION_LABELS = {"Healthy": "promoted", "RolledBack": "rolled back", "Stopped": "stopped", "Failed": "failed"}
_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


def compute_threshold(metric: dict[str, Any]) -> float | None:
    """The numeric bound of a gate from its status entry ("<= 0.02", ">= 0.9", "<= stable+0.2")."""
    text = metric.get("threshold") or ""
    numbers = [float(n) for n in _NUMBER.findall(text)]
    if not numbers:
        return None
    if "stable" in text:
        base = metric.get("stableValue")
        # "stable-0.1" reads as the signed number -0.1: the sign is the text's, the size the number's
        return None if base is None else base + (abs(numbers[0]) if "+" in text else -abs(numbers[0]))
    return numbers[0]


def compute_decisions(snapshots: Sequence[Snapshot]) -> list[tuple[float, str]]:
    """(time, label) where the phase changed into an outcome, e.g. 'v2 promoted', 'v3 rolled back'."""
    out, last = [], None
    for s in snapshots:
        if s.phase != last and s.phase in DECISION_LABELS:
            version = s.stable if s.phase == "Healthy" else (s.candidate_version or s.candidate)
            out.append((s.t, f"{version} {DECISION_LABELS[s.phase]}"))
        last = s.phase
    return out


def compute_gate_series(snapshots: Sequence[Snapshot]) -> dict[str, dict[str, list]]:
    """gate name -> {"t": [...], "value": [...], "threshold": [...]} over the snapshots."""
    series: dict[str, dict[str, list]] = {}
    for s in snapshots:
        for m in s.metrics:
            if m.get("value") is None:
                continue
            g = series.setdefault(m["name"], {"t": [], "value": [], "threshold": []})
            g["t"].append(s.t)
            g["value"].append(m["value"])
            g["threshold"].append(compute_threshold(m))
    return series


def compute_slice_series(snapshots: Sequence[Snapshot]) -> dict[str, dict[str, dict[str, list]]]:
    """per-slice gate name -> slice -> {"t", "value", "threshold"} from status.analysis.metrics[].slices."""
    series: dict[str, dict[str, dict[str, list]]] = {}
    for s in snapshots:
        for m in s.metrics:
            for sl in m.get("slices") or ():
                if sl.get("value") is None:
                    continue
                g = series.setdefault(m["name"], {}).setdefault(sl["name"], {"t": [], "value": [], "threshold": []})
                g["t"].append(s.t)
                g["value"].append(sl["value"])
                # the gate's threshold against this slice's own stable baseline
                g["threshold"].append(
                    compute_threshold({"threshold": m.get("threshold"), "stableValue": sl.get("stableValue")})
                )
    return series


def _draw_gate(ax, name: str, g: dict[str, list], colour: Any = None, label: str = "") -> None:
    ax.plot(g["t"], g["value"], marker=".", color=colour, label=label or f"{name} value")
    if any(v is not None for v in g["threshold"]):
        ax.step(
            g["t"],
            [v if v is not None else float("nan") for v in g["threshold"]],
            where="post",
            linestyle="--",
            color=colour or "tab:red",
            linewidth=1,
            label=None if label else "threshold",
        )


def _step_series(snapshots: Sequence[Snapshot], attr: str) -> tuple[list[float], list[float]]:
    return [s.t for s in snapshots], [getattr(s, attr) for s in snapshots]


def _draw_weights(ax, snapshots: Sequence[Snapshot]) -> None:
    for attr, label in (
        ("stable_weight", "stable weight %"),
        ("candidate_weight", "candidate weight %"),
        ("mirror_percent", "mirror %"),
    ):
        t, y = _step_series(snapshots, attr)
        if any(y):
            ax.step(t, y, where="post", label=label, linewidth=2)
    ax.set_ylim(-5, 105)
    ax.set_ylabel("traffic %")
    ax.legend(loc="center left", fontsize=8)
    ax.set_title("ModelRollout timeline (demo intervals shortened)")


def _mark_decisions(axes, decisions: list[tuple[float, str]]) -> None:
    for t, label in decisions:
        colour = "tab:green" if label.endswith("promoted") else "tab:red"
        for ax in axes:
            ax.axvline(t, color=colour, linestyle=":", linewidth=1)
        axes[0].annotate(
            label,
            (t, 97),
            xytext=(2, 0),
            textcoords="offset points",
            fontsize=7,
            rotation=90,
            va="top",
            ha="left",
            color=colour,
        )


def write_timeline_png(snapshots: Sequence[Snapshot], path: Path) -> Path:
    """Renders the timeline to `path` (parent directories created) and returns it."""
    gates, sliced = compute_gate_series(snapshots), compute_slice_series(snapshots)
    names = sorted(set(gates) | set(sliced))
    fig, grid = plt.subplots(1 + len(names), 1, figsize=(11, 2.6 + 1.8 * len(names)), sharex=True, squeeze=False)
    axes = [a[0] for a in grid]
    _draw_weights(axes[0], snapshots)
    for ax, name in zip(axes[1:], names, strict=True):
        if name in sliced:  # one line per slice, its threshold dashed in the same colour
            colours = plt.get_cmap("tab10")
            for i, (slice_name, g) in enumerate(sorted(sliced[name].items())):
                _draw_gate(ax, name, g, colours(i % 10), label=f"{name}[{slice_name}]")
        else:
            _draw_gate(ax, name, gates[name])
        ax.set_ylabel(name, fontsize=8)
        ax.legend(loc="upper left", fontsize=7, ncol=2 if name in sliced else 1)
    _mark_decisions(axes, compute_decisions(snapshots))
    axes[-1].set_xlabel("seconds since the demo's first rollout")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
