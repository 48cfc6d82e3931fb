"""Which metric queries are due now, fully rendered, so the shell runs only what decide() needs.

A check round is due when the candidate is exposed (weight, mirror or blue-green preview) in a
running step and status.nextCheckAt has passed.
"""

from __future__ import annotations

from datetime import datetime

from .durations import format_promql_duration
from .observations import QueryRequest, Role
from .phases import Phase
from .spec import BlueGreenStrategy, MetricSpec, RolloutSpec
from .status import RolloutStatus
from .templates import DEFAULT_SAMPLES_QUERY, TEMPLATES, render


def is_candidate_exposed(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """True when the candidate can receive requests whose metrics the gates read."""
    if status.candidate_version is None or status.step_started_at is None:
        return False
    traffic = status.traffic
    if traffic.routes_to(status.candidate_version):
        return True
    # Blue-green: the preview Service carries test traffic from the first step on.
    return isinstance(spec.strategy, BlueGreenStrategy)


def is_check_due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    if not spec.metrics or status.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return False
    if not is_candidate_exposed(spec, status):
        return False
    return status.next_check_at is None or now >= status.next_check_at


def plan_queries(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> list[QueryRequest]:
    """The rendered queries for the check round due now (empty when none is due)."""
    if not is_check_due(spec, status, now):
        return []
    assert status.candidate_version is not None
    requests: list[QueryRequest] = []
    for metric in spec.metrics:
        requests.append(compute_query(spec, status, metric, Role.CANDIDATE))
        if metric.relative_to == "stable" and status.stable_version:
            requests.append(compute_query(spec, status, metric, Role.STABLE))
    return requests


def compute_query(
    spec: RolloutSpec, status: RolloutStatus, metric: MetricSpec, role: Role
) -> QueryRequest:
    """Render one metric for one version; the same text serves both sides of a comparison."""
    version = status.stable_version if role is Role.STABLE else status.candidate_version
    assert version is not None
    variables = compute_variables(spec, status, version)
    if metric.template is not None:
        template = TEMPLATES[metric.template]
        query_text, samples_text = template.query, template.samples
    else:
        assert metric.query is not None
        query_text, samples_text = metric.query, DEFAULT_SAMPLES_QUERY
    return QueryRequest(metric=metric.name, role=role, version=version,
                        query=render(query_text, variables),
                        samples_query=render(samples_text, variables))


def compute_variables(spec: RolloutSpec, status: RolloutStatus, version: str) -> dict[str, str]:
    assert spec.analysis is not None
    variables = {
        "namespace": spec.namespace,
        "rollout": spec.name,
        "model": spec.model.name,
        "version": version,
        "candidate": status.candidate_version or "",
        "stable": status.stable_version or "",
        "window": format_promql_duration(spec.analysis.window),
    }
    # An empty value would silently match nothing; leave it undefined so rendering fails.
    return {k: v for k, v in variables.items() if v}
