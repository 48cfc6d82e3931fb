"""Built-in PromQL templates render strictly against the metric contract; user queries too."""

import re

import pytest

from rollout_operator.domain import TEMPLATES, TemplateError, render
from rollout_operator.domain.templates import TEMPLATE_VARIABLES, check_template

pytestmark = pytest.mark.unit

VARS = dict(
    namespace="models",
    rollout="speech",
    model="speech-commands",
    version="v2",
    candidate="v2",
    stable="v1",
    window="1m",
    bound="0.5",  # slow-requests' template argument
)

# The metric contract (names fixed by the shared brief); every template must use only these.
CONTRACT = {
    "speech_requests_total",
    "speech_request_duration_seconds_bucket",
    "speech_request_duration_seconds_count",
    "speech_predictions_total",
    "speech_confidence_sum",
    "speech_confidence_count",
    "router_shadow_comparisons_total",
    "router_shadow_segment_comparisons_total",
    "router_feedback_total",
}


def test_the_built_in_template_names():
    assert set(TEMPLATES) == {
        "error-rate",
        "latency-p99",
        "slow-requests",
        "unknown-rate",
        "mean-confidence",
        "request-rate",
        "accuracy",
        "shadow-agreement",
        "shadow-segment-agreement",
    }


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_renders_fully_and_uses_contract_metrics(name):
    t = TEMPLATES[name]
    for text in (t.query, t.samples):
        out = render(text, VARS)
        assert "{{" not in out and "}}" not in out
        assert "[1m]" in out and 'namespace="models"' in out
        metrics = set(re.findall(r"\b((?:speech|router)_[a-z_]+)\{", out))
        assert metrics and metrics <= CONTRACT, metrics
        assert out.count("(") == out.count(")")


def test_version_specific_templates_select_the_measured_version():
    out = render(TEMPLATES["latency-p99"].query, VARS)
    assert 'version="v2"' in out and 'stage="total"' in out and "0.99" in out
    assert 'version="v1"' not in out


def test_shadow_agreement_compares_the_pair_and_counts_errors_as_disagreement():
    out = render(TEMPLATES["shadow-agreement"].query, VARS)
    assert 'stable_version="v1",candidate_version="v2"' in out
    assert 'result="agree"' in out
    denominator = out.split(" / ")[1]
    assert "result=" not in denominator  # agree + disagree + error


def test_shadow_segment_agreement_counts_every_other_result_against_the_candidate():
    t = TEMPLATES["shadow-segment-agreement"]
    out = render(t.query, VARS)
    numerator, denominator = out.split(" / ")
    assert "router_shadow_segment_comparisons_total{" in numerator and 'result="agree"' in numerator
    assert 'stable_version="v1",candidate_version="v2"' in denominator
    assert "result=" not in denominator  # agree + disagree + missing + extra + error
    samples = render(t.samples, VARS)
    assert samples.startswith("sum(increase(router_shadow_segment_comparisons_total{") and "result=" not in samples


def test_error_rate_counts_no_errors_as_zero_not_no_data():
    assert "or vector(0)" in TEMPLATES["error-rate"].query


def test_undefined_variable_is_an_error_not_an_empty_string():
    with pytest.raises(TemplateError, match="stable"):
        render('x{version="{{stable}}"}', {k: v for k, v in VARS.items() if k != "stable"})


def test_unknown_variable_names_the_known_ones():
    with pytest.raises(TemplateError) as err:
        render('rate(x{pod="{{pod}}"}[5m])', VARS)
    assert "{{pod}}" in str(err.value) and "window" in str(err.value)


def test_malformed_placeholder_is_rejected():
    with pytest.raises(TemplateError, match="malformed"):
        check_template("x{{ version }")
    with pytest.raises(TemplateError, match="malformed"):
        check_template("x{{}}")


def test_whitespace_inside_braces_is_allowed():
    assert render("a{{ version }}b", VARS) == "av2b"


def test_template_variables_are_documented_in_the_crd():
    from pathlib import Path

    crd = (Path(__file__).resolve().parents[3] / "crds" / "modelrollout.dev_modelrollouts.yaml").read_text()
    for var in TEMPLATE_VARIABLES:
        assert "{{" + var + "}}" in crd
