"""What a user asks for: the parsed, validated ModelRollout spec as frozen dataclasses, the step
kinds of the one step machine and the strategy presets that expand into them (parse.py reads
the raw spec into these). Field names follow the CRD in snake_case; defaults match the CRD's.

Canary, blue-green and shadow are presets over the same steps; there is no second engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any, TypeAlias

from .durations import format_duration
from .notifications import NotificationRule


class SpecError(ValueError):
    """A spec the operator cannot act on; `field` is the JSON path, e.g. spec.analysis.interval."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class OnNoData(str, Enum):
    """What a check with no data (an empty query result) counts as."""

    HOLD = "hold"  # inconclusive: the step waits, counted against inconclusiveLimit
    FAIL = "fail"
    PASS = "pass"


class AnalysisMode(str, Enum):
    """How a gate turns measurements into a verdict (docs/analysis.md)."""

    THRESHOLD = "threshold"  # each round's value against the threshold; limits count rounds
    SEQUENTIAL = "sequential"  # anytime-valid bounds on counts since the step began


class ShadowThen(str, Enum):
    """What follows a successful shadow stage."""

    PROMOTE = "promote"
    CANARY = "canary"
    STOP = "stop"


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


Step: TypeAlias = SetWeight | SetMirror | Pause | Analysis | Promote | Stop

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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    uri: str = ""  # where the model server loads this version from; empty = server default


@dataclass(frozen=True)
class ServerSpec:
    # The image every version runs: parse_spec puts spec.server.image there, or the operator's
    # --model-server-image when that is empty (pod_policy.resolve_image); "" only in a hand-built spec.
    image: str = ""
    replicas: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)  # a core/v1 ResourceRequirements
    env: tuple[Mapping[str, Any], ...] = ()  # name + literal value (valueFrom only if the operator allows)
    args: tuple[str, ...] = ()  # extra --flag=value model-server arguments from the allow-list


@dataclass(frozen=True)
class CanaryStrategy:
    steps: tuple[Step, ...]
    kind: str = "canary"


@dataclass(frozen=True)
class BlueGreenStrategy:
    auto_promote: bool = True
    preview_duration: timedelta | None = None
    scale_down_delay: timedelta = timedelta(seconds=30)
    post_promotion_duration: timedelta | None = None
    preview_replicas: int | None = None  # None: preview at server.replicas
    kind: str = "blueGreen"


@dataclass(frozen=True)
class ShadowStrategy:
    mirror_percent: int = 100
    duration: timedelta = timedelta(minutes=5)
    then: ShadowThen = ShadowThen.STOP
    canary_steps: tuple[Step, ...] = ()
    kind: str = "shadow"


Strategy: TypeAlias = CanaryStrategy | BlueGreenStrategy | ShadowStrategy


# What a gate can be evaluated per slice of: the request's own slice (the x-slice header the
# model server allow-lists) or a band the server derived from the input it measured.
SLICE_LABELS = ("slice", "level_band", "duration_band")
# A slice name as the model server writes it (its allow-list rule; the bands fit it too).
SLICE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MAX_SLICES = 32  # the largest slices.max: bounds the series one query returns and the correction


@dataclass(frozen=True)
class SliceSpec:
    """Evaluate a gate per value of `label`: the listed `values`, or every slice with data (at
    most `max`). `count` is k, fixed before any data: the slices the false-alarm control splits over."""

    label: str = "slice"
    values: tuple[str, ...] = ()  # empty: every slice that has data
    max: int = 16

    @property
    def count(self) -> int:
        return len(self.values) or self.max


@dataclass(frozen=True)
class MetricSpec:
    name: str
    template: str | None = None  # a built-in template name (templates.TEMPLATES)
    query: str | None = None  # or a user PromQL with {{var}} placeholders
    min: float | None = None
    max: float | None = None
    relative_to: str | None = None  # only "stable"
    max_increase: float | None = None  # candidate - stable must be <= this
    max_decrease: float | None = None  # stable - candidate must be <= this
    min_samples: int | None = None  # None: analysis.minSamples
    bound: float | None = None  # slow-requests only: a latency bucket edge, seconds (templates.LATENCY_BOUNDS)
    slices: SliceSpec | None = None  # None: one value for the whole version (the scalar path)


@dataclass(frozen=True)
class AnalysisSpec:
    interval: timedelta = timedelta(seconds=30)
    window: timedelta = timedelta(minutes=1)
    prometheus_address: str | None = None  # None: the operator's --prometheus-address
    min_samples: int = 50
    on_no_data: OnNoData = OnNoData.HOLD
    failure_limit: int = 2
    inconclusive_limit: int = 10
    consecutive_error_limit: int = 4
    metrics: tuple[MetricSpec, ...] = ()
    mode: AnalysisMode = AnalysisMode.THRESHOLD
    # Sequential mode only: P(promote) when a gate is violated; P(roll back) when all hold.
    false_promotion_rate: float = 0.05
    false_rollback_rate: float = 0.05
    max_duration: timedelta = timedelta(minutes=30)  # an analysis step without its own duration

    @property
    def is_sequential(self) -> bool:
        return self.mode is AnalysisMode.SEQUENTIAL


@dataclass(frozen=True)
class MonitoringSpec:
    """spec.monitoring: gates on the stable version while no rollout is in flight (Healthy).
    A gate that fails `failure_limit` rounds in a row sets the Degraded condition; it clears when
    every breached gate passes again. Monitoring never changes traffic unless `rollback_within`
    is set (monitoring.py)."""

    interval: timedelta = timedelta(minutes=1)
    window: timedelta = timedelta(minutes=5)
    min_samples: int = 50
    on_no_data: OnNoData = OnNoData.HOLD
    failure_limit: int = 2  # failing rounds in a row (a pass resets the count)
    metrics: tuple[MetricSpec, ...] = ()
    # Opt-in: a breach this soon after a promotion switches back to the previous version, which
    # a promotion then keeps at full size for this long. None: monitoring never changes traffic.
    rollback_within: timedelta | None = None

    @property
    def analysis(self) -> AnalysisSpec:
        """The same settings in the shape the shared gate machinery (criteria, slices) reads."""
        return AnalysisSpec(
            interval=self.interval,
            window=self.window,
            min_samples=self.min_samples,
            on_no_data=self.on_no_data,
            failure_limit=self.failure_limit,
            metrics=self.metrics,
        )


@dataclass(frozen=True)
class RouterSpec:
    sticky_header: str | None = None
    replicas: int = 1
    image: str = ""  # resolved like ServerSpec.image, from the operator's --router-image
    network_policies: bool = True  # the operator's --network-policies: this router gets its policies


@dataclass(frozen=True)
class GatewayAPISpec:
    http_route: str
    port: int = 8080


@dataclass(frozen=True)
class TrafficRoutingSpec:
    router: RouterSpec | None = RouterSpec()
    gateway_api: GatewayAPISpec | None = None

    @property
    def provider(self) -> str:
        """ "router" or "gatewayAPI" - the key of the traffic provider factory."""
        return "gatewayAPI" if self.gateway_api is not None else "router"


@dataclass(frozen=True)
class Requests:
    """One-shot user intents as counters; each bump is acted on once (see status.handledRequests)."""

    promote: int = 0
    promote_full: int = 0
    abort: int = 0
    retry: int = 0
    by: str = ""


@dataclass(frozen=True)
class RolloutSpec:
    name: str
    namespace: str
    model: ModelSpec
    strategy: Strategy
    steps: tuple[Step, ...]  # the strategy expanded into the one step machine
    server: ServerSpec = ServerSpec()
    analysis: AnalysisSpec | None = None
    traffic_routing: TrafficRoutingSpec = TrafficRoutingSpec()
    progress_deadline: timedelta = timedelta(minutes=10)
    paused: bool = False
    requests: Requests = Requests()
    history_limit: int = 10
    # spec.notifications: which of the operator's receivers get which decisions (names only).
    notifications: tuple[NotificationRule, ...] = ()
    monitoring: MonitoringSpec | None = None  # spec.monitoring: gates on stable while Healthy

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        return self.analysis.metrics if self.analysis else ()
