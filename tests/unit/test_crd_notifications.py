"""spec.notifications in the CRD: receiver names and event kinds only (no field that could carry
an address), the same names and kinds parse_spec accepts, its bounds."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from rollout_operator.domain import SpecError, parse_spec
from rollout_operator.domain.notifications import EVENT_KINDS, MAX_RULES, NAME_PATTERN
from tests.support.domain_sim import CANARY

pytestmark = pytest.mark.unit

CRD = Path(__file__).resolve().parents[2] / "crds" / "modelrollout.dev_modelrollouts.yaml"
NOTIFICATIONS = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "spec"
]["properties"]["notifications"]


def _schema_errors(value) -> list[str]:
    schema = {k: v for k, v in NOTIFICATIONS.items() if not k.startswith("x-kubernetes")}
    items = dict(schema["items"])
    items["properties"] = {
        k: {kk: vv for kk, vv in v.items() if not kk.startswith("x-kubernetes")} for k, v in items["properties"].items()
    }
    schema["items"] = items
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(value)]


def test_the_schema_holds_names_and_kinds_only_and_matches_the_domain():
    items = NOTIFICATIONS["items"]
    assert set(items["properties"]) == {"receiver", "events"}, "nothing that could carry a URL or host"
    assert "x-kubernetes-preserve-unknown-fields" not in items, "unknown fields must be pruned"
    assert items["properties"]["receiver"]["pattern"] == NAME_PATTERN
    assert tuple(items["properties"]["events"]["items"]["enum"]) == EVENT_KINDS
    assert NOTIFICATIONS["maxItems"] == MAX_RULES


@pytest.mark.parametrize(
    "value",
    [
        [{"receiver": "Team_Chat"}],
        [{"receiver": "ops", "events": ["deployed"]}],
        [{"receiver": "ops", "events": []}],
        [{"events": ["promoted"]}],
        [{"receiver": "ops"}] * (MAX_RULES + 1),
    ],
)
def test_schema_and_parse_spec_both_reject(value):
    assert _schema_errors(value)
    spec = copy.deepcopy(CANARY)
    spec["notifications"] = value
    with pytest.raises(SpecError) as err:
        parse_spec(spec, name="speech", namespace="ml")
    assert err.value.field.startswith("spec.notifications")


def test_schema_and_parse_spec_both_accept():
    value = [{"receiver": "team-chat", "events": ["promoted", "rolledBack", "degraded"]}, {"receiver": "audit"}]
    assert _schema_errors(value) == []
    spec = copy.deepcopy(CANARY)
    spec["notifications"] = value
    assert len(parse_spec(spec, name="speech", namespace="ml").notifications) == 2
