"""The pure core of the ModelRollout operator: spec/status types, the step machine, analysis.

No I/O, no clock reads, no kopf/kubernetes (import-linter enforces it); the shell calls in here.
"""

from .actions import (Action, Decision, DeleteVersion, EmitEvent, EnsurePreviewService,
                      EnsureRouter, EnsureVersion, RemoveNetworkPolicies, RemovePreviewService,
                      ScaleDownVersion, SetTraffic)
from .analysis import (Criteria, Evaluation, Measurement, MeasurementKind, Verdict, evaluate,
                       worst)
from .decide import decide, decide_invalid
from .durations import format_duration, parse_duration
from .observations import (MetricObservation, Observations, QueryRequest, Role, WorkloadState,
                           compute_metric_observations)
from .parse import parse_spec
from .phases import TRANSITIONS, Phase, is_allowed_transition
from .pod_policy import PodPolicy
from .queries import is_check_due, plan_queries
from .spec import (AnalysisSpec, BlueGreenStrategy, CanaryStrategy, GatewayAPISpec, MetricSpec,
                   ModelSpec, OnNoData, Requests, RolloutSpec, RouterSpec, ServerSpec,
                   ShadowStrategy, ShadowThen, SpecError, TrafficRoutingSpec)
from .status import (AnalysisStatus, Condition, HandledRequests, HistoryEntry, MetricStatus,
                     MirrorTarget, RolloutStatus, TrafficSplit, VersionWeight)
from .status_codec import status_from_dict, status_to_dict
from .steps import Analysis, Pause, Promote, SetMirror, SetWeight, Step, Stop, describe_step
from .templates import TEMPLATES, TemplateError, render

__all__ = [
    "Action", "Analysis", "AnalysisSpec", "AnalysisStatus", "BlueGreenStrategy", "CanaryStrategy",
    "Condition", "Criteria", "Decision", "DeleteVersion", "EmitEvent", "EnsurePreviewService",
    "EnsureRouter", "EnsureVersion", "Evaluation", "GatewayAPISpec", "HandledRequests",
    "HistoryEntry", "Measurement", "MeasurementKind", "MetricObservation", "MetricSpec",
    "MetricStatus", "MirrorTarget", "ModelSpec", "Observations", "OnNoData", "Pause", "Phase",
    "PodPolicy", "Promote", "QueryRequest", "RemoveNetworkPolicies", "RemovePreviewService", "Requests", "Role", "RolloutSpec",
    "RolloutStatus", "RouterSpec", "ScaleDownVersion", "ServerSpec", "SetMirror", "SetTraffic",
    "SetWeight", "ShadowStrategy", "ShadowThen", "SpecError", "Step", "Stop", "TEMPLATES",
    "TRANSITIONS", "TemplateError", "TrafficRoutingSpec", "TrafficSplit", "Verdict",
    "VersionWeight", "WorkloadState", "compute_metric_observations", "decide", "decide_invalid",
    "describe_step", "evaluate", "format_duration", "is_allowed_transition", "is_check_due",
    "parse_duration", "parse_spec", "plan_queries", "render", "status_from_dict",
    "status_to_dict", "worst",
]
