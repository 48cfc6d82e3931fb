"""The pure core of the ModelRollout operator: spec/status types, the step machine, analysis.

No I/O, no clock reads, no kopf/kubernetes (import-linter enforces it); the shell calls in here.
Modules by concept, in reading order:

1. spec         what a user asks for: the spec types, the step kinds, the strategy presets
2. parse        the raw .spec -> RolloutSpec, or a SpecError naming the field; its helpers:
   names        the objects a rollout owns and the rules that keep their names valid
   pod_policy   images (the one place defaults live) and what a spec may put into pods
   templates    built-in PromQL templates, strict rendering, the PromQL check
   durations    durations and RFC 3339 timestamps as the spec and status write them
3. phases       where a rollout stands, and the transitions allowed between phases
4. status       the only memory: types, the exact JSON of .status, conditions
5. analysis     one measurement against one metric's criteria -> a verdict
6. observations what the shell saw this tick: workloads, measurements, due queries
7. decision     decide()'s contract: the Tick every handler takes and returns, actions, Decision
8. decide       the entry point: a handler per phase, the finished status, standing actions, requeue
9. lifecycle    the phases around a rollout: first version, start, promotion, rollback, after
10. steps       the step machine of a running rollout: requests, cursor, traffic per step
11. gates       the analysis of a running rollout: due queries, check rounds, limits
12. sequential  anytime-valid confidence sequences: the statistics of sequential gates
13. sequential_gates  a gate in sequential mode: its count queries, verdict and rates
14. slices      a gate per slice: grouped queries, per-slice verdicts, the false-alarm correction
15. monitoring  spec.monitoring: gates on the stable version while Healthy, the Degraded condition
"""

from .analysis import Criteria, Evaluation, Measurement, MeasurementKind, Verdict, evaluate, worst
from .decide import decide, decide_invalid
from .decision import (
    Action,
    Decision,
    DeleteVersion,
    EmitEvent,
    EnsurePreviewService,
    EnsureRouter,
    EnsureVersion,
    RemoveNetworkPolicies,
    RemovePreviewService,
    ScaleDownVersion,
    SetTraffic,
    Tick,
)
from .durations import format_duration, parse_duration
from .gates import is_check_due, plan_queries
from .observations import (
    MetricObservation,
    Observations,
    QueryRequest,
    Role,
    WorkloadState,
    compute_metric_observations,
)
from .parse import parse_spec
from .phases import TRANSITIONS, Phase, is_allowed_transition, is_rollout_in_flight
from .pod_policy import PodPolicy
from .spec import (
    Analysis,
    AnalysisSpec,
    BlueGreenStrategy,
    CanaryStrategy,
    GatewayAPISpec,
    MetricSpec,
    ModelSpec,
    MonitoringSpec,
    OnNoData,
    Pause,
    Promote,
    Requests,
    RolloutSpec,
    RouterSpec,
    ServerSpec,
    SetMirror,
    SetWeight,
    ShadowStrategy,
    ShadowThen,
    SliceSpec,
    SpecError,
    Step,
    Stop,
    TrafficRoutingSpec,
    describe_step,
)
from .status import (
    AnalysisStatus,
    Condition,
    HandledRequests,
    HistoryEntry,
    MetricStatus,
    MirrorTarget,
    MonitoringStatus,
    RolloutStatus,
    SliceStatus,
    TrafficSplit,
    VersionWeight,
    status_from_dict,
    status_to_dict,
)
from .templates import TEMPLATES, TemplateError, render

__all__ = [
    "Action",
    "Analysis",
    "AnalysisSpec",
    "AnalysisStatus",
    "BlueGreenStrategy",
    "CanaryStrategy",
    "Condition",
    "Criteria",
    "Decision",
    "DeleteVersion",
    "EmitEvent",
    "EnsurePreviewService",
    "EnsureRouter",
    "EnsureVersion",
    "Evaluation",
    "GatewayAPISpec",
    "HandledRequests",
    "HistoryEntry",
    "Measurement",
    "MeasurementKind",
    "MetricObservation",
    "MetricSpec",
    "MetricStatus",
    "MirrorTarget",
    "ModelSpec",
    "MonitoringSpec",
    "MonitoringStatus",
    "Observations",
    "OnNoData",
    "Pause",
    "Phase",
    "PodPolicy",
    "Promote",
    "QueryRequest",
    "RemoveNetworkPolicies",
    "RemovePreviewService",
    "Requests",
    "Role",
    "RolloutSpec",
    "RolloutStatus",
    "RouterSpec",
    "ScaleDownVersion",
    "ServerSpec",
    "SetMirror",
    "SetTraffic",
    "SetWeight",
    "ShadowStrategy",
    "ShadowThen",
    "SliceSpec",
    "SliceStatus",
    "SpecError",
    "Step",
    "Stop",
    "TEMPLATES",
    "TRANSITIONS",
    "TemplateError",
    "Tick",
    "TrafficRoutingSpec",
    "TrafficSplit",
    "Verdict",
    "VersionWeight",
    "WorkloadState",
    "compute_metric_observations",
    "decide",
    "decide_invalid",
    "describe_step",
    "evaluate",
    "format_duration",
    "is_allowed_transition",
    "is_check_due",
    "is_rollout_in_flight",
    "parse_duration",
    "parse_spec",
    "plan_queries",
    "render",
    "status_from_dict",
    "status_to_dict",
    "worst",
]
