"""The Prometheus metrics adapter against a real stub Prometheus HTTP server on loopback."""

import socket

import pytest

from rollout_operator.adapters.prometheus import PrometheusMetrics
from rollout_operator.domain import Measurement, MeasurementKind, QueryRequest, Role
from tests.support.stub_prometheus import StubPrometheus, TricklingPrometheus, bad_query, scalar, vector

pytestmark = pytest.mark.unit

Q, N = 'sum(rate(x{version="v2"}[1m]))', 'sum(increase(n{version="v2"}[1m]))'
REQUEST = QueryRequest(metric="error-rate", role=Role.CANDIDATE, version="v2", query=Q, samples_query=N)


def _instant(result, kind: str = "vector"):
    return (200, {"status": "success", "data": {"resultType": kind, "result": result}})


@pytest.fixture
def prom():
    with StubPrometheus() as stub:
        yield stub


def test_one_value_with_its_sample_count(prom):
    prom.answers = {Q: vector(0.012), N: vector(412)}
    outcomes: list[str] = []
    m = PrometheusMetrics(on_query=outcomes.append).fetch_measurement(prom.url, REQUEST)
    assert m == Measurement(MeasurementKind.VALUE, value=0.012, samples=412)
    assert sorted(prom.queries) == sorted([Q, N])  # each once; they run together, in either order
    assert outcomes == ["value", "value"]


def test_scalar_results_are_values(prom):
    prom.answers = {Q: scalar(3.5), N: scalar(7)}
    assert PrometheusMetrics().fetch_measurement(prom.url, REQUEST) == Measurement.of(3.5, samples=7)


def test_empty_result_is_no_data_not_an_error(prom):
    prom.answers = {Q: vector(), N: vector()}
    m = PrometheusMetrics().fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.NO_DATA and m.samples == 0


def test_nan_from_zero_over_zero_is_no_data(prom):
    prom.answers = {Q: vector("NaN"), N: vector(0)}
    assert PrometheusMetrics().fetch_measurement(prom.url, REQUEST).kind is MeasurementKind.NO_DATA


@pytest.mark.parametrize(
    "answer, needle",
    [
        (vector(0.1, 0.2), "query returned 2 series, expected exactly one (aggregate it, e.g. wrap it in sum(...))"),
        (vector("+Inf"), "query returned inf"),
        (vector("abc"), "non-numeric value"),
        (bad_query('1:5: parse error: unexpected ")"'), 'HTTP Status Code 400: 1:5: parse error: unexpected ")"'),
        ((200, b"<html>not json</html>"), "Prometheus at"),
        (
            (
                200,
                {
                    "status": "success",
                    "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]]}]},
                },
            ),
            "expected an instant vector sample",
        ),
        ((503, {"status": "error", "error": "overloaded"}), "HTTP Status Code 503"),
        # A sample that is not [timestamp, "value"]: a bare string once read as its second character.
        (_instant([{"metric": {}, "value": "12"}]), "expected a sample [timestamp, value]"),
        (_instant([{"metric": {}, "value": [1, "12", "3"]}]), "expected a sample [timestamp, value]"),
        (_instant([{"metric": {}, "value": {"t": 1, "v": "12"}}]), "expected a sample [timestamp, value]"),
        (_instant([{"metric": {}, "value": ["now", "12"]}]), "expected a sample [timestamp, value]"),
        (_instant(["x", "12"], kind="scalar"), "expected a sample [timestamp, value]"),
    ],
)
def test_malformed_answers_are_error_measurements_naming_the_problem(prom, answer, needle):
    prom.answers = {Q: answer, N: vector(100)}
    m = PrometheusMetrics().fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR
    assert needle in m.message


def test_failed_sample_count_query_is_an_error(prom):
    prom.answers = {Q: vector(0.5), N: bad_query("unknown function")}
    m = PrometheusMetrics().fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR and m.message.startswith("sample count query failed:")


def test_outage_is_an_error_measurement_not_an_exception():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outcomes: list[str] = []
    m = PrometheusMetrics(timeout=2, on_query=outcomes.append).fetch_measurement(f"http://127.0.0.1:{port}", REQUEST)
    assert m.kind is MeasurementKind.ERROR
    assert f"Prometheus at http://127.0.0.1:{port} unreachable: ConnectionError" in m.message
    assert outcomes == ["error", "error"]  # the value and its sample count run together, both fail


def test_an_answer_trickling_in_is_stopped_by_the_total_deadline():
    # ~8 s of one byte per 50 ms: every read makes progress, so a per-read timeout never fires.
    with TricklingPrometheus(vector(0.5), delay=0.05) as slow:
        m = PrometheusMetrics(timeout=0.5).fetch_measurement(slow.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR
    assert "DeadlineExceeded: no complete answer within 0.5s" in m.message


def test_headers_trickling_in_are_stopped_by_the_total_deadline():
    # One header byte per 10 ms in a line that never ends: reads progress, the headers never do.
    with TricklingPrometheus(delay=0.01, endless_header=True) as slow:
        m = PrometheusMetrics(timeout=0.5).fetch_measurement(slow.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR
    assert "DeadlineExceeded: no complete answer within 0.5s" in m.message


def test_a_deeply_nested_error_body_is_an_error_measurement(prom):
    nested = b'{"status": "error", "error": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    prom.answers = {Q: (400, nested)}
    m = PrometheusMetrics().fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR and "not JSON" in m.message


def test_an_answer_above_the_size_bound_is_an_error_measurement(prom):
    prom.answers = {Q: vector(0.5, labels={"pad": "x" * 5000})}
    m = PrometheusMetrics(max_answer_bytes=4096).fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR
    assert "AnswerTooLarge: answer larger than 4096 bytes" in m.message
    prom.answers = {Q: vector(0.5, labels={"pad": "x" * 3000}), N: vector(10)}
    assert PrometheusMetrics(max_answer_bytes=4096).fetch_measurement(prom.url, REQUEST).value == 0.5


def test_prometheus_error_comes_from_the_json_body_not_exception_text(prom):
    prom.answers = {Q: (422, {"status": "error", "errorType": "execution", "error": "many-to-many matching"})}
    m = PrometheusMetrics().fetch_measurement(prom.url, REQUEST)
    assert m.message == f"Prometheus at {prom.url} answered HTTP Status Code 422: many-to-many matching"


ENVELOPE = (
    'expected the Prometheus HTTP API\'s JSON ({"status": "success", "data": ...} or '
    '{"status": "error", "errorType": ..., "error": ...})'
)


@pytest.mark.parametrize(
    "answer, message",
    [
        # a proxy in front of Prometheus answering for it
        (
            (502, b"<html><body>Bad Gateway</body></html>"),
            f"answered HTTP Status Code 502: not JSON; {ENVELOPE}; the body starts '<html><body>Bad Gateway</body></html>'",
        ),
        ((200, ["success"]), f"answered HTTP Status Code 200: {ENVELOPE}, got a JSON list: ['success']"),
        (
            (200, {"result": [1, "2"]}),
            f"answered HTTP Status Code 200: {ENVELOPE}, got an object without a "
            "'status' of 'success' or 'error' (keys: result)",
        ),
        (
            (500, {"status": "error", "errorType": "internal"}),
            "answered HTTP Status Code 500: internal (no 'error' message)",
        ),
        (
            (400, {"status": "success", "data": {"resultType": "vector", "result": []}}),
            "answered HTTP Status Code 400 with status 'success'; expected HTTP 200 for a successful query",
        ),
    ],
)
def test_an_answer_that_is_not_the_api_envelope_says_what_was_expected(prom, answer, message):
    prom.answers = {Q: answer, N: vector(1)}
    m = PrometheusMetrics().fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR
    assert m.message == f"Prometheus at {prom.url} {message}"


def test_the_excerpt_of_a_large_non_json_body_is_bounded(prom):
    prom.answers = {Q: (200, b"\xff" + b"x" * 500_000)}
    m = PrometheusMetrics().fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR and "not JSON" in m.message and ENVELOPE in m.message
    assert len(m.message) < 400 and m.message.endswith("xxx…'")
    assert "\\ufffd" not in m.message and "\ufffd" in m.message  # undecodable bytes shown as U+FFFD, not escaped
