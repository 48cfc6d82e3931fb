"""The ModelRollout status as frozen dataclasses: the operator's only memory.

status_codec.py turns it into the exact JSON written to .status and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .analysis import Verdict
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


@dataclass(frozen=True)
class AnalysisStatus:
    metrics: tuple[MetricStatus, ...] = ()
    last_verdict: Verdict | None = None  # worst verdict of the latest round
    last_check_at: datetime | None = None
    rounds: int = 0  # check rounds in this rollout attempt
    step_passes: int = 0  # all-pass rounds since the current step started


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

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


EMPTY_STATUS = RolloutStatus()
