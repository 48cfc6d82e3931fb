"""spec.monitoring in the CRD: the schema and parse_spec agree on what is valid, every CEL rule
parse_spec mirrors names the same field, the defaults are the domain's, status.monitoring is
in the status schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rollout_operator.domain import SpecError, parse_spec
from rollout_operator.domain.durations import parse_duration
from rollout_operator.domain.spec import MonitoringSpec
from tests.unit.test_crd_schema import VALIDATOR

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "modelrollout.dev_modelrollouts.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
MONITORING = SCHEMA["properties"]["spec"]["properties"]["monitoring"]
EXAMPLE = yaml.safe_load((REPO / "crds" / "examples" / "monitoring.yaml").read_text())


def mutate(change):
    doc = copy.deepcopy(EXAMPLE)
    change(doc["spec"]["monitoring"])
    return doc


def gate0(**fields):
    return lambda m: m["metrics"][0].update(fields)


# Both the OpenAPI schema and parse_spec reject these.
SCHEMA_REJECTS = {
    "bad interval": lambda m: m.__setitem__("interval", "1 minute"),
    "failureLimit zero": lambda m: m.__setitem__("failureLimit", 0),
    "onNoData typo": lambda m: m.__setitem__("onNoData", "ignore"),
    "no gates": lambda m: m.__setitem__("metrics", []),
    "21 gates": lambda m: m.__setitem__(
        "metrics", [{"name": f"g{i}", "template": "error-rate", "max": 0.1} for i in range(21)]
    ),
    "template typo": gate0(template="unknown_rate"),
    "negative minSamples": lambda m: m.__setitem__("minSamples", -1),
    "rollbackWithin not a duration": lambda m: m.__setitem__("rollbackWithin", "10 minutes"),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_REJECTS))
def test_schema_and_parse_spec_both_reject(name):
    doc = mutate(SCHEMA_REJECTS[name])
    errors = list(VALIDATOR.iter_errors(doc))
    assert errors, "the schema accepts it"
    with pytest.raises(SpecError) as err:
        parse_spec(doc["spec"], name="speech", namespace="default")
    assert err.value.field.startswith("spec.monitoring"), err.value.field


# The CEL rules (checked by the API server) and the field parse_spec names for the same spec.
CEL_CASES = {
    "relativeTo": (gate0(relativeTo="stable", maxIncrease=0.1), "relativeTo", "spec.monitoring.metrics[0].relativeTo"),
    "maxDecrease": (gate0(maxDecrease=0.1), "relativeTo", "spec.monitoring.metrics[0].maxDecrease"),
    "pairwise template": (
        lambda m: m["metrics"].__setitem__(0, {"name": "a", "template": "shadow-agreement", "min": 0.9}),
        "template",
        "spec.monitoring.metrics[0].template",
    ),
    "no threshold": (lambda m: m["metrics"][0].pop("max"), "needs a threshold", "spec.monitoring.metrics[0]"),
    "bound elsewhere": (gate0(bound=0.5), "bound", "spec.monitoring.metrics[0].bound"),
}


def _rules():
    items = MONITORING["properties"]["metrics"]["items"]
    return [r["message"] for r in items["x-kubernetes-validations"]]


@pytest.mark.parametrize("name", sorted(CEL_CASES))
def test_cel_rules_exist_and_parse_spec_names_the_field(name):
    change, words, field = CEL_CASES[name]
    assert any(m.startswith("spec.monitoring.metrics[]") and words in m for m in _rules()), _rules()
    with pytest.raises(SpecError) as err:
        parse_spec(mutate(change)["spec"], name="speech", namespace="default")
    assert err.value.field == field, str(err.value)


def test_rollback_within_has_no_default_and_a_cel_floor_of_one_second():
    field = MONITORING["properties"]["rollbackWithin"]
    assert "default" not in field, "opt-in: unset means monitoring never changes traffic"
    (rule,) = field["x-kubernetes-validations"]
    assert rule["rule"] == "duration(self) >= duration('1s')"
    assert rule["message"].startswith("spec.monitoring.rollbackWithin: ")


def test_every_monitoring_cel_message_names_a_monitoring_field():
    assert all(m.startswith("spec.monitoring.metrics[]") for m in _rules())


def test_the_relative_fields_stay_in_the_schema_so_they_are_refused_not_pruned():
    props = MONITORING["properties"]["metrics"]["items"]["properties"]
    assert {"relativeTo", "maxIncrease", "maxDecrease"} <= set(props)


def test_defaults_match_the_domain():
    p = MONITORING["properties"]
    assert parse_duration(p["interval"]["default"]) == MonitoringSpec.interval
    assert parse_duration(p["window"]["default"]) == MonitoringSpec.window
    assert p["minSamples"]["default"] == MonitoringSpec.min_samples
    assert p["failureLimit"]["default"] == MonitoringSpec.failure_limit
    assert p["onNoData"]["default"] == MonitoringSpec.on_no_data.value


def test_the_example_parses_with_a_per_slice_gate():
    VALIDATOR.validate(EXAMPLE)
    spec = parse_spec(EXAMPLE["spec"], name="speech-monitored", namespace="default")
    assert spec.monitoring is not None and [g.name for g in spec.monitoring.metrics] == [
        "unknown-rate",
        "error-rate",
        "confidence-by-level",
    ]
    assert spec.monitoring.metrics[2].slices is not None


def test_status_monitoring_is_in_the_status_schema():
    status = SCHEMA["properties"]["status"]["properties"]["monitoring"]["properties"]
    assert {"version", "degraded", "reason", "message", "lastCheckAt", "nextCheckAt", "rounds", "metrics"} <= set(
        status
    )
