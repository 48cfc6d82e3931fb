"""RolloutStatus <-> the JSON stored in .status (camelCase, RFC3339 timestamps).

Absent optional values are written as null so a JSON merge patch removes them; reading
is tolerant: an empty, partial or older status reads as the closest valid RolloutStatus.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .analysis import Verdict
from .durations import from_rfc3339, to_rfc3339
from .phases import Phase
from .status import (AnalysisStatus, Condition, HandledRequests, HistoryEntry, MetricStatus,
                     MirrorTarget, RolloutStatus, TrafficSplit, VersionWeight)


def status_to_dict(s: RolloutStatus) -> dict[str, Any]:
    """The exact JSON written to .status."""
    return {
        "phase": s.phase.value if s.phase else None,
        "reason": s.reason,
        "message": s.message,
        "observedGeneration": s.observed_generation,
        "strategy": s.strategy,
        "stableVersion": s.stable_version,
        "stableUri": s.stable_uri,
        "candidateVersion": s.candidate_version,
        "candidateUri": s.candidate_uri,
        "previousStableVersion": s.previous_stable_version,
        "scaleDownAt": to_rfc3339(s.scale_down_at),
        "currentStepIndex": s.current_step_index,
        "stepCount": s.step_count,
        "currentStep": s.current_step,
        "rolloutStartedAt": to_rfc3339(s.rollout_started_at),
        "stepStartedAt": to_rfc3339(s.step_started_at),
        "traffic": _traffic_to_dict(s.traffic),
        "analysis": _analysis_to_dict(s.analysis),
        "nextCheckAt": to_rfc3339(s.next_check_at),
        "conditions": [_condition_to_dict(c) for c in s.conditions],
        "history": [_history_to_dict(h) for h in s.history],
        "handledRequests": {"promote": s.handled_requests.promote,
                            "promoteFull": s.handled_requests.promote_full,
                            "abort": s.handled_requests.abort,
                            "retry": s.handled_requests.retry},
        "suspendedPhase": s.suspended_phase.value if s.suspended_phase else None,
        "pausedBy": s.paused_by,
        "lastRequest": s.last_request,
        "lastRequestAt": to_rfc3339(s.last_request_at),
    }


def status_from_dict(d: Mapping[str, Any] | None) -> RolloutStatus:
    """Read .status back; unknown or malformed entries read as absent rather than raising."""
    d = d if isinstance(d, Mapping) else {}
    requests = _map(d.get("handledRequests"))
    return RolloutStatus(
        phase=_enum(Phase, d.get("phase")),
        reason=_str(d.get("reason")),
        message=_str(d.get("message")),
        observed_generation=_int(d.get("observedGeneration")) or 0,
        strategy=_str(d.get("strategy")),
        stable_version=_opt_str(d.get("stableVersion")),
        stable_uri=_str(d.get("stableUri")),
        candidate_version=_opt_str(d.get("candidateVersion")),
        candidate_uri=_str(d.get("candidateUri")),
        previous_stable_version=_opt_str(d.get("previousStableVersion")),
        scale_down_at=from_rfc3339(d.get("scaleDownAt")),
        current_step_index=_int(d.get("currentStepIndex")),
        step_count=_int(d.get("stepCount")) or 0,
        current_step=_str(d.get("currentStep")),
        rollout_started_at=from_rfc3339(d.get("rolloutStartedAt")),
        step_started_at=from_rfc3339(d.get("stepStartedAt")),
        traffic=_traffic_from_dict(_map(d.get("traffic"))),
        analysis=_analysis_from_dict(_map(d.get("analysis"))),
        next_check_at=from_rfc3339(d.get("nextCheckAt")),
        conditions=tuple(_condition_from_dict(c) for c in _list(d.get("conditions"))
                         if _map(c).get("type")),
        history=tuple(_history_from_dict(h) for h in _list(d.get("history"))
                      if _map(h).get("version")),
        handled_requests=HandledRequests(
            promote=_int(requests.get("promote")) or 0,
            promote_full=_int(requests.get("promoteFull")) or 0,
            abort=_int(requests.get("abort")) or 0,
            retry=_int(requests.get("retry")) or 0),
        suspended_phase=_enum(Phase, d.get("suspendedPhase")),
        paused_by=_str(d.get("pausedBy")),
        last_request=_str(d.get("lastRequest")),
        last_request_at=from_rfc3339(d.get("lastRequestAt")),
    )


def _traffic_to_dict(t: TrafficSplit) -> dict[str, Any]:
    return {
        "stable": {"version": t.stable.version, "weight": t.stable.weight} if t.stable else None,
        "candidate": ({"version": t.candidate.version, "weight": t.candidate.weight}
                      if t.candidate else None),
        "mirror": {"version": t.mirror.version, "percent": t.mirror.percent} if t.mirror else None,
    }


def _traffic_from_dict(d: Mapping[str, Any]) -> TrafficSplit:
    def weight(key: str) -> VersionWeight | None:
        e = _map(d.get(key))
        version, w = _opt_str(e.get("version")), _int(e.get("weight"))
        return VersionWeight(version, w) if version and w is not None else None

    m = _map(d.get("mirror"))
    mv, mp = _opt_str(m.get("version")), _int(m.get("percent"))
    mirror = MirrorTarget(mv, mp) if mv and mp is not None else None
    return TrafficSplit(stable=weight("stable"), candidate=weight("candidate"), mirror=mirror)


def _analysis_to_dict(a: AnalysisStatus) -> dict[str, Any]:
    return {
        "lastVerdict": a.last_verdict.value if a.last_verdict else None,
        "lastCheckAt": to_rfc3339(a.last_check_at),
        "rounds": a.rounds,
        "stepPasses": a.step_passes,
        "metrics": [{
            "name": m.name, "threshold": m.threshold,
            "verdict": m.verdict.value if m.verdict else None,
            "value": _finite(m.value), "stableValue": _finite(m.stable_value), "samples": m.samples,
            "message": m.message, "failures": m.failures, "inconclusives": m.inconclusives,
            "consecutiveErrors": m.consecutive_errors,
        } for m in a.metrics],
    }


def _analysis_from_dict(d: Mapping[str, Any]) -> AnalysisStatus:
    metrics = tuple(
        MetricStatus(
            name=_str(m.get("name")), threshold=_str(m.get("threshold")),
            verdict=_enum(Verdict, m.get("verdict")), value=_float(m.get("value")),
            stable_value=_float(m.get("stableValue")), samples=_int(m.get("samples")),
            message=_str(m.get("message")), failures=_int(m.get("failures")) or 0,
            inconclusives=_int(m.get("inconclusives")) or 0,
            consecutive_errors=_int(m.get("consecutiveErrors")) or 0)
        for m in map(_map, _list(d.get("metrics"))) if m.get("name"))
    return AnalysisStatus(
        metrics=metrics, last_verdict=_enum(Verdict, d.get("lastVerdict")),
        last_check_at=from_rfc3339(d.get("lastCheckAt")), rounds=_int(d.get("rounds")) or 0,
        step_passes=_int(d.get("stepPasses")) or 0)


def _condition_to_dict(c: Condition) -> dict[str, Any]:
    return {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
            "observedGeneration": c.observed_generation,
            "lastTransitionTime": to_rfc3339(c.last_transition_time)}


def _condition_from_dict(raw: Any) -> Condition:
    c = _map(raw)
    return Condition(type=_str(c.get("type")), status=_str(c.get("status")) or "Unknown",
                     reason=_str(c.get("reason")), message=_str(c.get("message")),
                     observed_generation=_int(c.get("observedGeneration")) or 0,
                     last_transition_time=from_rfc3339(c.get("lastTransitionTime")))


def _history_to_dict(h: HistoryEntry) -> dict[str, Any]:
    return {"version": h.version, "outcome": h.outcome, "reason": h.reason,
            "message": h.message, "startedAt": to_rfc3339(h.started_at),
            "finishedAt": to_rfc3339(h.finished_at), "by": h.by}


def _history_from_dict(raw: Any) -> HistoryEntry:
    h = _map(raw)
    return HistoryEntry(version=_str(h.get("version")), outcome=_str(h.get("outcome")),
                        reason=_str(h.get("reason")), message=_str(h.get("message")),
                        started_at=from_rfc3339(h.get("startedAt")),
                        finished_at=from_rfc3339(h.get("finishedAt")), by=_str(h.get("by")))


def _finite(v: float | None) -> float | None:
    # JSON (and the API server) has no Infinity/NaN; the message keeps the reading.
    return v if v is not None and math.isfinite(v) else None


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else []


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def _float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _enum(cls: Any, v: Any) -> Any:
    try:
        return cls(v) if v is not None else None
    except ValueError:
        return None
