"""The one step machine's step kinds, and the strategy presets that expand into them.

Canary, blue-green and shadow are presets over these steps; there is no second engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Union

from .durations import format_duration


@dataclass(frozen=True)
class SetWeight:
    """Send `weight` percent of user traffic to the candidate (the rest to stable)."""

    weight: int


@dataclass(frozen=True)
class SetMirror:
    """Copy `percent` of requests to the candidate; users only ever get stable's answers."""

    percent: int


@dataclass(frozen=True)
class Pause:
    """Hold the current traffic for `duration`; without one, wait for a person (promote/resume)."""

    duration: timedelta | None = None


@dataclass(frozen=True)
class Analysis:
    """Run the analysis metrics for `duration`, or until `checks` passing rounds (default one)."""

    duration: timedelta | None = None
    checks: int | None = None


@dataclass(frozen=True)
class Promote:
    """Switch all traffic to the candidate and make it the stable version."""


@dataclass(frozen=True)
class Stop:
    """Preset-only (shadow `then: stop`): take the candidate out of traffic and report, no promotion."""


Step = Union[SetWeight, SetMirror, Pause, Analysis, Promote, Stop]

# Steps a user may write in spec.strategy.canary.steps (Stop is reached only through presets).
USER_STEP_KINDS = ("setWeight", "setMirror", "pause", "analysis", "promote")


def describe_step(step: Step) -> str:
    """Short human form used in status.currentStep, events and the printer column."""
    if isinstance(step, SetWeight):
        return f"setWeight {step.weight}"
    if isinstance(step, SetMirror):
        return f"setMirror {step.percent}"
    if isinstance(step, Pause):
        return f"pause {format_duration(step.duration)}" if step.duration else "pause (wait for promote)"
    if isinstance(step, Analysis):
        if step.duration is not None:
            return f"analysis {format_duration(step.duration)}"
        return f"analysis {step.checks or 1} check(s)"
    if isinstance(step, Promote):
        return "promote"
    return "stop"


def expand_canary(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """A canary ends in promotion; the final promote is implied when the user leaves it out."""
    if steps and isinstance(steps[-1], Promote):
        return steps
    return (*steps, Promote())


def expand_blue_green(
    *,
    auto_promote: bool,
    preview_duration: timedelta | None,
    post_promotion_duration: timedelta | None,
) -> tuple[Step, ...]:
    """Preview under analysis, optional approval, atomic 0->100 switch, post-promotion bake."""
    steps: list[Step] = [Analysis(duration=preview_duration)]
    if not auto_promote:
        steps.append(Pause())
    steps.append(SetWeight(100))
    # The bake runs with stable still at full scale, so a failure switches straight back.
    steps.append(Analysis(duration=post_promotion_duration))
    steps.append(Promote())
    return tuple(steps)


def expand_shadow(
    *,
    mirror_percent: int,
    duration: timedelta,
    then: str,
    canary_steps: tuple[Step, ...] = (),
) -> tuple[Step, ...]:
    """Mirror under analysis (the agreement gate), then promote, continue as a canary, or stop."""
    steps: list[Step] = [SetMirror(mirror_percent), Analysis(duration=duration)]
    if then == "promote":
        steps.append(Promote())
    elif then == "canary":
        # Stop copying before real traffic starts so the candidate is judged on one stream.
        steps.append(SetMirror(0))
        steps.extend(expand_canary(canary_steps))
    else:
        steps.append(Stop())
    return tuple(steps)


def compute_step_traffic(steps: tuple[Step, ...], index: int) -> tuple[int, int]:
    """(candidate weight, mirror percent) in force while step `index` runs: the latest
    setWeight / setMirror at or before the cursor."""
    weight, mirror = 0, 0
    for step in steps[: index + 1]:
        if isinstance(step, SetWeight):
            weight = step.weight
        elif isinstance(step, SetMirror):
            mirror = step.percent
    return weight, mirror
