"""Notifications of the operator's decisions: the event kinds, which receivers get which kinds
(the operator's receivers and defaults, a spec's `notifications` by receiver name), the payloads.

Pure: the shell (reconcile.py) turns each decision event into a Notification, asks
`compute_deliveries` where it goes, and hands the payloads to the webhook adapter. A spec only
ever names a receiver the operator defines; it can never give a URL (docs/security.md: SSRF).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from .phases import Phase


class NotificationError(ValueError):
    """A notification rule or receiver definition is wrong; `field` is its path (the spec's
    parse turns it into a SpecError, the operator's settings into a SettingsError)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EventKind(str, Enum):
    """What a notification reports; the names a rule's `events` list may hold."""

    STARTED = "started"  # a new spec.model.version starts a rollout (RolloutStarted)
    STEP = "step"  # a step begins (StepStarted)
    PAUSED = "paused"  # the rollout waits for a person (Paused, WaitingForPromote)
    RESUMED = "resumed"  # a person resumed it (Resumed)
    PROMOTED = "promoted"  # the candidate became stable (Promoted)
    ROLLED_BACK = "rolledBack"  # analysis, a deadline or a new version sent traffic back to stable
    ABORTED = "aborted"  # a person aborted the rollout (Aborted)
    FAILED = "failed"  # the first version never became Ready (ProgressDeadlineExceeded -> Failed)
    # Reserved for the stable version's monitoring (issue 16, part 2), which is not built yet:
    # rules may name them today, nothing sends them until the monitoring emits its events.
    DEGRADED = "degraded"
    RECOVERED = "recovered"


EVENT_KINDS: tuple[str, ...] = tuple(k.value for k in EventKind)
FORMATS: tuple[str, ...] = ("json", "slack")

# Normal events whose reason alone says what happened.
_BY_REASON: dict[str, EventKind] = {
    "RolloutStarted": EventKind.STARTED,
    "StepStarted": EventKind.STEP,
    "Paused": EventKind.PAUSED,
    "WaitingForPromote": EventKind.PAUSED,
    "Resumed": EventKind.RESUMED,
    "Promoted": EventKind.PROMOTED,
    "Recovered": EventKind.RECOVERED,  # spec.monitoring's Degraded cleared
}
# The reasons decide_rollback() is given, besides Aborted (gates.LimitReached's, the deadline's,
# a superseding version's); tests/unit/operator/test_notifications.py reads them from the domain.
ROLLBACK_REASONS = frozenset(
    {
        "AnalysisFailed",
        "AnalysisError",
        "InconclusiveAnalysis",
        "ProgressDeadlineExceeded",
        "Superseded",
        "DegradedAfterPromotion",  # spec.monitoring.rollbackWithin (monitoring.py)
    }
)

# Bounds on what the operator's configuration and a spec may hold.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAME_RE = re.compile(NAME_PATTERN)
MAX_NAME = 63
MAX_RULES = 20
MAX_RECEIVERS = 50
MAX_HEADERS = 20
MAX_HEADER_VALUE = 4096
MAX_URL = 2048
DEFAULT_TIMEOUT_SECONDS = 5.0
MAX_TIMEOUT_SECONDS = 60.0
# http(s)://host[:port][/path][?query]: no credentials in the URL (a header carries them) and
# no fragment; a bracketed IPv6 literal or a host name.
URL_PATTERN = r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(:[0-9]{1,5})?([/?][^\s#]*)?$"
_URL_RE = re.compile(URL_PATTERN)
_HEADER_NAME_RE = re.compile(r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")
# The adapter sets these itself; a receiver overriding them would send a body it cannot parse.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class NotificationRule:
    """Send these kinds (all of them when the rule lists none) to the receiver of that name."""

    receiver: str
    events: frozenset[EventKind] = frozenset(EventKind)

    def wants(self, kind: EventKind) -> bool:
        return kind in self.events


@dataclass(frozen=True)
class Receiver:
    """A webhook the operator's configuration defines (never a spec)."""

    name: str
    url: str
    format: str = "json"  # json | slack
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS  # per attempt: connect, send, the whole answer
    # Extra request headers (e.g. Authorization), from a Secret; kept out of repr and logs.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class NotificationConfig:
    """The operator's receivers by name and the rules every rollout gets (`defaultReceivers`)."""

    receivers: Mapping[str, Receiver] = field(default_factory=dict)
    defaults: tuple[NotificationRule, ...] = ()


@dataclass(frozen=True)
class Notification:
    """One decision event with the rollout's state after it, as the payloads report it."""

    kind: EventKind
    rollout: str
    namespace: str
    type: str  # the Kubernetes event's type: Normal | Warning
    reason: str  # the event's reason, e.g. AnalysisFailed
    message: str  # the event's message, verbatim
    phase: str
    stable_version: str
    candidate_version: str
    step: str
    time: datetime


def compute_event_kind(type_: str, reason: str, phase_after: Phase | None) -> EventKind | None:
    """Which kind of decision a Kubernetes event reports, or None for events that only explain
    one (check rounds, readiness, requests). `phase_after` is the status phase the tick wrote."""
    if type_ == "Warning":
        if phase_after is Phase.ROLLING_BACK:
            if reason == "Aborted":
                return EventKind.ABORTED
            if reason in ROLLBACK_REASONS:
                return EventKind.ROLLED_BACK
        if phase_after is Phase.FAILED and reason == "ProgressDeadlineExceeded":
            return EventKind.FAILED
        if reason == "Degraded":  # spec.monitoring (domain/monitoring.py)
            return EventKind.DEGRADED
        return None
    return _BY_REASON.get(reason)


def compute_deliveries(
    config: NotificationConfig, rules: tuple[NotificationRule, ...], note: Notification
) -> tuple[tuple[Receiver, dict[str, Any]], ...]:
    """Each receiver that wants `note` (the defaults' and the spec's rules; a receiver named by
    both gets it once) with the payload in its format. Names the configuration lacks are skipped
    (`compute_unknown_receivers` reports them)."""
    out: list[tuple[Receiver, dict[str, Any]]] = []
    seen: set[str] = set()
    for rule in (*config.defaults, *rules):
        receiver = config.receivers.get(rule.receiver)
        if receiver is None or rule.receiver in seen or not rule.wants(note.kind):
            continue
        seen.add(rule.receiver)
        out.append((receiver, compute_payload(note, receiver.format)))
    return tuple(out)


def compute_unknown_receivers(rules: tuple[NotificationRule, ...], config: NotificationConfig) -> str:
    """A warning naming each spec.notifications[i].receiver the operator does not define, or ''."""
    unknown = [
        f"spec.notifications[{i}].receiver {r.receiver!r}"
        for i, r in enumerate(rules)
        if r.receiver not in config.receivers
    ]
    if not unknown:
        return ""
    known = ", ".join(sorted(config.receivers)) or "none"
    return f"{', '.join(unknown)}: no such receiver in the operator's configuration (known: {known}); those rules send nothing"


def compute_payload(note: Notification, format_: str) -> dict[str, Any]:
    """The body for a receiver of `format_` (json | slack)."""
    if format_ == "slack":
        return compute_slack_payload(note)
    return compute_json_payload(note)


def compute_json_payload(note: Notification) -> dict[str, Any]:
    """The generic payload: one flat object, every field always present ('' when empty)."""
    return {
        "rollout": note.rollout,
        "namespace": note.namespace,
        "event": note.kind.value,
        "type": note.type,
        "reason": note.reason,
        "message": note.message,
        "phase": note.phase,
        "versions": {"stable": note.stable_version, "candidate": note.candidate_version},
        "step": note.step,
        "time": _stamp(note.time),
    }


_SLACK_HEADLINES: dict[EventKind, str] = {
    EventKind.STARTED: "rollout of {candidate} started",
    EventKind.STEP: "step {step}",
    EventKind.PAUSED: "paused at {step}",
    EventKind.RESUMED: "resumed",
    EventKind.PROMOTED: "{stable} promoted",
    EventKind.ROLLED_BACK: "rolled back to {stable} ({reason})",
    EventKind.ABORTED: "aborted, back to {stable}",
    EventKind.FAILED: "first version {stable} never became Ready",
    EventKind.DEGRADED: "degraded",
    EventKind.RECOVERED: "recovered",
}


def compute_slack_payload(note: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook body: `text` (the notification fallback) and two blocks."""
    headline = _SLACK_HEADLINES[note.kind].format(
        candidate=note.candidate_version, stable=note.stable_version, step=note.step or "-", reason=note.reason
    )
    title = f"{note.namespace}/{note.rollout}: {headline}"
    context = f"{note.type} {note.reason} · phase {note.phase or '-'} · {_stamp(note.time)}"
    return {
        "text": _slack_escape(f"{title}: {note.message}"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(f"*{title}*\n{note.message}")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(context)}]},
        ],
    }


def _slack_escape(text: str) -> str:
    """Slack reads <...> as links and mentions; messages hold '->' and user-written names."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- parsing: a spec's rules, the operator's receivers -------------------------------------------


def parse_rules(value: Any, path: str) -> tuple[NotificationRule, ...]:
    """`[{receiver: name, events: [kind, ...]}]` (spec.notifications, defaultReceivers)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise NotificationError(path, f"must be a list of {{receiver, events}} objects, got {_show(value)}")
    if len(value) > MAX_RULES:
        raise NotificationError(path, f"must have at most {MAX_RULES} items, got {len(value)}")
    return tuple(_parse_rule(item, f"{path}[{i}]") for i, item in enumerate(value))


def _parse_rule(item: Any, path: str) -> NotificationRule:
    _check_keys(item, path, {"receiver", "events"})
    name = _check_name(item.get("receiver"), f"{path}.receiver")
    events = item.get("events")
    if events is None:
        return NotificationRule(name)
    if not isinstance(events, list) or not events:
        raise NotificationError(f"{path}.events", f"must be a non-empty list of {', '.join(EVENT_KINDS)}")
    kinds: set[EventKind] = set()
    for j, kind in enumerate(events):
        if kind not in EVENT_KINDS:
            raise NotificationError(
                f"{path}.events[{j}]", f"must be one of {', '.join(EVENT_KINDS)}, got {_show(kind)}"
            )
        kinds.add(EventKind(kind))
    return NotificationRule(name, frozenset(kinds))


def parse_notification_config(doc: Any, path: str = "") -> NotificationConfig:
    """The operator's `{receivers: [...], defaultReceivers: [...]}`; every default must name a
    defined receiver (the configuration is the operator's own: a typo there is an error)."""
    _check_keys(doc, path or "notifications", {"receivers", "defaultReceivers"})
    raw = doc.get("receivers") or []
    where = _join(path, "receivers")
    if not isinstance(raw, list) or len(raw) > MAX_RECEIVERS:
        raise NotificationError(where, f"must be a list of at most {MAX_RECEIVERS} receivers")
    receivers: dict[str, Receiver] = {}
    for i, item in enumerate(raw):
        receiver = parse_receiver(item, f"{where}[{i}]")
        if receiver.name in receivers:
            raise NotificationError(f"{where}[{i}].name", f"{receiver.name!r} is defined twice")
        receivers[receiver.name] = receiver
    defaults_path = _join(path, "defaultReceivers")
    defaults = parse_rules(doc.get("defaultReceivers"), defaults_path)
    for i, rule in enumerate(defaults):
        if rule.receiver not in receivers:
            known = ", ".join(sorted(receivers)) or "none"
            raise NotificationError(
                f"{defaults_path}[{i}].receiver", f"{rule.receiver!r} is not in receivers (defined: {known})"
            )
    return NotificationConfig(receivers, defaults)


def parse_receiver(item: Any, path: str) -> Receiver:
    _check_keys(item, path, {"name", "url", "format", "timeoutSeconds", "headers"})
    name = _check_name(item.get("name"), f"{path}.name")
    url = item.get("url")
    if not isinstance(url, str) or len(url) > MAX_URL or not _URL_RE.match(url):
        raise NotificationError(
            f"{path}.url",
            f"must be an http(s)://host[:port][/path] URL of at most {MAX_URL} characters, without "
            f"credentials or fragment, got {_show(url)}",
        )
    format_ = item.get("format", "json")
    if format_ not in FORMATS:
        raise NotificationError(f"{path}.format", f"must be one of {', '.join(FORMATS)}, got {_show(format_)}")
    timeout = item.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= MAX_TIMEOUT_SECONDS:
        raise NotificationError(
            f"{path}.timeoutSeconds",
            f"must be a number of seconds in 0.1..{MAX_TIMEOUT_SECONDS:g}, got {_show(timeout)}",
        )
    headers = _parse_headers(item.get("headers"), f"{path}.headers")
    return Receiver(name, url, format_, float(timeout), headers)


def _parse_headers(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_HEADERS:
        raise NotificationError(path, f"must be a map of at most {MAX_HEADERS} header names to values")
    headers: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(key, str) or not _HEADER_NAME_RE.match(key) or key.lower() in _RESERVED_HEADERS:
            raise NotificationError(
                path, f"{_show(key)} is not a header a receiver may set (an HTTP token, not Content-Type or Host)"
            )
        if not isinstance(text, str) or len(text) > MAX_HEADER_VALUE or any(c in text for c in "\r\n\0"):
            # Never the value itself: it is usually a credential.
            raise NotificationError(
                f"{path}.{key}", f"must be one line of at most {MAX_HEADER_VALUE} characters (value not shown)"
            )
        headers[key] = text
    return headers


def _check_keys(item: Any, path: str, allowed: set[str]) -> None:
    if not isinstance(item, Mapping):
        raise NotificationError(path, f"must be an object, got {_show(item)}")
    extra = sorted(str(k) for k in item if k not in allowed)
    if extra:
        raise NotificationError(path, f"unknown field {extra[0]!r}; expected {', '.join(sorted(allowed))}")


def _check_name(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME or not _NAME_RE.match(value):
        raise NotificationError(
            path, f"must be a receiver name (lowercase letters, digits and '-', at most {MAX_NAME}), got {_show(value)}"
        )
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
