"""domain/notifications.py: which events are decisions, who gets them, the payloads, and the
rules and receivers as the spec and the operator's configuration write them."""

from __future__ import annotations

import ast
import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rollout_operator.domain import Phase, SpecError, parse_spec
from rollout_operator.domain.notifications import (
    ROLLBACK_REASONS,
    EventKind,
    Notification,
    NotificationConfig,
    NotificationError,
    NotificationRule,
    Receiver,
    compute_deliveries,
    compute_event_kind,
    compute_json_payload,
    compute_slack_payload,
    compute_unknown_receivers,
    parse_notification_config,
    parse_rules,
)
from tests.support.domain_sim import CANARY

pytestmark = pytest.mark.unit

DOMAIN = Path(__file__).resolve().parents[3] / "operator" / "rollout_operator" / "domain"
NOW = datetime(2026, 12, 2, 18, 0, 5, tzinfo=UTC)
OPS = Receiver("ops", "https://hooks.example/ops", "slack")
AUDIT = Receiver("audit", "http://audit.example:8080/in")


def _note(kind=EventKind.ROLLED_BACK, **overrides) -> Notification:
    fields = dict(
        kind=kind,
        rollout="speech",
        namespace="ml",
        type="Warning",
        reason="AnalysisFailed",
        message="error-rate 0.031 > max 0.01 (2 of 2 rounds) -> rolling back to v1",
        phase="RollingBack",
        stable_version="v1",
        candidate_version="v2",
        step="2/5 setWeight 20",
        time=NOW,
    )
    return Notification(**{**fields, **overrides})


@pytest.mark.parametrize(
    "type_, reason, phase, kind",
    [
        ("Normal", "RolloutStarted", Phase.PROGRESSING, EventKind.STARTED),
        ("Normal", "StepStarted", Phase.PROGRESSING, EventKind.STEP),
        ("Normal", "Paused", Phase.PAUSED, EventKind.PAUSED),
        ("Normal", "WaitingForPromote", Phase.PAUSED, EventKind.PAUSED),
        ("Normal", "Resumed", Phase.PROGRESSING, EventKind.RESUMED),
        ("Normal", "Promoted", Phase.HEALTHY, EventKind.PROMOTED),
        ("Warning", "AnalysisFailed", Phase.ROLLING_BACK, EventKind.ROLLED_BACK),
        ("Warning", "InconclusiveAnalysis", Phase.ROLLING_BACK, EventKind.ROLLED_BACK),
        ("Warning", "ProgressDeadlineExceeded", Phase.ROLLING_BACK, EventKind.ROLLED_BACK),
        ("Warning", "Superseded", Phase.ROLLING_BACK, EventKind.ROLLED_BACK),
        ("Warning", "Aborted", Phase.ROLLING_BACK, EventKind.ABORTED),
        ("Warning", "ProgressDeadlineExceeded", Phase.FAILED, EventKind.FAILED),
    ],
)
def test_decision_events_map_to_their_kind(type_, reason, phase, kind):
    assert compute_event_kind(type_, reason, phase) is kind


@pytest.mark.parametrize(
    "type_, reason, phase",
    [
        ("Warning", "CheckFail", Phase.ROLLING_BACK),  # the round before the rollback: not the decision
        ("Warning", "CheckFail", Phase.PROGRESSING),
        ("Warning", "AnalysisFailed", Phase.PROGRESSING),  # a rollback reason without the rollback
        ("Normal", "RolledBack", Phase.ROLLED_BACK),  # the clean-up after the decision
        ("Normal", "CandidateReady", Phase.PROGRESSING),
        ("Warning", "InvalidSpec", Phase.INVALID),
        ("Warning", "ReconcileError", None),
    ],
)
def test_explaining_events_are_not_notifications(type_, reason, phase):
    assert compute_event_kind(type_, reason, phase) is None


def _string_reasons(call: ast.Call, position: int) -> set[str]:
    arg = call.args[position] if len(call.args) > position else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    return set()


def test_every_literal_rollback_reason_in_the_domain_is_known():
    """A new decide_rollback(...)/LimitReached(...) reason would otherwise never be notified."""
    found: set[str] = set()
    for path in DOMAIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "decide_rollback":
                    found |= _string_reasons(node, 1)
                elif node.func.id == "LimitReached":
                    found |= _string_reasons(node, 0)
    assert {"AnalysisFailed", "Aborted", "Superseded"} <= found, found  # the scan sees the calls
    assert found - {"Aborted"} <= ROLLBACK_REASONS, found - ROLLBACK_REASONS


def test_json_payload_has_every_field():
    assert compute_json_payload(_note()) == {
        "rollout": "speech",
        "namespace": "ml",
        "event": "rolledBack",
        "type": "Warning",
        "reason": "AnalysisFailed",
        "message": "error-rate 0.031 > max 0.01 (2 of 2 rounds) -> rolling back to v1",
        "phase": "RollingBack",
        "versions": {"stable": "v1", "candidate": "v2"},
        "step": "2/5 setWeight 20",
        "time": "2026-12-02T18:00:05Z",
    }


def test_slack_payload_escapes_what_slack_would_read_as_markup():
    payload = compute_slack_payload(_note(message="a <b> & c -> d", reason="Superseded"))
    assert payload["text"] == "ml/speech: rolled back to v1 (Superseded): a &lt;b&gt; &amp; c -&gt; d"
    section, context = payload["blocks"]
    assert section == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*ml/speech: rolled back to v1 (Superseded)*\na &lt;b&gt; &amp; c -&gt; d"},
    }
    assert context["elements"][0]["text"] == "Warning Superseded · phase RollingBack · 2026-12-02T18:00:05Z"


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_has_a_slack_headline(kind):
    assert compute_slack_payload(_note(kind))["text"].startswith("ml/speech: ")


def test_deliveries_merge_defaults_and_the_spec_once_per_receiver_in_each_format():
    config = NotificationConfig({"ops": OPS, "audit": AUDIT}, (NotificationRule("audit"),))
    rules = (
        NotificationRule("ops", frozenset({EventKind.PROMOTED, EventKind.ROLLED_BACK})),
        NotificationRule("audit", frozenset({EventKind.STEP})),  # already a default: sent once
        NotificationRule("nobody"),  # unknown: skipped here, warned about by the shell
    )
    out = compute_deliveries(config, rules, _note())
    assert [(r.name, sorted(p)) for r, p in out] == [
        ("audit", sorted(compute_json_payload(_note()))),
        ("ops", ["blocks", "text"]),
    ]
    step = compute_deliveries(config, rules, _note(EventKind.STEP))
    assert [r.name for r, _ in step] == ["audit"]  # ops did not ask for steps


def test_unknown_receivers_are_named_with_their_field():
    config = NotificationConfig({"ops": OPS})
    rules = (NotificationRule("ops"), NotificationRule("opps"))
    assert compute_unknown_receivers(rules, config) == (
        "spec.notifications[1].receiver 'opps': no such receiver in the operator's configuration "
        "(known: ops); those rules send nothing"
    )
    assert compute_unknown_receivers(rules[:1], config) == ""


@pytest.mark.parametrize(
    "value, field, words",
    [
        ("ops", "spec.notifications", "must be a list"),
        ([{"receiver": "Ops"}], "spec.notifications[0].receiver", "receiver name"),
        ([{"receiver": "ops", "url": "http://evil"}], "spec.notifications[0]", "unknown field 'url'"),
        ([{"receiver": "ops", "events": []}], "spec.notifications[0].events", "non-empty list"),
        ([{"receiver": "ops", "events": ["promoted", "done"]}], "spec.notifications[0].events[1]", "'done'"),
        ([{"receiver": "ops"}] * 21, "spec.notifications", "at most 20"),
    ],
)
def test_spec_rules_reject_bad_shapes_naming_the_field(value, field, words):
    with pytest.raises(NotificationError) as err:
        parse_rules(value, "spec.notifications")
    assert err.value.field == field and words in err.value.message


def test_parse_spec_carries_the_rules_and_reports_their_errors_as_spec_errors():
    spec = copy.deepcopy(CANARY)
    spec["notifications"] = [{"receiver": "ops", "events": ["promoted", "rolledBack"]}, {"receiver": "audit"}]
    parsed = parse_spec(spec, name="speech", namespace="ml")
    assert parsed.notifications == (
        NotificationRule("ops", frozenset({EventKind.PROMOTED, EventKind.ROLLED_BACK})),
        NotificationRule("audit"),
    )
    assert parse_spec(copy.deepcopy(CANARY), name="speech", namespace="ml").notifications == ()
    spec["notifications"] = [{"receiver": "ops", "url": "http://169.254.169.254/"}]
    with pytest.raises(SpecError) as err:
        parse_spec(spec, name="speech", namespace="ml")
    assert err.value.field == "spec.notifications[0]" and "unknown field 'url'" in err.value.message


def test_operator_config_parses_receivers_and_defaults():
    config = parse_notification_config(
        {
            "receivers": [
                {"name": "ops", "url": "https://hooks.example/T0/B1", "format": "slack", "timeoutSeconds": 2},
                {"name": "audit", "url": "http://[::1]:9000/in?src=mr", "headers": {"Authorization": "Bearer s3"}},
            ],
            "defaultReceivers": [{"receiver": "audit", "events": ["promoted"]}],
        }
    )
    assert config.receivers["ops"] == Receiver("ops", "https://hooks.example/T0/B1", "slack", 2.0)
    assert config.receivers["audit"].headers == {"Authorization": "Bearer s3"}
    assert "s3" not in repr(config), "header values are credentials: never in a repr or log line"
    assert config.defaults == (NotificationRule("audit", frozenset({EventKind.PROMOTED})),)


@pytest.mark.parametrize(
    "doc, field, words",
    [
        ({"receivers": [{"name": "a", "url": "ftp://x"}]}, "receivers[0].url", "http(s)://"),
        ({"receivers": [{"name": "a", "url": "http://user:pw@x/"}]}, "receivers[0].url", "without credentials"),
        ({"receivers": [{"name": "a", "url": "http://x/#f"}]}, "receivers[0].url", "fragment"),
        ({"receivers": [{"name": "a", "url": "http://x", "format": "teams"}]}, "receivers[0].format", "json, slack"),
        ({"receivers": [{"name": "a", "url": "http://x", "timeoutSeconds": 0}]}, "receivers[0].timeoutSeconds", "0.1"),
        ({"receivers": [{"name": "a", "url": "http://x", "timeoutSeconds": "5"}]}, "receivers[0].timeoutSeconds", ""),
        (
            {"receivers": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]},
            "receivers[1].name",
            "twice",
        ),
        ({"receivers": [{"name": "a", "url": "http://x", "headers": {"Host": "y"}}]}, "receivers[0].headers", "Host"),
        (
            {"receivers": [{"name": "a", "url": "http://x", "headers": {"X-Token": "a\r\nX-Evil: 1"}}]},
            "receivers[0].headers.X-Token",
            "value not shown",
        ),
        (
            {"receivers": [{"name": "a", "url": "http://x"}], "defaultReceivers": [{"receiver": "b"}]},
            "defaultReceivers[0].receiver",
            "defined: a",
        ),
        ({"receiver": []}, "notifications", "unknown field 'receiver'"),
    ],
)
def test_operator_config_errors_name_the_field(doc, field, words):
    with pytest.raises(NotificationError) as err:
        parse_notification_config(doc)
    assert err.value.field == field and words in err.value.message
    assert "X-Evil" not in str(err.value)
