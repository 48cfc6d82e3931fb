"""Built-in PromQL templates keyed by name, strict {{var}} rendering, and the PromQL check.

Written against the metric contract (model server speech_*, router router_*); an undefined
variable is an error, never an empty string; every value but {{window}} is a label value and is
rendered as PromQL string-literal content (escaped), so no name can change what a query selects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import promql_parser

# Variables every query may use. {{version}} is the version being measured (the candidate,
# or stable for the baseline of a relative threshold); {{candidate}}/{{stable}} are fixed.
TEMPLATE_VARIABLES = ("namespace", "rollout", "model", "version", "candidate", "stable", "window")
# Rendered as written (the operator formats it from a parsed duration); all others are label
# values and must sit inside a double-quoted string.
RAW_VARIABLES = frozenset({"window"})
# Template arguments: set per gate by the user (MetricSpec), defined only for the built-in
# templates that list them, never in a user query. {{bound}} is a latency histogram bucket edge.
TEMPLATE_ARGUMENTS = ("bound",)

# The bucket edges of the model server's speech_request_duration_seconds histogram (seconds)
# and their `le` label values as the server writes them. A share slower than a bound is exact
# only at an edge, so slow-requests takes one of these (tests/unit/test_metric_contract_server.py
# checks the server still has them).
LATENCY_BOUNDS: dict[float, str] = {
    0.0005: "0.0005",
    0.001: "0.001",
    0.0025: "0.0025",
    0.005: "0.005",
    0.01: "0.01",
    0.025: "0.025",
    0.05: "0.05",
    0.1: "0.1",
    0.25: "0.25",
    0.5: "0.5",
    1.0: "1.0",
    2.5: "2.5",
    5.0: "5.0",
}

_SEL = 'namespace="{{namespace}}",model="{{model}}",version="{{version}}"'
_REQ = f"speech_requests_total{{{_SEL}}}"
_REQUEST_COUNT = f"sum(increase({_REQ}[{{{{window}}}}]))"
_LAT = f'{_SEL},stage="total"'
_LAT_COUNT = f"speech_request_duration_seconds_count{{{_LAT}}}"
_LAT_FAST = f'speech_request_duration_seconds_bucket{{{_LAT},le="{{{{bound}}}}"}}'
_SHADOW_SEL = (
    'namespace="{{namespace}}",rollout="{{rollout}}",stable_version="{{stable}}",candidate_version="{{candidate}}"'
)
# The router counts fed-back labels by the version that gave the answer (no model label).
FEEDBACK_SEL = 'namespace="{{namespace}}",rollout="{{rollout}}",version="{{version}}"'
_FEEDBACK = f"router_feedback_total{{{FEEDBACK_SEL}}}"


@dataclass(frozen=True)
class Template:
    query: str
    samples: str  # the sample count behind the value, compared with minSamples
    description: str
    arguments: tuple[str, ...] = ()  # the TEMPLATE_ARGUMENTS it needs from the gate


TEMPLATES: dict[str, Template] = {
    "error-rate": Template(
        # `or vector(0)`: no server_error series yet means zero errors, not no data.
        query=(
            f'(sum(rate(speech_requests_total{{{_SEL},outcome="server_error"}}[{{{{window}}}}]))'
            f" or vector(0)) / sum(rate({_REQ}[{{{{window}}}}]))"
        ),
        samples=_REQUEST_COUNT,
        description="share of requests answered with a server error (5xx)",
    ),
    "latency-p99": Template(
        query=(
            "histogram_quantile(0.99, sum by (le) (rate(speech_request_duration_seconds_bucket"
            f'{{{_SEL},stage="total"}}[{{{{window}}}}])))'
        ),
        samples=_REQUEST_COUNT,
        description="99th percentile of end-to-end request latency, seconds",
    ),
    "slow-requests": Template(
        # Slower than the bound = all requests minus those in the bucket le="bound".
        query=(
            f"(sum(rate({_LAT_COUNT}[{{{{window}}}}])) - sum(rate({_LAT_FAST}[{{{{window}}}}]))) / "
            f"sum(rate({_LAT_COUNT}[{{{{window}}}}]))"
        ),
        samples=f"sum(increase({_LAT_COUNT}[{{{{window}}}}]))",
        description="share of requests whose end-to-end latency is above the gate's bound (seconds)",
        arguments=("bound",),
    ),
    "unknown-rate": Template(
        query=(
            f'(sum(rate(speech_predictions_total{{{_SEL},label=~"_unknown_|_silence_"}}'
            "[{{window}}])) or vector(0)) / "
            f"sum(rate(speech_predictions_total{{{_SEL}}}[{{{{window}}}}]))"
        ),
        samples=f"sum(increase(speech_predictions_total{{{_SEL}}}[{{{{window}}}}]))",
        description="share of predictions that are _unknown_ or _silence_",
    ),
    "mean-confidence": Template(
        query=(
            f"sum(rate(speech_confidence_sum{{{_SEL}}}[{{{{window}}}}])) / "
            f"sum(rate(speech_confidence_count{{{_SEL}}}[{{{{window}}}}]))"
        ),
        samples=f"sum(increase(speech_confidence_count{{{_SEL}}}[{{{{window}}}}]))",
        description="mean confidence of the predicted label",
    ),
    "request-rate": Template(
        query=f"sum(rate({_REQ}[{{{{window}}}}]))",
        samples=_REQUEST_COUNT,
        description="requests per second the version answered",
    ),
    "accuracy": Template(
        # `or vector(0)`: no correct answer yet is a share of zero, not no data.
        query=(
            f'(sum(rate(router_feedback_total{{{FEEDBACK_SEL},result="correct"}}[{{{{window}}}}])) or vector(0)) / '
            f"sum(rate({_FEEDBACK}[{{{{window}}}}]))"
        ),
        samples=f"sum(increase({_FEEDBACK}[{{{{window}}}}]))",
        description="share of fed-back labels (POST /feedback at the router) the version had predicted",
    ),
    "shadow-agreement": Template(
        # Errors count against agreement: a shadow that fails to answer did not agree.
        query=(
            f'(sum(rate(router_shadow_comparisons_total{{{_SHADOW_SEL},result="agree"}}'
            "[{{window}}])) or vector(0)) / "
            f"sum(rate(router_shadow_comparisons_total{{{_SHADOW_SEL}}}[{{{{window}}}}]))"
        ),
        samples=f"sum(increase(router_shadow_comparisons_total{{{_SHADOW_SEL}}}[{{{{window}}}}]))",
        description="share of mirrored requests where the candidate's label matched stable's",
    ),
    "shadow-segment-agreement": Template(
        # Every stable segment is agree, disagree, missing or error, and every candidate segment
        # stable did not have is extra; all but agree count against the candidate.
        query=(
            f'(sum(rate(router_shadow_segment_comparisons_total{{{_SHADOW_SEL},result="agree"}}'
            "[{{window}}])) or vector(0)) / "
            f"sum(rate(router_shadow_segment_comparisons_total{{{_SHADOW_SEL}}}[{{{{window}}}}]))"
        ),
        samples=f"sum(increase(router_shadow_segment_comparisons_total{{{_SHADOW_SEL}}}[{{{{window}}}}]))",
        description="share of segment comparisons of mirrored requests where the candidate heard the same "
        "word at the same time as stable",
    ),
}

# Templates that compare the candidate with stable by construction (no per-version baseline).
PAIRWISE_TEMPLATES = frozenset({"shadow-agreement", "shadow-segment-agreement"})

# Sample count for user queries: the version's requests in the window.
DEFAULT_SAMPLES_QUERY = _REQUEST_COUNT

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """A query uses a variable that is not defined (or a malformed placeholder)."""


def find_variables(text: str) -> list[str]:
    return _VAR.findall(text)


def compute_arguments(bound: float | None) -> dict[str, str]:
    """The template arguments a gate sets, as the values its built-in template renders."""
    return {} if bound is None else {"bound": LATENCY_BOUNDS[bound]}


def check_template(text: str, arguments: tuple[str, ...] = ()) -> None:
    """Raise TemplateError if `text` uses an unknown variable or a stray brace pair; `arguments`
    are the TEMPLATE_ARGUMENTS a built-in template may use besides the variables."""
    unknown = [v for v in find_variables(text) if v not in TEMPLATE_VARIABLES and v not in arguments]
    if unknown:
        raise TemplateError(f"unknown variable {{{{{unknown[0]}}}}}; known: {', '.join(TEMPLATE_VARIABLES)}")
    if "{{" in _VAR.sub("", text) or "}}" in _VAR.sub("", text):
        raise TemplateError("malformed placeholder: use {{name}} with a variable name inside")


def escape_label_value(value: str) -> str:
    """`value` as the content of a double-quoted PromQL string (Go escaping, which PromQL uses):
    a quote, backslash or control character can never end the string or change the selector."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def render(text: str, variables: Mapping[str, str]) -> str:
    """Substitute every {{var}}, escaping label values; an undefined one raises TemplateError."""
    check_template(text, TEMPLATE_ARGUMENTS)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables or variables[name] is None:
            raise TemplateError(f"variable {{{{{name}}}}} is not defined here")
        value = str(variables[name])
        return value if name in RAW_VARIABLES else escape_label_value(value)

    return _VAR.sub(substitute, text)


# Placeholder values for checking a query before any rollout runs. The probe values hold a
# quote and a brace: a label-value variable written outside a double-quoted string then makes
# the rendered text fail to parse (or not carry the value), which check_query reports.
_SAMPLE = {
    "namespace": "ns",
    "rollout": "r",
    "model": "m",
    "version": "v1",
    "candidate": "v2",
    "stable": "v1",
    "window": "1m",
    "bound": "0.5",
}
_PROBE = {k: (v if k in RAW_VARIABLES else f'mr-probe-{k}"}}') for k, v in _SAMPLE.items()}


def parse_sample(text: str) -> promql_parser.Expr:
    """`text` rendered with placeholder values and parsed (ValueError when it does not parse)."""
    return promql_parser.parse(render(text, _SAMPLE))


def check_query(text: str, arguments: tuple[str, ...] = ()) -> None:
    """Raise TemplateError unless `text` is PromQL an instant query can run once rendered:
    known variables (and `arguments`, for a built-in template), label-value variables inside
    double quotes, parses, not a range vector."""
    check_template(text, arguments)
    try:
        expr = promql_parser.parse(render(text, _SAMPLE))
    except ValueError as err:
        raise TemplateError(f"is not valid PromQL: {err}") from None
    if isinstance(
        _unwrap(expr), (promql_parser.MatrixSelector, promql_parser.SubqueryExpr, promql_parser.StringLiteral)
    ):
        raise TemplateError(
            "must return a number or one series (an instant vector or scalar), "
            "not a range vector or string; wrap a range in e.g. rate(...)"
        )
    used = [v for v in dict.fromkeys(find_variables(text)) if v not in RAW_VARIABLES]
    try:
        values = compute_string_values(promql_parser.parse(render(text, _PROBE)))
    except ValueError:
        values = []
    for name in used:
        if not any(_PROBE[name] in value for value in values):
            raise TemplateError(
                f'{{{{{name}}}}} must be inside a double-quoted label value, e.g. {name}="{{{{{name}}}}}"'
            )


def compute_string_values(expr: promql_parser.Expr) -> list[str]:
    """Every label-matcher value and string literal in a parsed expression (walk() descends
    into range and subquery selectors itself)."""
    values: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            values.extend(m.value for m in node.matchers.matchers)
            for group in node.matchers.or_matchers:
                values.extend(m.value for m in group)
        elif isinstance(node, promql_parser.StringLiteral):
            values.append(node.val)

    promql_parser.walk(expr, visit)
    return values


def _unwrap(expr: object) -> object:
    while isinstance(expr, promql_parser.ParenExpr):
        expr = expr.expr
    return expr
