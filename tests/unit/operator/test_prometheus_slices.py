"""The Prometheus adapter's per-slice path (QueryRequest.slice_label) against a stub Prometheus on
loopback: a vector grouped by the label becomes a bounded slice -> Measurement map; hostile or
malformed answers are error Measurements naming what was wrong, never an exception."""

import pytest

from rollout_operator.adapters.prometheus import PrometheusMetrics, compute_slice_values
from rollout_operator.domain import Measurement, MeasurementKind, QueryRequest, Role
from tests.support.stub_prometheus import StubPrometheus, bad_query, scalar, vector

pytestmark = pytest.mark.unit

Q = 'sum by (slice) (rate(x{version="v2"}[1m]))'
N = 'sum by (slice) (increase(n{version="v2"}[1m]))'
REQUEST = QueryRequest("accuracy", Role.CANDIDATE, "v2", Q, N, slice_label="slice", slice_max=3)


def by_slice(**values: float | str) -> tuple[int, dict]:
    result = [{"metric": {"slice": k}, "value": [1700000000.0, str(v)]} for k, v in values.items()]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


def raw(result) -> tuple[int, dict]:
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def prom():
    with StubPrometheus() as stub:
        yield stub


def fetch(prom) -> Measurement:
    return PrometheusMetrics().fetch_measurement(prom.url, REQUEST)


def test_a_vector_by_slice_becomes_one_measurement_per_slice(prom):
    prom.answers = {Q: by_slice(young=0.62, clean=0.97), N: by_slice(young=212, clean=400)}
    outcomes: list[str] = []
    m = PrometheusMetrics(on_query=outcomes.append).fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.VALUE and m.value is None
    assert m.slice_map == {"clean": Measurement.of(0.97, samples=400), "young": Measurement.of(0.62, samples=212)}
    assert sorted(prom.queries) == sorted([Q, N]) and outcomes == ["value", "value"]


def test_nan_on_a_slice_is_no_data_on_that_slice_and_a_missing_count_is_zero(prom):
    prom.answers = {Q: by_slice(young="NaN", clean=0.9), N: by_slice(young=0)}
    m = fetch(prom)
    assert m.slice_map["young"] == Measurement.no_data(samples=0)
    assert m.slice_map["clean"] == Measurement.of(0.9, samples=0)


def test_a_slice_with_samples_but_no_value_is_no_data_with_its_samples(prom):
    prom.answers = {Q: by_slice(clean=0.9), N: by_slice(clean=50, young=7)}
    assert fetch(prom).slice_map["young"] == Measurement.no_data(samples=7)


def test_no_series_at_all_is_no_data(prom):
    prom.answers = {Q: vector(), N: vector()}
    assert fetch(prom).kind is MeasurementKind.NO_DATA


@pytest.mark.parametrize(
    "answer, needle",
    [
        (by_slice(a=1, b=1, c=1, d=1), "query returned 4 series by slice, more than the gate's bound of 3 slices"),
        (vector(0.5), "a series without the label slice: {} (group the query by slice)"),
        (vector(0.5, labels={"level_band": "quiet"}), "a series without the label slice"),
        (scalar(0.5), "expected an instant vector grouped by slice"),
        (raw([{"metric": {"slice": "young"}, "value": [1, "x"]}]), "non-numeric value [1, 'x'] for slice=young"),
        (raw([{"metric": {"slice": "young"}, "value": [1]}]), "non-numeric value [1] for slice=young"),
        (raw([{"metric": {"slice": "young"}, "value": "12"}]), "non-numeric value 12 for slice=young"),
        (raw([{"metric": {"slice": "young"}, "value": {"1": "2"}}]), "non-numeric value {'1': '2'} for slice=young"),
        (raw([{"metric": {"slice": "young"}, "value": [1, "2", "3"]}]), "non-numeric value [1, '2', '3']"),
        (raw([{"metric": {"slice": "young"}, "value": [1, "+Inf"]}]), "inf for slice=young (a division by zero?)"),
        (raw([{"metric": {"slice": "young"}}]), "expected an instant vector sample"),
        (raw([{"metric": "young", "value": [1, "1"]}]), "expected an instant vector sample"),
        (raw(["young"]), "expected an instant vector sample"),
        (raw([{"metric": {"slice": "Young!"}, "value": [1, "1"]}]), "series label slice=Young! is not a slice name"),
        (raw([{"metric": {"slice": 7}, "value": [1, "1"]}]), "series label slice=7 is not a slice name"),
        (raw([{"metric": {"slice": "y" * 500}, "value": [1, "1"]}]), "is not a slice name"),
        (
            raw([{"metric": {"slice": "a"}, "value": [1, "1"]}, {"metric": {"slice": "a"}, "value": [1, "2"]}]),
            "two series for slice=a; expected one per slice",
        ),
        (raw({"slice": "a"}), "expected an instant vector grouped by slice"),
        (raw(None), "expected an instant vector grouped by slice"),
        (bad_query("parse error"), "parse error"),
    ],
)
def test_malformed_answers_are_errors_that_say_what_was_wrong(prom, answer, needle):
    prom.answers = {Q: answer, N: by_slice(a=1)}
    m = fetch(prom)
    assert m.kind is MeasurementKind.ERROR and needle in m.message, m.message
    assert len(m.message) < 500


def test_a_failing_count_query_fails_the_measurement(prom):
    prom.answers = {Q: by_slice(a=0.5), N: vector(1)}
    m = fetch(prom)
    assert m.kind is MeasurementKind.ERROR and m.message.startswith("sample count query failed: a series without")


def test_the_value_and_count_queries_together_stay_within_the_bound(prom):
    prom.answers = {Q: by_slice(a=0.5, b=0.5), N: by_slice(c=1, d=1)}
    m = fetch(prom)
    assert m.kind is MeasurementKind.ERROR and "name 4 slices, more than the bound of 3" in m.message


def test_a_huge_vector_is_cut_by_the_answer_size_bound(prom):
    prom.answers = {Q: by_slice(**{f"s{i}": 0.5 for i in range(100_000)}), N: by_slice(a=1)}
    m = PrometheusMetrics(max_answer_bytes=1 << 16).fetch_measurement(prom.url, REQUEST)
    assert m.kind is MeasurementKind.ERROR and "AnswerTooLarge" in m.message


def test_the_reader_is_pure_and_bounded():
    assert compute_slice_values([], "slice", 1) == {}
    too_many = [{"metric": {"slice": f"s{i}"}, "value": [1, "1"]} for i in range(5)]
    err = compute_slice_values(too_many, "slice", 4)
    assert isinstance(err, Measurement) and "more than the gate's bound of 4" in err.message
