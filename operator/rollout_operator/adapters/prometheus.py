"""Metrics provider on Prometheus (`prometheus-api-client`): a rendered query becomes a Measurement.

Nothing here raises for a bad answer: outages, HTTP errors, several series, non-numeric or infinite
values are error Measurements whose message says what was wrong; an empty result is no data.
"""

from __future__ import annotations

import ast
import json
import math
import re
import threading
from typing import Any, Callable

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from ..domain.analysis import Measurement, MeasurementKind
from ..domain.observations import QueryRequest

QueryHook = Callable[[str], None]  # called with the outcome: value | noData | error


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
                f"wrap it in sum(...)); first series: {labels}")
        series = result[0]
        if not isinstance(series, dict) or "value" not in series:
            return Measurement.error(f"malformed answer: expected an instant vector sample, got "
                                     f"{_short(series)} (is this a range query?)")
        sample = series["value"]
    else:
        return Measurement.error(f"malformed answer: data.result is {_short(result)}")
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError):
        return Measurement.error(f"query returned a non-numeric value {_short(sample)}")
    if math.isinf(value):
        return Measurement.error(f"query returned {value} (a division by zero?)")
    # NaN (Prometheus' answer to 0/0, i.e. no traffic in the window) reads as no data.
    return Measurement.of(value)


class PrometheusMetrics:
    """One `PrometheusConnect` per address, no client-side retries (the next tick is the retry)."""

    def __init__(self, timeout: float = 10.0, on_query: QueryHook | None = None) -> None:
        self._timeout = timeout
        self._on_query = on_query
        self._clients: dict[str, PrometheusConnect] = {}
        self._lock = threading.Lock()

    def _client(self, address: str) -> PrometheusConnect:
        with self._lock:
            if address not in self._clients:
                self._clients[address] = PrometheusConnect(
                    url=address.rstrip("/"), disable_ssl=False, retry=Retry(total=0),
                    timeout=self._timeout)
            return self._clients[address]

    def fetch_scalar(self, address: str, query: str) -> Measurement:
        """Runs one instant query and judges the answer."""
        try:
            result = self._client(address).custom_query(query)
        except Exception as err:  # noqa: BLE001 - every failure is a measurement (STYLE §6)
            measurement = Measurement.error(f"Prometheus at {address} failed: {_describe(err)}")
        else:
            measurement = compute_measurement(result)
        if self._on_query:
            self._on_query(measurement.kind.value)
        return measurement

    def fetch_measurement(self, address: str, request: QueryRequest) -> Measurement:
        """The metric's value with the sample count from its companion query."""
        value = self.fetch_scalar(address, request.query)
        if value.kind is MeasurementKind.ERROR or not request.samples_query:
            return value
        count = self.fetch_scalar(address, request.samples_query)
        if count.kind is MeasurementKind.ERROR:
            return Measurement.error(f"sample count query failed: {count.message}")
        samples = int(count.value) if count.kind is MeasurementKind.VALUE and count.value else 0
        if value.kind is MeasurementKind.NO_DATA:
            return Measurement.no_data(samples=samples)
        return Measurement.of(value.value, samples=samples)  # type: ignore[arg-type]


def _describe(err: Exception) -> str:
    """A one-line reason; Prometheus' own error text for HTTP 4xx/5xx (e.g. a PromQL parse error)."""
    text = str(err)
    found = re.match(r"HTTP Status Code (\d+) \((b['\"].*['\"])\)$", text, re.DOTALL)
    if found:
        try:
            body = json.loads(ast.literal_eval(found.group(2)))
            return _short(f"HTTP Status Code {found.group(1)}: {body.get('error') or body}", 300)
        except (ValueError, SyntaxError, AttributeError):
            return _short(f"HTTP Status Code {found.group(1)}: {found.group(2)}", 300)
    return _short(f"{type(err).__name__}: {text}", 300)
