"""Fuzz tier, operator: property-based fuzzing (Hypothesis) of parse_spec, PromQL rendering and decide().

Inputs are the CRD examples (crds/examples) and the seed corpus (tests/fuzz/corpus/operator, replayed
on every run), mutated at random: keys dropped or added, values replaced by hostile strings, numbers,
wrong types and deep nesting, names and namespaces made hostile. Properties:
  - parse_spec returns a RolloutSpec or raises SpecError naming a field, never anything else;
  - every rendered query parses as PromQL and selects exactly what the same query selects with
    harmless values (a user string can never change a selector: it is one escaped label value);
  - decide() never raises on a parsed spec, over a short walk of ticks.
Bounded by example counts (FUZZ_EXAMPLES, a run takes well under a minute on one core).
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout_operator.domain import Role, RolloutSpec, SpecError, parse_spec
from rollout_operator.domain.gates import compute_query
from rollout_operator.domain.status import RolloutStatus
from rollout_operator.domain.templates import compute_string_values
from tests.support.domain_sim import World, healthy_metrics
from tests.support.walks import METRICS

pytestmark = pytest.mark.fuzz

REPO = Path(__file__).resolve().parents[2]
CORPUS_DIR = REPO / "tests" / "fuzz" / "corpus" / "operator"
EXPECT = "fuzz.modelrollout.dev/expect"
SEEDS = sorted((REPO / "crds" / "examples").glob("*.yaml")) + sorted(CORPUS_DIR.glob("*.yaml"))
SEED_DOCS = [yaml.safe_load(p.read_text()) for p in SEEDS]
FUZZ_EXAMPLES = int(os.environ.get("MODELROLLOUT_FUZZ_EXAMPLES", "2000"))
WALK_EXAMPLES = max(1, FUZZ_EXAMPLES // 10)
OUTCOMES: Counter[str] = Counter()

HOSTILE = st.sampled_from(
    [
        'x"} or vector(1) or y{a="',
        "a}b",
        "a{b",
        '"',
        "\\",
        '\\"',
        "new\nline",
        "\r\n",
        "\x00",
        "\x7f",
        "{{version}}",
        "{{nope}}",
        "}}{{",
        "é",
        "\u2028",
        "",
        " ",
        "-",
        "preview",
        "router",
        "a" * 300,
        "V2",
        "1speech",
        "my.model",
        "X-User: 1",
        "http://u:p@h:1",
        "file:///etc/passwd",
        "30",
        "-1s",
        "0s",
        "500ms",
        "99999999999999999999h",
        "1e309",
        "NaN",
        "sum(rate(x[1m])",
        "x[1m]",
        'sum(x{model="{{model}}"})',
        "sum({{model}})",
        "up",
        "canary-v1",
        "v1--x",
    ]
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), HOSTILE, st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "model",
        "name",
        "version",
        "uri",
        "strategy",
        "canary",
        "blueGreen",
        "shadow",
        "steps",
        "setWeight",
        "setMirror",
        "percent",
        "pause",
        "duration",
        "analysis",
        "checks",
        "promote",
        "interval",
        "window",
        "metrics",
        "template",
        "query",
        "min",
        "max",
        "relativeTo",
        "maxIncrease",
        "maxDecrease",
        "minSamples",
        "slices",
        "label",
        "values",
        "onNoData",
        "prometheus",
        "address",
        "trafficRouting",
        "router",
        "stickyHeader",
        "gatewayAPI",
        "httpRoute",
        "then",
        "mirrorPercent",
        "requests",
        "progressDeadline",
        "paused",
        "historyLimit",
        "failureLimit",
        "consecutiveErrorLimit",
        "server",
        "replicas",
    ]
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a dict value or list item in a document."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, prefix + (i,)))
    return out


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated_specs(draw: st.DrawFn, max_mutations: int = 4, valid_seeds: bool = False) -> tuple[dict, str, str]:
    """(spec, rollout name, namespace): a seed spec after a few random mutations."""
    seeds = [d for d in SEED_DOCS if _expect(d) == "valid"] if valid_seeds else SEED_DOCS
    spec = copy.deepcopy(draw(st.sampled_from(seeds))["spec"])
    for _ in range(draw(st.integers(0, max_mutations))):
        paths = _paths(spec)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "drop", "add", "hostile"]))
        if not path:
            if op == "replace":
                spec = draw(JSON) if draw(st.booleans()) else spec
            continue
        parent = _get(spec, path[:-1])
        if op == "drop" and isinstance(parent, (dict, list)):
            del parent[path[-1]]
        elif op == "add":
            target = _get(spec, path)
            if isinstance(target, dict):
                target[draw(KEYS)] = draw(JSON)
            elif isinstance(target, list):
                target.append(draw(JSON))
        else:
            parent[path[-1]] = draw(HOSTILE if op == "hostile" else JSON)
    # Mostly valid names, so that the mutations of the spec get past metadata checks.
    hostile_names = draw(st.integers(0, 9)) == 0
    name = draw(HOSTILE if hostile_names else st.sampled_from(["speech", "speech-canary", "a" * 55]))
    namespace = draw(HOSTILE if hostile_names else st.sampled_from(["models", "kube-system"]))
    return spec, name, namespace


def _expect(doc: dict) -> str:
    return ((doc.get("metadata") or {}).get("annotations") or {}).get(EXPECT, "valid")


def check_parse(spec: Any, name: str, namespace: str) -> RolloutSpec | None:
    """parse_spec's contract: a spec, or a SpecError naming a field. Anything else fails the test."""
    try:
        parsed = parse_spec(spec, name=name, namespace=namespace)
    except SpecError as err:
        assert err.field == "spec" or err.field.startswith(("spec.", "metadata.name", "metadata.namespace")), err.field
        assert err.message, err.field
        OUTCOMES["parse: SpecError"] += 1
        return None
    OUTCOMES["parse: spec"] += 1
    return parsed


def check_rendering(parsed: RolloutSpec) -> None:
    """Every query, for both roles, parses; its selectors are the harmless rendering's with the
    user's strings in place of the harmless ones (no string added, lost or split)."""
    harmless = RolloutSpec(**{**parsed.__dict__, "name": "r0", "namespace": "n0"})
    harmless = RolloutSpec(
        **{**harmless.__dict__, "model": type(parsed.model)(name="m0", version=parsed.model.version)}
    )
    status = RolloutStatus(stable_version="s0", candidate_version=parsed.model.version)
    swap = {"r0": parsed.name, "n0": parsed.namespace, "m0": parsed.model.name}
    for metric in parsed.metrics:
        for role in (Role.CANDIDATE, Role.STABLE):
            real = compute_query(parsed, status, metric, role)
            plain = compute_query(harmless, status, metric, role)
            for text, base in ((real.query, plain.query), (real.samples_query, plain.samples_query)):
                values = compute_string_values(promql_parser.parse(text))
                expected = [swap.get(v, v) for v in compute_string_values(promql_parser.parse(base))]
                assert values == expected, (text, base)
                OUTCOMES["rendered queries checked"] += 1


def check_decide(spec: dict, name: str, namespace: str) -> None:
    """A short walk: first version up, a new version, ticks under good, bad and failing metrics."""
    world = World(copy.deepcopy(spec))
    world.spec_dict = spec
    world._parsed = (world.generation, parse_spec(spec, name=name, namespace=namespace))
    for metrics in (healthy_metrics, METRICS["bad"], METRICS["error"]):
        world.metrics = metrics
        for _ in range(4):
            world.tick(timedelta(seconds=20))
    OUTCOMES["decide walks"] += 1


def fuzz_summary() -> str:
    """The numbers of inputs tried and their outcomes (printed by tests/fuzz/conftest.py)."""
    return f"operator spec fuzz: {dict(sorted(OUTCOMES.items()))}"


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_corpus_replays_with_its_expected_outcome(path):
    doc = yaml.safe_load(path.read_text())
    expect = _expect(doc)
    try:
        parsed = parse_spec(doc["spec"], name=doc["metadata"]["name"], namespace="models")
    except SpecError as err:
        assert err.field == expect, str(err)
        OUTCOMES["corpus: SpecError"] += 1
        return
    assert expect == "valid", f"expected SpecError at {expect}"
    check_rendering(parsed)
    check_decide(doc["spec"], doc["metadata"]["name"], "models")
    OUTCOMES["corpus: spec"] += 1


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_specs())
def test_parse_and_render_never_raise_anything_but_a_spec_error(case):
    spec, name, namespace = case
    OUTCOMES["parse inputs"] += 1
    parsed = check_parse(spec, name, namespace)
    if parsed is not None:
        check_rendering(parsed)


@settings(
    max_examples=WALK_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(mutated_specs(max_mutations=2, valid_seeds=True))
def test_decide_never_raises_on_a_parsed_spec(case):
    spec, name, namespace = case
    parsed = check_parse(spec, name, namespace)
    if parsed is None:
        return
    OUTCOMES["walk inputs (parsed)"] += 1
    check_decide(spec, name, namespace)
