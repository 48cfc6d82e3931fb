"""The ModelRollout status: the operator's only memory. Frozen dataclasses, the exact JSON
written to .status and read back (camelCase, RFC3339 timestamps), and the Kubernetes-style
conditions derived from it.

Absent optional values are written as null so a JSON merge patch removes them; reading is
tolerant: an empty, partial or older status reads as the closest valid RolloutStatus.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .analysis import Verdict
from .durations import from_rfc3339, to_rfc3339
from .phases import Phase


@dataclass(frozen=True)
class VersionWeight:
    version: str
    weight: int  # percent of user traffic, 0..100


@dataclass(frozen=True)
class MirrorTarget:
    version: str
    percent: int  # share of requests copied to this version, 1..100


@dataclass(frozen=True)
class TrafficSplit:
    """What the router (or HTTPRoute) carries. stable is absent only before the first version
    is Ready; candidate only outside a rollout; mirror unless shadowing."""

    stable: VersionWeight | None = None
    candidate: VersionWeight | None = None
    mirror: MirrorTarget | None = None
    # The built-in router keeps requests with the same value of this header on one version;
    # None: not sticky (and always None for gatewayAPI). Decided from the spec every tick.
    sticky_header: str | None = None

    def routes_to(self, version: str | None) -> bool:
        """True if any user request or mirrored copy can reach `version`."""
        if version is None:
            return False
        for entry in (self.stable, self.candidate):
            if entry is not None and entry.version == version and entry.weight > 0:
                return True
        return self.mirror is not None and self.mirror.version == version and self.mirror.percent > 0

    @property
    def candidate_weight(self) -> int:
        return self.candidate.weight if self.candidate else 0


@dataclass(frozen=True)
class Condition:
    type: str  # Ready | Progressing | Promoted | RolledBack
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""
    observed_generation: int = 0
    last_transition_time: datetime | None = None


@dataclass(frozen=True)
class SliceStatus:
    """One slice of a per-slice gate at the latest check (spec.analysis.metrics[].slices)."""

    name: str  # the slice, e.g. "young" (a value of the gate's slices.label)
    verdict: Verdict
    value: float | None = None  # the candidate's value on this slice (None: no data)
    stable_value: float | None = None  # stable's on the same slice, for a relative threshold
    samples: int | None = None
    stable_samples: int | None = None
    message: str = ""  # with the numbers, e.g. "0.62 < stable-0.05 = 0.86 (n=212)"
    lower: float | None = None  # sequential mode: this slice's interval
    upper: float | None = None


@dataclass(frozen=True)
class MetricStatus:
    """One gate's latest check and its counters for the current rollout attempt."""

    name: str
    threshold: str  # e.g. "<= 0.5" or "<= stable+0.05"
    verdict: Verdict | None = None  # None: not checked yet
    value: float | None = None
    stable_value: float | None = None
    samples: int | None = None
    message: str = ""
    failures: int = 0
    inconclusives: int = 0
    consecutive_errors: int = 0
    # Sequential mode only (None otherwise): the interval, the evidence and what a verdict needs.
    lower: float | None = None
    upper: float | None = None
    stable_samples: int | None = None
    samples_needed: int | None = None  # more candidate samples at the current estimate; 0 = decided
    seconds_to_verdict: float | None = None  # samples_needed at the current request rate
    # Analysis step indices the admission forecast warned this gate cannot decide in time; their
    # first round does not warn again. Empty outside sequential mode or without a warning.
    warned_steps: tuple[int, ...] = ()
    # A per-slice gate only (empty otherwise): each slice's reading; value/stable_value above are
    # then those of the slice that decides the gate (a failing one, else an undecided one).
    slices: tuple[SliceStatus, ...] = ()


@dataclass(frozen=True)
class AnalysisStatus:
    metrics: tuple[MetricStatus, ...] = ()
    last_verdict: Verdict | None = None  # worst verdict of the latest round
    last_check_at: datetime | None = None
    rounds: int = 0  # check rounds in this rollout attempt
    step_passes: int = 0  # all-pass rounds since the current step started


@dataclass(frozen=True)
class MonitoringStatus:
    """spec.monitoring's readings of the stable version while Healthy, and the Degraded
    condition they make. Empty (version None) when the spec has no monitoring."""

    version: str | None = None  # the stable version the readings are of; None: not monitoring
    degraded: bool | None = None  # None: not checked yet (the condition is Unknown)
    reason: str = ""  # the condition's: the first breached gate, Recovered, GatesPass, NotChecked
    message: str = ""  # with the gate's numbers, e.g. "unknown-rate 0.31 > max 0.2 (n=412) on stable v2"
    last_check_at: datetime | None = None
    next_check_at: datetime | None = None
    rounds: int = 0  # rounds on this stable version
    metrics: tuple[MetricStatus, ...] = ()  # failures counts failing rounds in a row


@dataclass(frozen=True)
class HistoryEntry:
    """One finished rollout attempt (newest last)."""

    version: str
    outcome: str  # Promoted | RolledBack | Stopped | Failed | Superseded
    reason: str
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    by: str = ""  # who asked, when a person's request ended it


@dataclass(frozen=True)
class HandledRequests:
    """The spec.requests counters already acted on."""

    promote: int = 0
    promote_full: int = 0
    abort: int = 0
    retry: int = 0


@dataclass(frozen=True)
class RolloutStatus:
    phase: Phase | None = None  # None: never reconciled
    reason: str = ""  # machine-readable cause of the latest transition, e.g. AnalysisFailed
    message: str = ""  # what a person should read first
    observed_generation: int = 0
    strategy: str = ""  # canary | blueGreen | shadow (for the printer column)
    stable_version: str | None = None
    stable_uri: str = ""
    candidate_version: str | None = None  # in flight, or the one rolled back/stopped
    candidate_uri: str = ""
    previous_stable_version: str | None = None  # kept scaled to 0 for a quick way back
    previous_stable_uri: str = ""  # its URI, for spec.monitoring.rollbackWithin's way back
    scale_down_at: datetime | None = None  # when previous_stable is scaled down
    current_step_index: int | None = None
    step_count: int = 0
    current_step: str = ""  # e.g. "2/5 setWeight 50"
    rollout_started_at: datetime | None = None
    step_started_at: datetime | None = None  # None while waiting for the candidate to be Ready
    traffic: TrafficSplit = TrafficSplit()
    analysis: AnalysisStatus = AnalysisStatus()
    next_check_at: datetime | None = None
    conditions: tuple[Condition, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    handled_requests: HandledRequests = HandledRequests()
    suspended_phase: Phase | None = None  # the phase to return to when leaving Invalid
    paused_by: str = ""  # what holds a Paused rollout: "step" or "spec.paused"
    last_request: str = ""  # the latest request acted on, e.g. "promote by carol"
    last_request_at: datetime | None = None
    monitoring: MonitoringStatus = MonitoringStatus()

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# The JSON form of .status.


def status_to_dict(s: RolloutStatus) -> dict[str, Any]:
    """The exact JSON written to .status (monitoring only while spec.monitoring is set, so a
    rollout without it keeps the status it always had)."""
    d = {
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
        "handledRequests": _handled_to_dict(s.handled_requests),
        "suspendedPhase": s.suspended_phase.value if s.suspended_phase else None,
        "pausedBy": s.paused_by,
        "lastRequest": s.last_request,
        "lastRequestAt": to_rfc3339(s.last_request_at),
    }
    if s.monitoring.version:
        d["monitoring"] = _monitoring_to_dict(s.monitoring)
    if s.previous_stable_uri:
        d["previousStableUri"] = s.previous_stable_uri
    return d


def status_from_dict(d: Mapping[str, Any] | None) -> RolloutStatus:
    """Read .status back; unknown or malformed entries read as absent rather than raising."""
    d = d if isinstance(d, Mapping) else {}
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
        previous_stable_uri=_str(d.get("previousStableUri")),
        scale_down_at=from_rfc3339(d.get("scaleDownAt")),
        current_step_index=_int(d.get("currentStepIndex")),
        step_count=_int(d.get("stepCount")) or 0,
        current_step=_str(d.get("currentStep")),
        rollout_started_at=from_rfc3339(d.get("rolloutStartedAt")),
        step_started_at=from_rfc3339(d.get("stepStartedAt")),
        traffic=_traffic_from_dict(_map(d.get("traffic"))),
        analysis=_analysis_from_dict(_map(d.get("analysis"))),
        next_check_at=from_rfc3339(d.get("nextCheckAt")),
        conditions=tuple(_condition_from_dict(c) for c in _list(d.get("conditions")) if _map(c).get("type")),
        history=tuple(_history_from_dict(h) for h in _list(d.get("history")) if _map(h).get("version")),
        handled_requests=_handled_from_dict(_map(d.get("handledRequests"))),
        suspended_phase=_enum(Phase, d.get("suspendedPhase")),
        paused_by=_str(d.get("pausedBy")),
        last_request=_str(d.get("lastRequest")),
        last_request_at=from_rfc3339(d.get("lastRequestAt")),
        monitoring=_monitoring_from_dict(_map(d.get("monitoring"))),
    )


def _monitoring_to_dict(m: MonitoringStatus) -> dict[str, Any]:
    return {
        "version": m.version,
        "degraded": m.degraded,
        "reason": m.reason,
        "message": m.message,
        "lastCheckAt": to_rfc3339(m.last_check_at),
        "nextCheckAt": to_rfc3339(m.next_check_at),
        "rounds": m.rounds,
        "metrics": [_metric_to_dict(g) for g in m.metrics],
    }


def _monitoring_from_dict(d: Mapping[str, Any]) -> MonitoringStatus:
    degraded = d.get("degraded")
    return MonitoringStatus(
        version=_opt_str(d.get("version")),
        degraded=degraded if isinstance(degraded, bool) else None,
        reason=_str(d.get("reason")),
        message=_str(d.get("message")),
        last_check_at=from_rfc3339(d.get("lastCheckAt")),
        next_check_at=from_rfc3339(d.get("nextCheckAt")),
        rounds=_int(d.get("rounds")) or 0,
        metrics=tuple(_metric_from_dict(g) for g in map(_map, _list(d.get("metrics"))) if g.get("name")),
    )


def _handled_to_dict(h: HandledRequests) -> dict[str, Any]:
    return {"promote": h.promote, "promoteFull": h.promote_full, "abort": h.abort, "retry": h.retry}


def _handled_from_dict(d: Mapping[str, Any]) -> HandledRequests:
    return HandledRequests(
        promote=_int(d.get("promote")) or 0,
        promote_full=_int(d.get("promoteFull")) or 0,
        abort=_int(d.get("abort")) or 0,
        retry=_int(d.get("retry")) or 0,
    )


def _traffic_to_dict(t: TrafficSplit) -> dict[str, Any]:
    d: dict[str, Any] = {
        "stable": {"version": t.stable.version, "weight": t.stable.weight} if t.stable else None,
        "candidate": ({"version": t.candidate.version, "weight": t.candidate.weight} if t.candidate else None),
        "mirror": {"version": t.mirror.version, "percent": t.mirror.percent} if t.mirror else None,
    }
    # Only when set, so a rollout that is not sticky keeps the status it always had; the
    # status patch removes the key when it goes (a key absent from the new status is nulled).
    if t.sticky_header:
        d["stickyHeader"] = t.sticky_header
    return d


def _traffic_from_dict(d: Mapping[str, Any]) -> TrafficSplit:
    def weight(key: str) -> VersionWeight | None:
        e = _map(d.get(key))
        version, w = _opt_str(e.get("version")), _int(e.get("weight"))
        return VersionWeight(version, w) if version and w is not None else None

    m = _map(d.get("mirror"))
    mv, mp = _opt_str(m.get("version")), _int(m.get("percent"))
    mirror = MirrorTarget(mv, mp) if mv and mp is not None else None
    return TrafficSplit(
        stable=weight("stable"),
        candidate=weight("candidate"),
        mirror=mirror,
        sticky_header=_opt_str(d.get("stickyHeader")),
    )


def _analysis_to_dict(a: AnalysisStatus) -> dict[str, Any]:
    return {
        "lastVerdict": a.last_verdict.value if a.last_verdict else None,
        "lastCheckAt": to_rfc3339(a.last_check_at),
        "rounds": a.rounds,
        "stepPasses": a.step_passes,
        "metrics": [_metric_to_dict(m) for m in a.metrics],
    }


def _metric_to_dict(m: MetricStatus) -> dict[str, Any]:
    return {
        "name": m.name,
        "threshold": m.threshold,
        "verdict": m.verdict.value if m.verdict else None,
        "value": _finite(m.value),
        "stableValue": _finite(m.stable_value),
        "samples": m.samples,
        "message": m.message,
        "failures": m.failures,
        "inconclusives": m.inconclusives,
        "consecutiveErrors": m.consecutive_errors,
        **_sequential_to_dict(m),
    }


def _sequential_to_dict(m: MetricStatus) -> dict[str, Any]:
    """The sequential and per-slice fields, written only when set: a plain threshold gate's
    status stays as it was (metrics is a list, so a merge patch replaces it whole)."""
    fields = {
        "lower": _finite(m.lower),
        "upper": _finite(m.upper),
        "stableSamples": m.stable_samples,
        "samplesNeeded": m.samples_needed,
        "secondsToVerdict": _finite(m.seconds_to_verdict),
        "warnedSteps": list(m.warned_steps) or None,
        "slices": [_slice_to_dict(s) for s in m.slices] or None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _slice_to_dict(s: SliceStatus) -> dict[str, Any]:
    d = {
        "name": s.name,
        "verdict": s.verdict.value,
        "value": _finite(s.value),
        "stableValue": _finite(s.stable_value),
        "samples": s.samples,
        "stableSamples": s.stable_samples,
        "message": s.message,
        "lower": _finite(s.lower),
        "upper": _finite(s.upper),
    }
    return {k: v for k, v in d.items() if v is not None}


def _slice_from_dict(d: Mapping[str, Any]) -> SliceStatus | None:
    verdict = _enum(Verdict, d.get("verdict"))
    if not d.get("name") or verdict is None:
        return None
    return SliceStatus(
        name=_str(d.get("name")),
        verdict=verdict,
        value=_float(d.get("value")),
        stable_value=_float(d.get("stableValue")),
        samples=_int(d.get("samples")),
        stable_samples=_int(d.get("stableSamples")),
        message=_str(d.get("message")),
        lower=_float(d.get("lower")),
        upper=_float(d.get("upper")),
    )


def _metric_from_dict(m: Mapping[str, Any]) -> MetricStatus:
    return MetricStatus(
        name=_str(m.get("name")),
        threshold=_str(m.get("threshold")),
        verdict=_enum(Verdict, m.get("verdict")),
        value=_float(m.get("value")),
        stable_value=_float(m.get("stableValue")),
        samples=_int(m.get("samples")),
        message=_str(m.get("message")),
        failures=_int(m.get("failures")) or 0,
        inconclusives=_int(m.get("inconclusives")) or 0,
        consecutive_errors=_int(m.get("consecutiveErrors")) or 0,
        lower=_float(m.get("lower")),
        upper=_float(m.get("upper")),
        stable_samples=_int(m.get("stableSamples")),
        samples_needed=_int(m.get("samplesNeeded")),
        seconds_to_verdict=_float(m.get("secondsToVerdict")),
        warned_steps=tuple(i for i in map(_int, _list(m.get("warnedSteps"))) if i is not None),
        slices=tuple(s for s in map(_slice_from_dict, map(_map, _list(m.get("slices")))) if s is not None),
    )


def _analysis_from_dict(d: Mapping[str, Any]) -> AnalysisStatus:
    metrics = tuple(_metric_from_dict(m) for m in map(_map, _list(d.get("metrics"))) if m.get("name"))
    return AnalysisStatus(
        metrics=metrics,
        last_verdict=_enum(Verdict, d.get("lastVerdict")),
        last_check_at=from_rfc3339(d.get("lastCheckAt")),
        rounds=_int(d.get("rounds")) or 0,
        step_passes=_int(d.get("stepPasses")) or 0,
    )


def _condition_to_dict(c: Condition) -> dict[str, Any]:
    return {
        "type": c.type,
        "status": c.status,
        "reason": c.reason,
        "message": c.message,
        "observedGeneration": c.observed_generation,
        "lastTransitionTime": to_rfc3339(c.last_transition_time),
    }


def _condition_from_dict(raw: Any) -> Condition:
    c = _map(raw)
    return Condition(
        type=_str(c.get("type")),
        status=_str(c.get("status")) or "Unknown",
        reason=_str(c.get("reason")),
        message=_str(c.get("message")),
        observed_generation=_int(c.get("observedGeneration")) or 0,
        last_transition_time=from_rfc3339(c.get("lastTransitionTime")),
    )


def _history_to_dict(h: HistoryEntry) -> dict[str, Any]:
    return {
        "version": h.version,
        "outcome": h.outcome,
        "reason": h.reason,
        "message": h.message,
        "startedAt": to_rfc3339(h.started_at),
        "finishedAt": to_rfc3339(h.finished_at),
        "by": h.by,
    }


def _history_from_dict(raw: Any) -> HistoryEntry:
    h = _map(raw)
    return HistoryEntry(
        version=_str(h.get("version")),
        outcome=_str(h.get("outcome")),
        reason=_str(h.get("reason")),
        message=_str(h.get("message")),
        started_at=from_rfc3339(h.get("startedAt")),
        finished_at=from_rfc3339(h.get("finishedAt")),
        by=_str(h.get("by")),
    )


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


# Conditions (Ready, Progressing, Promoted, RolledBack, and Degraded with spec.monitoring), so
# `kubectl wait --for=condition=Promoted` works; lastTransitionTime moves only when a
# condition's status flips.

CONDITION_TYPES = ("Ready", "Progressing", "Promoted", "RolledBack")
_IN_MOTION = (Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK)


def compute_conditions(
    status: RolloutStatus, spec_version: str | None, generation: int, now: datetime
) -> tuple[Condition, ...]:
    """The four conditions for `status` (and Degraded while monitoring); lastTransitionTime
    moves only when status flips."""
    fresh = [_ready(status), _progressing(status), _promoted(status, spec_version), _rolled_back(status)]
    types = list(CONDITION_TYPES)
    if status.monitoring.version:
        types.append("Degraded")
        fresh.append(_degraded(status.monitoring))
    old = {c.type: c for c in status.conditions}
    result = []
    for type_, (value, reason, message) in zip(types, fresh, strict=True):
        prev = old.get(type_)
        since = prev.last_transition_time if prev and prev.status == value else now
        result.append(Condition(type_, value, reason, message, generation, since))
    return tuple(result)


def _ready(s: RolloutStatus) -> tuple[str, str, str]:
    if s.traffic.stable is not None and s.phase not in (Phase.INITIALIZING, Phase.FAILED):
        return "True", "StableServing", f"{s.stable_version} serves user traffic"
    if s.phase is Phase.FAILED:
        return "False", s.reason or "Failed", s.message
    return "False", "Initializing", s.message or "no version is Ready yet"


def _progressing(s: RolloutStatus) -> tuple[str, str, str]:
    if s.phase is Phase.INVALID:
        return "False", "InvalidSpec", s.message
    if s.phase in _IN_MOTION:
        return "True", s.phase.value, s.message
    return "False", s.reason or "Idle", s.message


def _promoted(s: RolloutStatus, spec_version: str | None) -> tuple[str, str, str]:
    if s.phase is Phase.HEALTHY and s.stable_version == spec_version:
        reason = "Promoted" if s.reason == "Promoted" else "StableServing"
        return "True", reason, f"{s.stable_version} serves 100% of traffic"
    if s.phase is Phase.INVALID:
        return "False", "InvalidSpec", s.message
    return "False", (s.phase.value if s.phase else "Unknown"), s.message


def _rolled_back(s: RolloutStatus) -> tuple[str, str, str]:
    if s.phase is Phase.ROLLED_BACK:
        return "True", s.reason or "RolledBack", s.message
    return "False", "NotRolledBack", ""


def _degraded(m: MonitoringStatus) -> tuple[str, str, str]:
    if m.degraded is None:
        return "Unknown", m.reason or "NotChecked", m.message or f"stable {m.version} not checked yet"
    return ("True" if m.degraded else "False"), m.reason, m.message


def with_conditions(status: RolloutStatus, spec_version: str | None, generation: int, now: datetime) -> RolloutStatus:
    return replace(status, conditions=compute_conditions(status, spec_version, generation, now))
