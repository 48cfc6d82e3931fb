"""The CRD in crds/ against its examples and malformed specs: the OpenAPI schema (jsonschema)
and parse_spec agree on what is valid, and every CEL rule has a field-naming message."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from rollout_operator.domain import SpecError, parse_spec

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "modelrollout.dev_modelrollouts.yaml"
EXAMPLES = sorted((REPO / "crds" / "examples").glob("*.yaml"))


def load_crd() -> dict:
    return yaml.safe_load(CRD_PATH.read_text())


def to_json_schema(node):
    """OpenAPI v3.0 (as Kubernetes uses it) -> JSON Schema: `nullable` becomes a null type."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def schema() -> dict:
    version = load_crd()["spec"]["versions"][0]
    return to_json_schema(version["schema"]["openAPIV3Schema"])


VALIDATOR = jsonschema.Draft7Validator(schema())


def cel_rules(node, path="$"):
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule
        for key, value in node.items():
            yield from cel_rules(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from cel_rules(item, path)


def test_crd_identity_matches_the_project_contract():
    crd = load_crd()
    assert crd["metadata"]["name"] == "modelrollouts.modelrollout.dev"
    spec = crd["spec"]
    assert spec["group"] == "modelrollout.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelRollout" and spec["names"]["shortNames"] == ["mro"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Strategy", "Stable", "Candidate", "Weight", "Step", "Verdict", "Age"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_schema_and_parses(path):
    doc = yaml.safe_load(path.read_text())
    VALIDATOR.validate(doc)
    spec = parse_spec(doc["spec"], name=doc["metadata"]["name"], namespace="default")
    assert spec.model.version == doc["spec"]["model"]["version"]
    assert spec.steps, "every strategy expands into steps"


def test_all_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {
        "canary",
        "canary-sequential",
        "shadow-then-canary",
        "blue-green",
        "gateway-api",
        "minimal",
    }


def test_every_cel_rule_has_a_message_naming_a_spec_field():
    rules = list(cel_rules(load_crd()))
    assert len(rules) >= 12
    for path, rule in rules:
        assert rule["message"].startswith(("spec.", "metadata.name: ")), (path, rule)
        assert "rule" in rule and rule["rule"].strip()


BASE = yaml.safe_load((REPO / "crds" / "examples" / "canary.yaml").read_text())


def mutate(change):
    doc = copy.deepcopy(BASE)
    change(doc["spec"])
    return doc


SCHEMA_REJECTS = {
    "weight above 100": lambda s: s["strategy"]["canary"]["steps"].__setitem__(0, {"setWeight": 150}),
    "bad duration": lambda s: s["strategy"]["canary"]["steps"].__setitem__(1, {"pause": {"duration": "1 minute"}}),
    "bad interval": lambda s: s["analysis"].__setitem__("interval", "30"),
    "unknown template": lambda s: s["analysis"]["metrics"][0].__setitem__("template", "p95"),
    "onNoData typo": lambda s: s["analysis"].__setitem__("onNoData", "ignore"),
    "version with capitals": lambda s: s["model"].__setitem__("version", "V2"),
    "replicas zero": lambda s: s["server"].__setitem__("replicas", 0),
    "missing model": lambda s: s.pop("model"),
    "negative maxIncrease": lambda s: s["analysis"]["metrics"][2].__setitem__("maxIncrease", -1),
    # Hostile strings that would reach PromQL, a header or an outside call.
    "model name with a quote": lambda s: s["model"].__setitem__("name", 'speech"} or vector(1)'),
    "model name with a brace": lambda s: s["model"].__setitem__("name", "a}b"),
    "sticky header not a token": lambda s: s["trafficRouting"].__setitem__("router", {"stickyHeader": "X-User: evil"}),
    "prometheus address with credentials": lambda s: s["analysis"].__setitem__(
        "prometheus", {"address": "http://u:p@prom:9090"}
    ),
    "prometheus address not http": lambda s: s["analysis"].__setitem__("prometheus", {"address": "gopher://prom:70"}),
    "httpRoute that is a path": lambda s: s.__setitem__(
        "trafficRouting", {"gatewayAPI": {"httpRoute": "../../secrets/x"}}
    ),
    # What reaches pods (pod_policy.py): shapes the schema can check without the operator's flags.
    "image with a space": lambda s: s["server"].__setitem__("image", "registry.example/m:1 --privileged"),
    "router image uppercase": lambda s: s["trafficRouting"]["router"].__setitem__("image", "Evil/router"),
    "env name with a dash": lambda s: s["server"].__setitem__("env", [{"name": "MY-VAR", "value": "1"}]),
    "arg as two words": lambda s: s["server"].__setitem__("args", ["--max-batch", "8"]),
    "arg with a newline": lambda s: s["server"].__setitem__("args", ["--max-batch=8\n--port=1"]),
    # Sequential mode (issue 14).
    "analysis mode typo": lambda s: s["analysis"].__setitem__("mode", "sequental"),
    "falsePromotionRate above 0.5": lambda s: s["analysis"].__setitem__("falsePromotionRate", 0.6),
    "falseRollbackRate negative": lambda s: s["analysis"].__setitem__("falseRollbackRate", -0.01),
    "maxDuration not a duration": lambda s: s["analysis"].__setitem__("maxDuration", "ten minutes"),
    "slow-requests bound between bucket edges": lambda s: s["analysis"]["metrics"].__setitem__(
        1, {"name": "slow", "template": "slow-requests", "bound": 0.3, "max": 0.05}
    ),
    # Per-slice gates (issue 15).
    "slices label typo": lambda s: s["analysis"]["metrics"][2].__setitem__("slices", {"label": "speaker"}),
    "slice value with capitals": lambda s: s["analysis"]["metrics"][2].__setitem__("slices", {"values": ["Young"]}),
    "slice value with a quote": lambda s: s["analysis"]["metrics"][2].__setitem__("slices", {"values": ['a"|.*']}),
    "slices max above 32": lambda s: s["analysis"]["metrics"][2].__setitem__("slices", {"max": 33}),
    "slices values empty": lambda s: s["analysis"]["metrics"][2].__setitem__("slices", {"values": []}),
    "accuracy template typo": lambda s: s["analysis"]["metrics"][0].__setitem__("template", "accurracy"),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_REJECTS))
def test_schema_and_parse_spec_both_reject(name):
    doc = mutate(SCHEMA_REJECTS[name])
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(doc)
    with pytest.raises(SpecError) as err:
        parse_spec(doc["spec"], name="speech", namespace="default")
    assert err.value.field.startswith("spec.")


# What the CEL rules catch (the schema alone cannot); parse_spec must catch the same, naming
# the field the CEL message names. The API server's answers are checked in integration tests.
CEL_CASES = {
    "two strategies": (lambda s: s["strategy"].__setitem__("blueGreen", {}), "spec.strategy"),
    "no strategy": (lambda s: s["strategy"].pop("canary"), "spec.strategy"),
    "two kinds in a step": (
        lambda s: s["strategy"]["canary"]["steps"].__setitem__(0, {"setWeight": 10, "pause": {}}),
        "spec.strategy.canary.steps[0]",
    ),
    "decreasing weight": (
        lambda s: s["strategy"]["canary"]["steps"].__setitem__(2, {"setWeight": 5}),
        "spec.strategy.canary.steps[2].setWeight",
    ),
    "promote not last": (
        lambda s: s["strategy"]["canary"]["steps"].insert(0, {"promote": {}}),
        "spec.strategy.canary.steps[0].promote",
    ),
    "min above max": (lambda s: s["analysis"]["metrics"][0].update(min=0.5, max=0.1), "spec.analysis.metrics[0].min"),
    "relativeTo without delta": (
        lambda s: s["analysis"]["metrics"][2].pop("maxIncrease"),
        "spec.analysis.metrics[2].relativeTo",
    ),
    "delta without relativeTo": (
        lambda s: s["analysis"]["metrics"][2].pop("relativeTo"),
        "spec.analysis.metrics[2].relativeTo",
    ),
    "template and query": (lambda s: s["analysis"]["metrics"][0].update(query="up"), "spec.analysis.metrics[0]"),
    "no threshold": (lambda s: s["analysis"]["metrics"][0].pop("max"), "spec.analysis.metrics[0]"),
    "two routers": (lambda s: s["trafficRouting"].__setitem__("gatewayAPI", {"httpRoute": "r"}), "spec.trafficRouting"),
    "duration and checks": (
        lambda s: s["strategy"]["canary"]["steps"].__setitem__(3, {"analysis": {"checks": 2, "duration": "1m"}}),
        "spec.strategy.canary.steps[3].analysis",
    ),
    "shadow canary missing": (
        lambda s: s.__setitem__("strategy", {"shadow": {"then": "canary"}}),
        "spec.strategy.shadow.canary",
    ),
    "version named preview": (lambda s: s["model"].__setitem__("version", "preview"), "spec.model.version"),
    "interval below 1s": (lambda s: s["analysis"].__setitem__("interval", "500ms"), "spec.analysis.interval"),
    "window below 1s": (lambda s: s["analysis"].__setitem__("window", "999ms"), "spec.analysis.window"),
    "analysis step without metrics": (
        lambda s: s["analysis"].__setitem__("metrics", []),
        "spec.strategy.canary.steps[3].analysis",
    ),
    "shadow without metrics": (
        lambda s: (s.pop("analysis"), s.__setitem__("strategy", {"shadow": {}})),
        "spec.strategy.shadow",
    ),
    "blue-green analysis without metrics": (
        lambda s: (s.pop("analysis"), s.__setitem__("strategy", {"blueGreen": {"previewDuration": "1m"}})),
        "spec.strategy.blueGreen.previewDuration",
    ),
    "reserved env prefix": (
        lambda s: s["server"].__setitem__("env", [{"name": "LD_PRELOAD", "value": "/x.so"}]),
        "spec.server.env[0].name",
    ),
    "reserved env prefix, lowercase": (
        lambda s: s["server"].__setitem__("env", [{"name": "pythonpath", "value": "/x"}]),
        "spec.server.env[0].name",
    ),
    "env value and valueFrom": (
        lambda s: s["server"].__setitem__(
            "env", [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        ),
        "spec.server.env[0].valueFrom",
    ),
    "falsePromotionRate zero": (
        lambda s: s["analysis"].__setitem__("falsePromotionRate", 0),
        "spec.analysis.falsePromotionRate",
    ),
    "falseRollbackRate zero": (
        lambda s: s["analysis"].__setitem__("falseRollbackRate", 0.0),
        "spec.analysis.falseRollbackRate",
    ),
    "maxDuration below 1s": (lambda s: s["analysis"].__setitem__("maxDuration", "500ms"), "spec.analysis.maxDuration"),
    "sequential with a latency gate": (lambda s: _sequential(s), "spec.analysis.metrics[1].template"),
    "sequential with a threshold above 1": (
        lambda s: (
            _sequential(s),
            s["analysis"].__setitem__("metrics", [{"name": "e", "template": "error-rate", "max": 2}]),
        ),
        "spec.analysis.metrics[0].max",
    ),
    "sequential with checks": (
        lambda s: (_sequential(s), s["analysis"].__setitem__("metrics", [s["analysis"]["metrics"][0]])),
        "spec.strategy.canary.steps[3].analysis.checks",
    ),
    "bound on another template": (
        lambda s: s["analysis"]["metrics"][0].__setitem__("bound", 0.5),
        "spec.analysis.metrics[0].bound",
    ),
    "slices on a template without the label": (
        lambda s: s["analysis"]["metrics"][1].__setitem__("slices", {}),
        "spec.analysis.metrics[1].slices",
    ),
    "slices by a band on error-rate": (
        lambda s: s["analysis"]["metrics"][0].__setitem__("slices", {"label": "level_band"}),
        "spec.analysis.metrics[0].slices.label",
    ),
    "slices with values and max": (
        lambda s: s["analysis"]["metrics"][2].__setitem__("slices", {"values": ["young"], "max": 4}),
        "spec.analysis.metrics[2].slices.max",
    ),
    "slow-requests without a bound": (
        lambda s: s["analysis"]["metrics"].__setitem__(1, {"name": "slow", "template": "slow-requests", "max": 0.05}),
        "spec.analysis.metrics[1].bound",
    ),
}


def _sequential(spec):
    spec["analysis"]["mode"] = "sequential"


@pytest.mark.parametrize("name", sorted(CEL_CASES))
def test_cel_only_rules_are_also_enforced_by_parse_spec(name):
    change, field = CEL_CASES[name]
    doc = mutate(change)
    with pytest.raises(SpecError) as err:
        parse_spec(doc["spec"], name="speech", namespace="default")
    assert err.value.field == field, str(err.value)


def test_duration_pattern_is_the_same_in_schema_and_domain():
    from rollout_operator.domain.durations import DURATION_PATTERN

    text = CRD_PATH.read_text()
    assert text.count(f"pattern: '{DURATION_PATTERN}'") >= 10


def test_schema_defaults_match_the_domain_defaults():
    from rollout_operator.domain.durations import parse_duration

    props = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    parsed = parse_spec(
        {
            "model": {"name": "m", "version": "v1"},
            "strategy": {"canary": {"steps": [{"setWeight": 10}]}},
            "analysis": {},
        },
        name="x",
        namespace="y",
    )
    a = props["analysis"]["properties"]
    analysis = parsed.analysis
    assert analysis is not None, "an empty analysis block parses to the defaults"
    assert a["minSamples"]["default"] == analysis.min_samples
    assert a["failureLimit"]["default"] == analysis.failure_limit
    assert a["inconclusiveLimit"]["default"] == analysis.inconclusive_limit
    assert a["consecutiveErrorLimit"]["default"] == analysis.consecutive_error_limit
    assert a["onNoData"]["default"] == analysis.on_no_data.value
    assert a["mode"]["default"] == analysis.mode.value
    assert a["falsePromotionRate"]["default"] == analysis.false_promotion_rate
    assert a["falseRollbackRate"]["default"] == analysis.false_rollback_rate
    assert parse_duration(a["maxDuration"]["default"]) == analysis.max_duration
    # No image defaults in the schema: the API server would store them and the operator's
    # --model-server-image / --router-image could never apply (issue 11).
    assert "default" not in props["server"]["properties"]["image"]
    assert "default" not in props["trafficRouting"]["properties"]["router"]["properties"]["image"]
    assert props["historyLimit"]["default"] == parsed.history_limit


def test_sequential_template_rule_matches_the_count_templates():
    from rollout_operator.domain.sequential_gates import SEQUENTIAL_TEMPLATES

    analysis = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "analysis"
    ]
    (rule,) = [r for r in analysis["x-kubernetes-validations"] if "metrics[].template" in r["message"]]
    listed = rule["rule"].split("m.template in [")[1].split("]")[0]
    assert [name.strip(" '") for name in listed.split(",")] == list(SEQUENTIAL_TEMPLATES)


def test_template_enum_and_pairwise_rule_match_the_built_in_templates():
    from rollout_operator.domain.templates import PAIRWISE_TEMPLATES, TEMPLATES

    metric = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "analysis"
    ]["properties"]["metrics"]["items"]
    assert metric["properties"]["template"]["enum"] == list(TEMPLATES)
    (pairwise,) = [r for r in metric["x-kubernetes-validations"] if "relativeTo: cannot be used" in r["message"]]
    for name in PAIRWISE_TEMPLATES:
        assert f"'{name}'" in pairwise["rule"] and name in pairwise["message"]


def test_the_cel_rules_for_the_new_limits_exist():
    """The API server rejects these at admission (integration tests check its answers); here:
    the rules are in the CRD with the messages parse_spec uses."""
    messages = [rule["message"] for _, rule in cel_rules(load_crd())]
    for needle in (
        "spec.model.version: must not be 'preview'",
        "spec.analysis.interval: must be at least 1s",
        "spec.analysis.window: must be at least 1s",
        "metadata.name: must be a DNS-1035 label",
        "spec.strategy.canary.steps[].analysis: needs spec.analysis.metrics",
        "spec.strategy.shadow: needs spec.analysis.metrics",
        "spec.analysis.falsePromotionRate: must be in (0, 0.5]",
        "spec.analysis.metrics[].template: with mode sequential",
        "spec.strategy.canary.steps[].analysis.checks: not used with spec.analysis.mode sequential",
    ):
        assert any(m.startswith(needle) for m in messages), needle


def test_slow_requests_with_a_bucket_edge_validates_and_parses_in_both_modes():
    for mode in ("threshold", "sequential"):

        def change(s, mode=mode):
            s["analysis"]["mode"] = mode
            s["analysis"]["metrics"] = [{"name": "slow", "template": "slow-requests", "bound": 0.25, "max": 0.05}]
            s["strategy"]["canary"]["steps"][3] = {"analysis": {"duration": "5m"}}

        doc = mutate(change)
        VALIDATOR.validate(doc)
        (metric,) = parse_spec(doc["spec"], name="speech", namespace="default").metrics
        assert metric.template == "slow-requests" and metric.bound == 0.25


def test_the_bound_enum_and_cel_rule_match_the_latency_bounds():
    from rollout_operator.domain.templates import LATENCY_BOUNDS

    metric = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "analysis"
    ]["properties"]["metrics"]["items"]
    assert metric["properties"]["bound"]["enum"] == list(LATENCY_BOUNDS)
    (rule,) = [
        r for r in metric["x-kubernetes-validations"] if r["message"].startswith("spec.analysis.metrics[].bound:")
    ]
    assert "'slow-requests'" in rule["rule"] and rule["fieldPath"] == ".bound"


def test_per_slice_gates_validate_and_parse_in_both_modes():
    for mode in ("threshold", "sequential"):

        def change(s, mode=mode):
            s["analysis"]["mode"] = mode
            s["analysis"]["metrics"] = [
                {"name": "acc", "template": "accuracy", "relativeTo": "stable", "maxDecrease": 0.05}
                | {"slices": {"values": ["clean", "young"]}},
                {"name": "unk", "template": "unknown-rate", "max": 0.3, "slices": {"label": "level_band", "max": 4}},
            ]
            s["strategy"]["canary"]["steps"][3] = {"analysis": {"duration": "5m"}}

        doc = mutate(change)
        VALIDATOR.validate(doc)
        acc, unk = parse_spec(doc["spec"], name="speech", namespace="default").metrics
        assert acc.slices is not None and unk.slices is not None
        assert acc.slices.values == ("clean", "young") and (unk.slices.label, unk.slices.max) == ("level_band", 4)


def test_the_slice_cel_rules_match_the_templates_slice_labels():
    from rollout_operator.domain.slices import SLICE_SUPPORT

    metric = load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "analysis"
    ]["properties"]["metrics"]["items"]
    rules = {
        r["fieldPath"]: r["rule"] for r in metric["x-kubernetes-validations"] if "slices" in r.get("fieldPath", "")
    }
    listed = rules[".slices"].split(" in [")[1].rstrip("]")
    assert [name.strip(" '") for name in listed.split(",")] == list(SLICE_SUPPORT)
    bands = rules[".slices.label"].split(" in [")[1].rstrip("]")
    all_three = [t for t, labels in SLICE_SUPPORT.items() if len(labels) == 3]
    assert [name.strip(" '") for name in bands.split(",")] == all_three
    slices = metric["properties"]["slices"]["properties"]
    assert slices["label"]["enum"] == ["slice", "level_band", "duration_band"]
    assert slices["values"]["items"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,31}$"
