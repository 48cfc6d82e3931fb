"""Hostile and careless specs: every user string that reaches PromQL, an object name or a header is
validated at parse time AND escaped when rendered, so no name can change what a gate queries."""

import copy

import promql_parser
import pytest

from rollout_operator.domain import Role, SpecError, parse_spec, render
from rollout_operator.domain.gates import compute_query
from rollout_operator.domain.names import compute_preview_name, compute_version_name
from rollout_operator.domain.status import RolloutStatus
from rollout_operator.domain.templates import TEMPLATES, check_query, compute_string_values, escape_label_value
from tests.support.domain_sim import CANARY

pytestmark = pytest.mark.unit

HOSTILE = [
    'evil"} or vector(1) or x{a="',
    "a}b",
    "back\\slash",
    "new\nline",
    "tab\there",
    "q'uote",
    "\x00nul",
    "\u2028sep",
    "{{version}}",
    '"',
    "\\",
    "é",
]
# bound: slow-requests' template argument (a bucket edge's le value).
VARS = dict(namespace="ns", rollout="r", model="m", version="v2", candidate="v2", stable="v1", window="1m", bound="0.5")


def parse(spec, name="speech"):
    return parse_spec(spec, name=name, namespace="models")


def changed(path, value):
    spec = copy.deepcopy(CANARY)
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("var", ["namespace", "rollout", "model", "version", "candidate", "stable"])
def test_a_hostile_value_stays_one_label_value_in_every_template(name, hostile, var):
    t = TEMPLATES[name]
    for text in (t.query, t.samples):
        if "{{" + var + "}}" not in text:
            continue
        out = render(text, {**VARS, var: hostile})
        expr = promql_parser.parse(out)  # still parses: the value did not end its string
        values = compute_string_values(expr)
        assert hostile in values, (out, values)
        # ...and selects exactly what the honest query selects, with the value swapped.
        honest = compute_string_values(promql_parser.parse(render(text, VARS)))
        assert [hostile if v == VARS[var] else v for v in honest] == values


def test_escape_label_value_uses_promql_string_escapes():
    assert escape_label_value('a"b\\c\nd\te\x01') == 'a\\"b\\\\c\\nd\\te\\x01'
    for hostile in HOSTILE:
        (value,) = compute_string_values(promql_parser.parse(f'x{{a="{escape_label_value(hostile)}"}}'))
        assert value == hostile


def test_window_is_not_escaped_it_is_a_duration_the_operator_formats():
    assert render("rate(x[{{window}}])", {"window": "1m"}) == "rate(x[1m])"


@pytest.mark.parametrize(
    "path, value, field, expected",
    [
        (("model", "name"), 'speech"}', "spec.model.name", "letters, digits, '-', '_' and '.'"),
        (("model", "name"), "a}b", "spec.model.name", "letters, digits"),
        (("model", "name"), "-lead", "spec.model.name", "starting and ending with a letter or digit"),
        (("model", "version"), 'v1"', "spec.model.version", "lowercase letters, digits and '-'"),
        (("model", "version"), "preview", "spec.model.version", "speech-preview is the blue-green preview Service"),
        (
            ("trafficRouting",),
            {"router": {"stickyHeader": "X-User: 1"}},
            "spec.trafficRouting.router.stickyHeader",
            "RFC 7230 token",
        ),
        (
            ("trafficRouting",),
            {"router": {"stickyHeader": "x\r\nevil"}},
            "spec.trafficRouting.router.stickyHeader",
            "RFC 7230 token",
        ),
        (("analysis", "interval"), "500ms", "spec.analysis.interval", "must be at least 1s, got '500ms'"),
        (("analysis", "interval"), "0s", "spec.analysis.interval", "must be at least 1s"),
        (("analysis", "window"), "10ms", "spec.analysis.window", "must be at least 1s"),
        (("progressDeadline",), "99999999999999999999h", "spec.progressDeadline", "at most 8784h"),
        (
            ("analysis", "prometheus"),
            {"address": "http://user:pw@prom:9090"},
            "spec.analysis.prometheus.address",
            "without credentials",
        ),
        (
            ("analysis", "prometheus"),
            {"address": "file:///etc/passwd"},
            "spec.analysis.prometheus.address",
            "http(s)://host",
        ),
        (
            ("analysis", "prometheus"),
            {"address": "http://prom:9090/?x=1"},
            "spec.analysis.prometheus.address",
            "query or fragment",
        ),
        (
            ("analysis", "metrics"),
            [{"name": "q", "query": "sum(rate(x[1m])", "max": 1}],
            "spec.analysis.metrics[0].query",
            "is not valid PromQL: unclosed left parenthesis",
        ),
        (
            ("analysis", "metrics"),
            [{"name": "q", "query": 'x{a="b}', "max": 1}],
            "spec.analysis.metrics[0].query",
            "is not valid PromQL",
        ),
        (
            ("analysis", "metrics"),
            [{"name": "q", "query": "nosuchfn(x)", "max": 1}],
            "spec.analysis.metrics[0].query",
            "unknown function",
        ),
        (
            ("analysis", "metrics"),
            [{"name": "q", "query": "x[{{window}}]", "max": 1}],
            "spec.analysis.metrics[0].query",
            "not a range vector",
        ),
        (
            ("analysis", "metrics"),
            [{"name": "q", "query": "sum(x{model={{model}}})", "max": 1}],
            "spec.analysis.metrics[0].query",
            "is not valid PromQL",
        ),
        (
            ("analysis", "metrics"),
            [{"name": "q", "query": "sum({{model}}_total)", "max": 1}],
            "spec.analysis.metrics[0].query",
            "{{model}} must be inside a double-quoted label value",
        ),
        (
            ("analysis", "metrics"),
            [{"name": "q", "query": "sum(x{model=`{{model}}`})", "max": 1}],
            "spec.analysis.metrics[0].query",
            "{{model}} must be inside a double-quoted label value",
        ),
        (
            ("trafficRouting",),
            {"gatewayAPI": {"httpRoute": "../../../api/v1/namespaces/kube-system/secrets/x"}},
            "spec.trafficRouting.gatewayAPI.httpRoute",
            "must be a Kubernetes object name",
        ),
        (
            ("trafficRouting",),
            {"gatewayAPI": {"httpRoute": "route?dryRun=All"}},
            "spec.trafficRouting.gatewayAPI.httpRoute",
            "must be a Kubernetes object name",
        ),
        (
            ("analysis", "metrics"),
            [],
            "spec.strategy.canary.steps[3].analysis",
            "needs spec.analysis.metrics: with no metric it would pass without checking anything",
        ),
    ],
)
def test_careless_or_hostile_fields_are_rejected_naming_the_field(path, value, field, expected):
    with pytest.raises(SpecError) as err:
        parse(changed(path, value))
    assert err.value.field == field, str(err.value)
    assert expected in err.value.message, err.value.message


def test_an_analysis_step_without_an_analysis_section_is_rejected():
    spec = copy.deepcopy(CANARY)
    del spec["analysis"]
    with pytest.raises(SpecError) as err:
        parse(spec)
    assert err.value.field == "spec.strategy.canary.steps[3].analysis"


def test_a_shadow_without_metrics_is_rejected():
    spec = copy.deepcopy(CANARY)
    del spec["analysis"]
    spec["strategy"] = {"shadow": {"duration": "5m"}}
    with pytest.raises(SpecError) as err:
        parse(spec)
    assert err.value.field == "spec.strategy.shadow" and "shadow-agreement" in err.value.message


def test_blue_green_analysis_durations_without_metrics_are_rejected_a_plain_switch_is_not():
    spec = copy.deepcopy(CANARY)
    del spec["analysis"]
    spec["strategy"] = {"blueGreen": {"postPromotionDuration": "5m"}}
    with pytest.raises(SpecError) as err:
        parse(spec)
    assert err.value.field == "spec.strategy.blueGreen.postPromotionDuration"
    spec["strategy"] = {"blueGreen": {}}
    assert parse(spec).strategy.kind == "blueGreen"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("my.model", "DNS-1035 label"),
        ("1speech", "starting with a letter"),
        ("a" * 56, "at most 55"),
        ("Speech", "lowercase"),
    ],
)
def test_rollout_names_that_cannot_name_a_service_are_rejected(name, expected):
    with pytest.raises(SpecError) as err:
        parse(CANARY, name=name)
    assert err.value.field == "metadata.name" and expected in err.value.message


@pytest.mark.parametrize("good", ["speech_commands", "Speech.v2", "a", "m-1"])
def test_ordinary_model_names_still_parse(good):
    assert parse(changed(("model", "name"), good)).model.name == good


@pytest.mark.parametrize("header", ["X-User", "x-session-id", "X_Trace.Id"])
def test_ordinary_header_names_still_parse(header):
    s = parse(changed(("trafficRouting",), {"router": {"stickyHeader": header}}))
    assert s.traffic_routing.router.sticky_header == header


def test_user_query_placeholders_in_double_quotes_parse_and_render_escaped():
    query = 'sum(rate(speech_requests_total{model="{{model}}",version="{{version}}"}[{{window}}]))'
    check_query(query)
    spec = parse(changed(("analysis", "metrics"), [{"name": "q", "query": query, "max": 1}]))
    status = RolloutStatus(stable_version="v1", candidate_version="v2")
    request = compute_query(spec, status, spec.metrics[0], Role.CANDIDATE)
    assert request.query == 'sum(rate(speech_requests_total{model="speech-commands",version="v2"}[1m]))'


def test_the_blue_green_preview_name_can_no_longer_be_a_version_name():
    # Before: version "preview" named its Service speech-preview - the preview Service's name.
    assert compute_version_name("speech", "preview") == compute_preview_name("speech")
    with pytest.raises(SpecError):
        parse(changed(("model", "version"), "preview"))
