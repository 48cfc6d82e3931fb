"""Metrics provider on the Prometheus HTTP API (`GET /api/v1/query`): a rendered query becomes a Measurement.

Nothing here raises: outages, slow or oversized answers, HTTP errors, several series, non-numeric or
infinite values are error Measurements whose message says what was wrong; an empty result is no data.
Every query has a total deadline (connect, send and the whole answer), not only a per-read timeout.
A per-slice query (QueryRequest.slice_label) answers one series per slice, read into a bounded map.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from ..domain.analysis import Measurement, MeasurementKind
from ..domain.observations import QueryRequest
from ..domain.spec import SLICE_NAME_PATTERN
from .deadline import Deadline, DeadlineExceeded

T = TypeVar("T")
QueryHook = Callable[[str], None]  # called with the outcome: value | noData | error
# An instant query answered with one number is a few hundred bytes; 1 MiB leaves room for
# error bodies and many-series answers (which are errors anyway) and bounds what one read costs.
MAX_ANSWER_BYTES = 1 << 20


class AnswerTooLarge(Exception):
    """The answer body is larger than MAX_ANSWER_BYTES."""


def _short(text: Any, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def compute_measurement(result: Any) -> Measurement:
    """Judge the `data.result` of an instant query; exactly one numeric sample is a value."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        sample = result  # a scalar result: [timestamp, "value"]
    elif isinstance(result, list):
        if not result:
            return Measurement.no_data()
        if len(result) > 1:
            labels = ", ".join(_short(r.get("metric", {}), 80) for r in result[:3] if isinstance(r, dict))
            return Measurement.error(
                f"query returned {len(result)} series, expected exactly one (aggregate it, e.g. "
                f"wrap it in sum(...)); first series: {labels}"
            )
        series = result[0]
        if not isinstance(series, dict) or "value" not in series:
            return Measurement.error(
                f"malformed answer: expected an instant vector sample, got {_short(series)} (is this a range query?)"
            )
        sample = series["value"]
    else:
        return Measurement.error(f"malformed answer: data.result is {_short(result)}")
    if not _is_sample(sample):
        return Measurement.error(f"malformed answer: expected a sample [timestamp, value], got {_short(sample)}")
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError):
        return Measurement.error(f"query returned a non-numeric value {_short(sample)}")
    if math.isinf(value):
        return Measurement.error(f"query returned {value} (a division by zero?)")
    # NaN (Prometheus' answer to 0/0, i.e. no traffic in the window) reads as no data.
    return Measurement.of(value)


def _is_sample(sample: Any) -> bool:
    """An instant sample as the API writes it: [unix time as a number, value as a string]."""
    return (
        isinstance(sample, list)
        and len(sample) == 2
        and isinstance(sample[0], int | float)
        and not isinstance(sample[0], bool)
    )


_SLICE_NAME_RE = re.compile(SLICE_NAME_PATTERN)
SliceValues = dict[str, float]  # slice -> value (NaN: no data on that slice)


def compute_slice_values(result: Any, label: str, limit: int) -> SliceValues | Measurement:
    """Read the `data.result` of a per-slice query: an instant vector of at most `limit` series,
    each with a distinct slice name in `label` and a numeric value; else an error naming what
    was wrong. Empty is an empty map."""
    if not isinstance(result, list) or (len(result) == 2 and not isinstance(result[0], dict)):
        return Measurement.error(
            f"malformed answer: expected an instant vector grouped by {label}, got {_short(result)}"
        )
    if len(result) > limit:
        return Measurement.error(
            f"query returned {len(result)} series by {label}, more than the gate's bound of {limit} slices "
            "(slices.max, or the listed values)"
        )
    values: SliceValues = {}
    for series in result:
        if not isinstance(series, dict) or not isinstance(series.get("metric"), dict) or "value" not in series:
            return Measurement.error(f"malformed answer: expected an instant vector sample, got {_short(series, 120)}")
        name = series["metric"].get(label)
        if name is None:
            return Measurement.error(
                f"a series without the label {label}: {_short(series['metric'], 120)} (group the query by {label})"
            )
        if not isinstance(name, str) or not _SLICE_NAME_RE.match(name):
            return Measurement.error(f"series label {label}={_short(name, 40)!s} is not a slice name")
        if name in values:
            return Measurement.error(f"two series for {label}={name}; expected one per slice")
        sample = series["value"]
        try:
            if not _is_sample(sample):
                raise ValueError("not a [timestamp, value] pair")
            value = float(sample[1])
        except (TypeError, ValueError):
            return Measurement.error(f"query returned a non-numeric value {_short(series['value'])} for {label}={name}")
        if math.isinf(value):
            return Measurement.error(f"query returned {value} for {label}={name} (a division by zero?)")
        values[name] = value
    return values


def compute_slices_measurement(values: SliceValues, counts: SliceValues, limit: int) -> Measurement:
    """One Measurement per slice from the value and sample-count answers: a slice in either is
    a slice (no value, or NaN: no data on it; no count: 0 samples)."""
    names = sorted(set(values) | set(counts))
    if len(names) > limit:
        return Measurement.error(
            f"the value and count queries name {len(names)} slices, more than the bound of {limit}"
        )
    out = {}
    for name in names:
        count = counts.get(name, 0.0)
        samples = int(count) if math.isfinite(count) and count > 0 else 0
        value = values.get(name)
        out[name] = Measurement.no_data(samples=samples) if value is None else Measurement.of(value, samples=samples)
    return Measurement.by_slice(out)


class PrometheusMetrics:
    """A fresh connection per query (a handful per analysis interval), no retries and no redirects
    (the next tick is the retry, and a redirect could send the query to a server the rollout did
    not name)."""

    def __init__(
        self, timeout: float = 10.0, on_query: QueryHook | None = None, max_answer_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        self._timeout = timeout  # total seconds per query: connect, send, headers and body
        self._on_query = on_query
        self._max_bytes = max_answer_bytes

    def fetch_scalar(self, address: str, query: str, timeout: float | None = None) -> Measurement:
        """Runs one instant query and judges the answer; `timeout` can only shorten the adapter's."""
        measurement = self._run(address, query, timeout, compute_measurement)
        if self._on_query:
            self._on_query(measurement.kind.value)
        return measurement

    def fetch_slices(
        self, address: str, query: str, label: str, limit: int, timeout: float | None = None
    ) -> SliceValues | Measurement:
        """Runs one per-slice instant query: its values by slice, or an error Measurement."""
        answer = self._run(address, query, timeout, lambda result: compute_slice_values(result, label, limit))
        if self._on_query:
            if isinstance(answer, Measurement):
                self._on_query(answer.kind.value)
            else:
                self._on_query((MeasurementKind.VALUE if answer else MeasurementKind.NO_DATA).value)
        return answer

    def _run(self, address: str, query: str, timeout: float | None, judge: Callable[[Any], T]) -> T | Measurement:
        measurement: T | Measurement
        try:
            status, body = self._fetch(address, query, self._bounded(timeout))
            measurement = compute_result(status, body, f"Prometheus at {address}", judge)
        except (OSError, http.client.HTTPException, DeadlineExceeded) as err:
            # No answer at all (refused, reset, hung, closed early): say so, the rollback message
            # carries it and a person reading it knows to look at Prometheus, not the model.
            measurement = Measurement.error(f"Prometheus at {address} unreachable: {_describe(err)}")
        except Exception as err:  # noqa: BLE001 - every failure is a measurement (STYLE §6)
            measurement = Measurement.error(f"Prometheus at {address} failed: {_describe(err)}")
        return measurement

    def _bounded(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else max(0.0, min(timeout, self._timeout))

    def _fetch(self, address: str, query: str, timeout: float) -> tuple[int, bytes]:
        """(HTTP status, body), or DeadlineExceeded/AnswerTooLarge; the deadline covers connect,
        send, headers and body (deadline.py says why socket timeouts alone do not)."""
        if timeout <= 0:
            raise DeadlineExceeded("the check round's deadline passed before this query could start")
        url = urlsplit(address.rstrip("/"))
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = kind(url.hostname or "", url.port, timeout=timeout)
        with Deadline(timeout) as deadline:
            try:
                conn.connect()  # before it connects, the connect timeout bounds the wait
                # Watched as a socket: http.client drops conn.sock when the answer says Connection: close.
                deadline.watch(conn.sock)
                conn.request(
                    "GET",
                    f"{url.path}/api/v1/query?{urlencode({'query': query})}",
                    headers={"Accept": "application/json"},
                )
                response = conn.getresponse()
                body = response.read(self._max_bytes + 1)
            except (OSError, http.client.HTTPException):
                if deadline.expired:
                    raise deadline.error() from None
                raise
            finally:
                conn.close()
        if deadline.expired:  # the shutdown can also look like an early end of the body
            raise deadline.error()
        if len(body) > self._max_bytes:
            raise AnswerTooLarge(f"answer larger than {self._max_bytes} bytes")
        return response.status, body

    def fetch_measurement(self, address: str, request: QueryRequest, timeout: float | None = None) -> Measurement:
        """The metric's value with the sample count from its companion query. The two run at the
        same time, so a Prometheus that never answers costs one timeout here, not two."""
        timeout = self._bounded(timeout)
        if request.slice_label:
            return self._fetch_sliced(address, request, timeout)
        if not request.samples_query:
            return self.fetch_scalar(address, request.query, timeout)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prometheus-samples") as pool:
            pending = pool.submit(self.fetch_scalar, address, request.samples_query, timeout)
            value = self.fetch_scalar(address, request.query, timeout)
            count = pending.result()
        if value.kind is MeasurementKind.ERROR:
            return value
        if count.kind is MeasurementKind.ERROR:
            return Measurement.error(f"sample count query failed: {count.message}")
        samples = int(count.value) if count.kind is MeasurementKind.VALUE and count.value else 0
        if value.kind is MeasurementKind.NO_DATA:
            return Measurement.no_data(samples=samples)
        return Measurement.of(value.value, samples=samples)  # type: ignore[arg-type]

    def _fetch_sliced(self, address: str, request: QueryRequest, timeout: float) -> Measurement:
        label, limit = request.slice_label, request.slice_max
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prometheus-samples") as pool:
            pending = pool.submit(self.fetch_slices, address, request.samples_query, label, limit, timeout)
            values = self.fetch_slices(address, request.query, label, limit, timeout)
            counts = pending.result()
        if isinstance(values, Measurement):
            return values
        if isinstance(counts, Measurement):
            return Measurement.error(f"sample count query failed: {counts.message}")
        return compute_slices_measurement(values, counts, limit)


# What /api/v1/query answers (https://prometheus.io/docs/prometheus/latest/querying/api/#format-overview).
ENVELOPE = (
    'the Prometheus HTTP API\'s JSON ({"status": "success", "data": ...} or '
    '{"status": "error", "errorType": ..., "error": ...})'
)


def compute_answer(status: int, body: bytes, source: str = "Prometheus") -> Measurement:
    """Judge an HTTP answer of /api/v1/query as one number (compute_result)."""
    return compute_result(status, body, source, compute_measurement)


def compute_result(status: int, body: bytes, source: str, judge: Callable[[Any], T]) -> T | Measurement:
    """Judge an HTTP answer of /api/v1/query: the JSON envelope, then `data.result` by `judge`.

    Prometheus' own error (e.g. a PromQL parse error) is the `error` field of the JSON body; anything
    else (a proxy's HTML page, some other JSON) is an error naming what was expected, with a short excerpt."""
    said = f"{source} answered HTTP Status Code {status}"
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        excerpt = _short(body[:200].decode("utf-8", errors="replace"), 120)
        return Measurement.error(f"{said}: not JSON; expected {ENVELOPE}; the body starts {excerpt!r}")
    if not isinstance(doc, dict):
        return Measurement.error(f"{said}: expected {ENVELOPE}, got a JSON {_json_kind(doc)}: {_short(doc, 80)}")
    outcome = doc.get("status")
    if outcome == "error":
        return Measurement.error(_short(f"{said}: {_compute_error_reason(doc)}", 400))
    if outcome != "success":
        keys = _short(", ".join(sorted(str(k) for k in doc)), 80)
        return Measurement.error(
            f"{said}: expected {ENVELOPE}, got an object without a 'status' of 'success' or 'error' (keys: {keys})"
        )
    if status != 200:
        return Measurement.error(f"{said} with status 'success'; expected HTTP 200 for a successful query")
    data = doc.get("data")
    return judge(data.get("result") if isinstance(data, dict) else None)


def _compute_error_reason(doc: dict) -> str:
    """Prometheus' `error` message; its `errorType` when the message is missing."""
    if isinstance(doc.get("error"), str):
        return doc["error"]
    if isinstance(doc.get("errorType"), str):
        return f"{doc['errorType']} (no 'error' message)"
    return f"an error answer without 'error' or 'errorType': {_short(doc)}"


def _json_kind(doc: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(doc), "number")


def _describe(err: Exception) -> str:
    """A one-line reason: the exception's class says what kind of failure it was."""
    if isinstance(err, (ConnectionError, socket.gaierror)):
        return _short(f"ConnectionError: {type(err).__name__}: {err}", 300)
    return _short(f"{type(err).__name__}: {err}", 300)
