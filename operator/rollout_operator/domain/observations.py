"""What the shell observed this tick and hands to decide(): workloads and metric measurements.

The shell only runs the queries plan_queries() asked for and reports each as a Measurement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from .analysis import Measurement


class Role(str, Enum):
    """Which side of the comparison a version (or a query) is on."""

    STABLE = "stable"
    CANDIDATE = "candidate"


@dataclass(frozen=True)
class WorkloadState:
    """One version's Deployment as observed (absent versions are simply not in the map)."""

    exists: bool = True
    desired_replicas: int = 0
    ready_replicas: int = 0
    updated: bool = True  # the Deployment controller has rolled out the current pod template

    def is_ready(self, replicas: int) -> bool:
        """Ready to take traffic at the given size: rolled out and all asked-for pods ready."""
        return self.exists and self.updated and replicas > 0 and self.ready_replicas >= replicas


@dataclass(frozen=True)
class MetricObservation:
    """One metric measured for the candidate and, for relative thresholds, for stable."""

    candidate: Measurement
    stable: Measurement | None = None


@dataclass(frozen=True)
class QueryRequest:
    """A due query, fully rendered: run `query` (the value) and `samples_query` (the count).
    With `slice_label` both are grouped by that label and answer a vector: one series per slice,
    at most `slice_max` of them (more is an error), read into Measurement.slices."""

    metric: str
    role: Role
    version: str
    query: str
    samples_query: str
    slice_label: str = ""  # "": one number (the scalar path)
    slice_max: int = 0


@dataclass(frozen=True)
class Observations:
    workloads: Mapping[str, WorkloadState] = field(default_factory=dict)  # by version
    measurements: Mapping[str, MetricObservation] = field(default_factory=dict)  # by metric name
    generation: int = 0  # metadata.generation of the object read this tick

    def workload(self, version: str | None) -> WorkloadState:
        if version is None:
            return WorkloadState(exists=False)
        return self.workloads.get(version, WorkloadState(exists=False))


def compute_metric_observations(
    results: Iterable[tuple[QueryRequest, Measurement]],
) -> dict[str, MetricObservation]:
    """Group the shell's query results into Observations.measurements. Stable alone (the
    admission forecast's counts) comes with the candidate marked as not measured."""
    candidate: dict[str, Measurement] = {}
    stable: dict[str, Measurement] = {}
    for request, measurement in results:
        target = stable if request.role is Role.STABLE else candidate
        target[request.metric] = measurement
    absent = Measurement.error("the candidate was not measured this tick")
    return {
        name: MetricObservation(candidate=candidate.get(name, absent), stable=stable.get(name))
        for name in (*candidate, *(n for n in stable if n not in candidate))
    }
