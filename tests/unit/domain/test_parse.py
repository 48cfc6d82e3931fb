"""parse_spec: defaults, preset expansion, and errors that name the field and what was expected."""

import copy
from datetime import timedelta

import pytest

from rollout_operator.domain import (
    Analysis,
    BlueGreenStrategy,
    OnNoData,
    Pause,
    Promote,
    SetMirror,
    SetWeight,
    SpecError,
    Stop,
    parse_spec,
)
from tests.support.domain_sim import CANARY

pytestmark = pytest.mark.unit


def parse(spec, name="speech"):
    return parse_spec(spec, name=name, namespace="models")


def changed(**top):
    spec = copy.deepcopy(CANARY)
    spec.update(top)
    return spec


def test_defaults_fill_everything_the_crd_defaults():
    s = parse({"model": {"name": "m", "version": "v1"}, "strategy": {"canary": {"steps": [{"setWeight": 10}]}}})
    assert s.server.image == "modelrollout/model-server:dev" and s.server.replicas == 1
    assert s.traffic_routing.provider == "router"
    assert s.traffic_routing.router.image == "modelrollout/router:dev"
    assert s.progress_deadline == timedelta(minutes=10)
    assert s.analysis is None and s.metrics == ()
    assert s.history_limit == 10 and s.paused is False
    assert s.requests.promote == 0


def test_canary_preset_appends_the_implied_promote():
    s = parse(CANARY)
    assert s.steps == (SetWeight(10), Pause(timedelta(minutes=1)), SetWeight(50), Analysis(checks=2), Promote())
    explicit = changed(strategy={"canary": {"steps": [{"setWeight": 100}, {"promote": {}}]}})
    assert parse(explicit).steps == (SetWeight(100), Promote())


def test_blue_green_preset():
    s = parse(
        changed(
            strategy={
                "blueGreen": {
                    "autoPromote": False,
                    "previewDuration": "2m",
                    "postPromotionDuration": "3m",
                    "scaleDownDelay": "45s",
                }
            }
        )
    )
    assert isinstance(s.strategy, BlueGreenStrategy)
    assert s.strategy.scale_down_delay == timedelta(seconds=45)
    assert s.steps == (
        Analysis(duration=timedelta(minutes=2)),
        Pause(),
        SetWeight(100),
        Analysis(duration=timedelta(minutes=3)),
        Promote(),
    )
    auto = parse(changed(strategy={"blueGreen": {}}))
    assert auto.steps == (Analysis(), SetWeight(100), Analysis(), Promote())


@pytest.mark.parametrize(
    "then, tail",
    [
        ("promote", (Promote(),)),
        ("stop", (Stop(),)),
        ("canary", (SetMirror(0), SetWeight(30), Promote())),
    ],
)
def test_shadow_preset(then, tail):
    body = {"mirrorPercent": 40, "duration": "3m", "then": then}
    if then == "canary":
        body["canary"] = {"steps": [{"setWeight": 30}]}
    s = parse(changed(strategy={"shadow": body}))
    assert s.steps == (SetMirror(40), Analysis(duration=timedelta(minutes=3)), *tail)


def test_analysis_fields_parse():
    s = parse(CANARY)
    a = s.analysis
    assert a.interval == timedelta(seconds=30) and a.window == timedelta(minutes=1)
    assert a.on_no_data is OnNoData.HOLD and a.failure_limit == 2
    assert [m.name for m in a.metrics] == ["error-rate", "p99-latency"]


@pytest.mark.parametrize(
    "spec, field, expected",
    [
        ({}, "spec.model", "is required"),
        (
            {"model": {"name": "m"}, "strategy": {"canary": {"steps": [{"setWeight": 1}]}}},
            "spec.model.version",
            "is required",
        ),
        (
            {"model": {"name": "m", "version": "V_2"}, "strategy": {"canary": {"steps": [{"setWeight": 1}]}}},
            "spec.model.version",
            "lowercase letters, digits and '-'",
        ),
        (changed(server={"replicas": "two"}), "spec.server.replicas", "must be an integer in 1..100, got 'two'"),
        (changed(server={"replicas": True}), "spec.server.replicas", "must be an integer"),
        (changed(server={"args": ["--x", 3]}), "spec.server.args[1]", "must be a string"),
        (changed(server={"env": [{"value": "1"}]}), "spec.server.env[0]", "string name"),
        (changed(strategy={}), "spec.strategy", "exactly one strategy of canary, blueGreen, shadow, got none"),
        (changed(strategy={"canary": {"steps": []}}), "spec.strategy.canary.steps", "at least one step"),
        (
            changed(strategy={"canary": {"steps": [{"setWeight": 101}]}}),
            "spec.strategy.canary.steps[0].setWeight",
            "must be an integer in 0..100, got 101",
        ),
        (
            changed(strategy={"canary": {"steps": ["setWeight 10"]}}),
            "spec.strategy.canary.steps[0]",
            "must be an object",
        ),
        (changed(strategy={"canary": {"steps": [{}]}}), "spec.strategy.canary.steps[0]", "exactly one step kind"),
        (
            changed(strategy={"canary": {"steps": [{"pause": {"duration": "5 min"}}]}}),
            "spec.strategy.canary.steps[0].pause.duration",
            "duration like 30s",
        ),
        (
            changed(strategy={"canary": {"steps": [{"setMirror": {}}]}}),
            "spec.strategy.canary.steps[0].setMirror.percent",
            "is required",
        ),
        (
            changed(strategy={"shadow": {"then": "later"}}),
            "spec.strategy.shadow.then",
            "must be one of promote, canary, stop, got 'later'",
        ),
        (
            changed(strategy={"shadow": {"then": "stop", "canary": {"steps": [{"setWeight": 5}]}}}),
            "spec.strategy.shadow.canary",
            "only used when then is canary",
        ),
        (changed(strategy={"shadow": {"duration": "0s"}}), "spec.strategy.shadow.duration", "greater than 0"),
        (changed(analysis={"interval": 30}), "spec.analysis.interval", "got 30"),
        (
            changed(analysis={"metrics": [{"name": "x", "template": "error-rate", "max": "abc"}]}),
            "spec.analysis.metrics[0].max",
            "must be a number, got 'abc'",
        ),
        (
            changed(analysis={"metrics": [{"name": "x", "query": 'up{v="{{versoin}}"}', "max": 1}]}),
            "spec.analysis.metrics[0].query",
            "unknown variable {{versoin}}",
        ),
        (
            changed(
                analysis={
                    "metrics": [
                        {"name": "x", "template": "error-rate", "max": 1},
                        {"name": "x", "template": "latency-p99", "max": 1},
                    ]
                }
            ),
            "spec.analysis.metrics[1].name",
            "must be unique",
        ),
        (
            changed(
                analysis={
                    "metrics": [
                        {"name": "a", "template": "shadow-agreement", "relativeTo": "stable", "maxDecrease": 0.1}
                    ]
                }
            ),
            "spec.analysis.metrics[0].relativeTo",
            "cannot be used with shadow-agreement",
        ),
        (
            changed(
                analysis={
                    "metrics": [
                        {
                            "name": "a",
                            "template": "shadow-segment-agreement",
                            "relativeTo": "stable",
                            "maxDecrease": 0.1,
                        }
                    ]
                }
            ),
            "spec.analysis.metrics[0].relativeTo",
            "cannot be used with shadow-segment-agreement",
        ),
        (changed(analysis={"onNoData": "skip"}), "spec.analysis.onNoData", "hold, fail, pass"),
        (changed(analysis={"failureLimit": 0}), "spec.analysis.failureLimit", "in 1..1000, got 0"),
        (changed(trafficRouting={"gatewayAPI": {}}), "spec.trafficRouting.gatewayAPI.httpRoute", "is required"),
        (
            changed(trafficRouting={"router": {}, "gatewayAPI": {"httpRoute": "r"}}),
            "spec.trafficRouting",
            "got router, gatewayAPI",
        ),
        (changed(progressDeadline="soon"), "spec.progressDeadline", "duration like"),
        (changed(paused="yes"), "spec.paused", "true or false"),
        (changed(requests={"abort": -1}), "spec.requests.abort", ">= 0"),
        (changed(historyLimit=0), "spec.historyLimit", "1..100"),
    ],
)
def test_errors_name_the_field_and_what_is_expected(spec, field, expected):
    with pytest.raises(SpecError) as err:
        parse(spec)
    assert err.value.field == field, str(err.value)
    assert expected in err.value.message, err.value.message
    assert str(err.value).startswith(field + ": ")


def test_version_must_fit_the_deployment_name():
    long_name = "a" * 55
    assert parse(CANARY, name=long_name).model.version == "v1"  # 55 + 1 + 2 fits in 63
    spec = changed(model={"name": "m", "version": "canary-v2"})
    with pytest.raises(SpecError) as err:
        parse(spec, name=long_name)
    assert err.value.field == "spec.model.version" and "at most 7 characters" in err.value.message


def test_spec_that_is_not_a_mapping():
    with pytest.raises(SpecError) as err:
        parse(["model"])
    assert err.value.field == "spec"
