"""The model server's half of the metric contract (names and labels fixed, pinned by a test).

Software metrics per stage, input metrics (duration, level, speech share) and output metrics (labels, confidence).
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from typing import TYPE_CHECKING, NamedTuple, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from speech_serving.audio import DURATION_BANDS, LEVEL_BANDS, compute_duration_band, compute_level_band
from speech_serving.pipeline import ClipResult, StageTimes

if TYPE_CHECKING:  # the card format imports this module's buckets; only its type is needed here
    from speech_serving.training.reference import Reference

PROTOCOLS = ("v1", "v2")
OUTCOMES = ("ok", "client_error", "server_error")
STAGES = ("decode", "vad", "features", "recognize", "total")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_CLIP_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
_LEVEL_BUCKETS = (-90.0, -70.0, -60.0, -50.0, -45.0, -40.0, -35.0, -30.0, -25.0, -20.0, -15.0, -10.0, -6.0, -3.0, 0.0)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# name → (type, labels beyond model/version, help). docs/model-server.md renders the same table.
CONTRACT: dict[str, tuple[str, tuple[str, ...], str]] = {
    "speech_requests_total": (
        "counter",
        ("protocol", "outcome", "slice"),
        "Inference requests by protocol, outcome and the request's slice",
    ),
    "speech_request_duration_seconds": ("histogram", ("stage",), "Seconds per pipeline stage per request"),
    "speech_audio_seconds_total": ("counter", (), "Seconds of audio processed"),
    "speech_input_duration_seconds": ("histogram", (), "Clip duration in seconds"),
    "speech_input_level_dbfs": ("histogram", (), "Clip RMS level in dBFS"),
    "speech_vad_speech_ratio": ("histogram", (), "Share of each clip the VAD marked as speech"),
    "speech_predictions_total": (
        "counter",
        ("label", "slice", "level_band", "duration_band"),
        "Answers by label (_silence_ = no speech), request slice and the clip's level and duration band",
    ),
    "speech_confidence": (
        "histogram",
        ("slice", "level_band", "duration_band"),
        "Confidence of each answer by request slice and the clip's level and duration band",
    ),
    "speech_batch_size": ("histogram", (), "Clips per adaptive pipeline batch"),
    # The served model's reference distribution (its training inputs, from the model card; docs/models.md): constant
    # gauges on the live histograms' buckets, so a drift query compares the two on the same `le` edges.
    "speech_reference_available": ("gauge", (), "1 when the served model has a reference distribution, else 0"),
    "speech_reference_input_duration_seconds_bucket": (
        "gauge",
        ("le",),
        "Reference clips with a duration <= le seconds (cumulative, like speech_input_duration_seconds)",
    ),
    "speech_reference_input_duration_seconds_count": ("gauge", (), "Clips behind the reference duration histogram"),
    "speech_reference_input_level_dbfs_bucket": (
        "gauge",
        ("le",),
        "Reference clips with an RMS level <= le dBFS (cumulative, like speech_input_level_dbfs)",
    ),
    "speech_reference_input_level_dbfs_count": ("gauge", (), "Clips behind the reference level histogram"),
    "speech_reference_vad_speech_ratio_bucket": (
        "gauge",
        ("le",),
        "Reference clips with a VAD speech share <= le (cumulative, like speech_vad_speech_ratio)",
    ),
    "speech_reference_vad_speech_ratio_count": ("gauge", (), "Clips behind the reference speech-share histogram"),
    "speech_reference_prediction_share": (
        "gauge",
        ("label",),
        "Share of the reference clips the model answered with this label (its answers on its training inputs)",
    ),
}

# The live input histograms a reference distribution mirrors, with their buckets (the reference gauges are
# speech_reference_<name without speech_>_bucket/_count); training/reference.py counts on exactly these.
REFERENCE_INPUTS: dict[str, tuple[float, ...]] = {
    "speech_input_duration_seconds": _CLIP_BUCKETS,
    "speech_input_level_dbfs": _LEVEL_BUCKETS,
    "speech_vad_speech_ratio": _RATIO_BUCKETS,
}


class _Observer(Protocol):
    """A histogram child for one label set: prometheus_client's Histogram child or a _SignedChild."""

    def observe(self, value: float, /) -> None: ...


class _HistogramFamily(Protocol):
    """A histogram family: prometheus_client's Histogram or a SignedHistogram."""

    def labels(self, **labels: str) -> _Observer: ...


class _Families(NamedTuple):
    """The contract's metric families for one registry, by metric name."""

    counters: dict[str, Counter]
    histograms: dict[str, _HistogramFamily]
    reference: ReferenceGauges


_FAMILIES: dict[int, _Families] = {}


class SignedHistogram:
    """A histogram with negative buckets that keeps `_count` and `_sum` (dBFS levels are all negative).

    prometheus_client follows OpenMetrics, where a histogram's sum is counter-like: once the first bucket
    bound is negative its Histogram drops `_sum`, and HistogramMetricFamily.add_metric drops `_count` and
    `_sum`. The chart's input-level drift alert needs the mean, `_sum / _count`, and Prometheus ingests a
    negative `_sum` from the classic text format that /metrics serves (app.py). So this is a custom
    collector on the public API: HistogramMetricFamily for the buckets, and the family's add_sample for
    whichever of `_count`/`_sum` the library left out. tests/unit/test_metric_contract_server.py pins
    both the library's omission and what this exposes.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ):
        self._name, self._documentation, self._labelnames = name, documentation, tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets) + (math.inf,)
        self._le = compute_le_labels(buckets)
        self._children: dict[tuple[str, ...], _SignedChild] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, **labels: str) -> _SignedChild:
        key = tuple(str(labels[n]) for n in self._labelnames)
        with self._lock:
            if key not in self._children:
                self._children[key] = _SignedChild(self._bounds)
            return self._children[key]

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self):
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            counts, total = child.snapshot()
            buckets = list(zip(self._le, itertools.accumulate(counts), strict=True))
            first = len(family.samples)
            family.add_metric(list(key), buckets, total)
            added = {sample.name for sample in family.samples[first:]}
            labels = dict(zip(self._labelnames, key, strict=True))
            for suffix, value in (("_count", buckets[-1][1]), ("_sum", total)):
                if self._name + suffix not in added:
                    family.add_sample(self._name + suffix, labels, value)
        yield family


def compute_le_labels(buckets: tuple[float, ...]) -> list[str]:
    """The `le` values prometheus_client's own Histogram writes for these bounds (+Inf last), so a
    SignedHistogram's buckets read exactly like every other histogram's on /metrics."""
    probe = Histogram("le_probe", "", buckets=buckets, registry=None)
    return [s.labels["le"] for family in probe.collect() for s in family.samples if s.name == "le_probe_bucket"]


class _SignedChild:
    """One label set's bucket counts and sum."""

    def __init__(self, bounds: tuple[float, ...]):
        self._bounds = bounds
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self._bounds, value)  # the first bucket whose upper bound is >= value (le)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._counts), self._sum


class ReferenceGauges:
    """The speech_reference_* gauges of every model version served from one registry: constants from the card.

    A custom collector on prometheus_client's public API (GaugeMetricFamily): the values never change after load,
    so there is nothing to update per request. A version without a reference exports only available 0.
    """

    def __init__(self, registry: CollectorRegistry):
        self._references: dict[tuple[str, str], Reference | None] = {}
        self._le = {name: compute_le_labels(buckets) for name, buckets in REFERENCE_INPUTS.items()}
        self._lock = threading.Lock()
        registry.register(self)

    def set_reference(self, model: str, version: str, reference: Reference | None) -> None:
        with self._lock:
            self._references[(model, version)] = reference

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {
            name: GaugeMetricFamily(name, doc, labels=("model", "version", *extra))
            for name, (kind, extra, doc) in CONTRACT.items()
            if kind == "gauge"
        }

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families().values())

    def collect(self):
        families = self._families()
        with self._lock:
            references = list(self._references.items())
        for (model, version), reference in references:
            families["speech_reference_available"].add_metric([model, version], 0.0 if reference is None else 1.0)
            if reference is None:
                continue
            for name, counts in reference.histograms.items():
                prefix = "speech_reference_" + name.removeprefix("speech_")
                for le, total in zip(self._le[name], itertools.accumulate(counts), strict=True):
                    families[prefix + "_bucket"].add_metric([model, version, le], float(total))
                families[prefix + "_count"].add_metric([model, version], float(sum(counts)))
            for label, count in reference.predictions.items():
                families["speech_reference_prediction_share"].add_metric([model, version, label], count / reference.n)
        yield from families.values()


def _families(registry: CollectorRegistry) -> _Families:
    """One set of metric families per registry, shared by every ServerMetrics using it (tests make several)."""
    if id(registry) in _FAMILIES:
        return _FAMILIES[id(registry)]
    base = ("model", "version")
    hist_buckets = {
        "speech_request_duration_seconds": _LATENCY_BUCKETS,
        "speech_input_duration_seconds": _CLIP_BUCKETS,
        "speech_input_level_dbfs": _LEVEL_BUCKETS,
        "speech_vad_speech_ratio": _RATIO_BUCKETS,
        "speech_confidence": _CONFIDENCE_BUCKETS,
        "speech_batch_size": _BATCH_BUCKETS,
    }
    made = _Families({}, {}, ReferenceGauges(registry))
    for name, (kind, extra, doc) in CONTRACT.items():
        if kind == "counter":
            made.counters[name] = Counter(name.removesuffix("_total"), doc, base + extra, registry=registry)
        elif kind == "histogram":
            kind_cls = SignedHistogram if hist_buckets[name][0] < 0 else Histogram
            made.histograms[name] = kind_cls(name, doc, base + extra, buckets=hist_buckets[name], registry=registry)
    _FAMILIES[id(registry)] = made
    return made


class ServerMetrics:
    """Prometheus series for one served model version; children are pre-created so series exist at 0.

    `slices` are every value the `slice` label can take (the allow-list plus none and other), which bounds the
    series: predictions labels x slices x 4 level bands x 3 duration bands; confidence slices x 12 histograms.
    """

    def __init__(
        self,
        model: str,
        version: str,
        labels: list[str],
        slices: tuple[str, ...],
        registry: CollectorRegistry = REGISTRY,
    ):
        counters, histograms, reference = _families(registry)
        ids = {"model": model, "version": version}
        self._ids = ids
        self.requests = counters["speech_requests_total"]
        self.duration = histograms["speech_request_duration_seconds"]
        self.audio_seconds = counters["speech_audio_seconds_total"].labels(**ids)
        self.input_duration = histograms["speech_input_duration_seconds"].labels(**ids)
        self.input_level = histograms["speech_input_level_dbfs"].labels(**ids)
        self.speech_ratio = histograms["speech_vad_speech_ratio"].labels(**ids)
        self.predictions = counters["speech_predictions_total"]
        self.confidence = histograms["speech_confidence"]
        self.batch_size = histograms["speech_batch_size"].labels(**ids)
        self._reference = reference
        self._reference.set_reference(model, version, None)  # available 0 until load() says otherwise
        # Children by label values: label lookups cost ~3 µs each and a request makes a dozen. Every key is
        # a value of a bounded label set (the slices are allow-listed), so these stay as small as the series.
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._stage_children: dict[str, _Observer] = {}
        self._prediction_children: dict[tuple[str, str, str, str], Counter] = {}
        self._confidence_children: dict[tuple[str, str, str], _Observer] = {}
        self._precreate(labels, slices)

    def _precreate(self, labels: list[str], slices: tuple[str, ...]) -> None:
        # Rate queries over a series that appears only at the first error see "no data"; start them at 0.
        # A per-slice unknown-rate needs its numerator at 0 in every slice and band, hence the full product.
        for protocol, outcome, slice_ in itertools.product(PROTOCOLS, OUTCOMES, slices):
            self.requests.labels(protocol=protocol, outcome=outcome, slice=slice_, **self._ids)
        for stage in STAGES:
            self.duration.labels(stage=stage, **self._ids)
        answers = sorted(set(labels) | {"_silence_"})
        for label, slice_, level, duration in itertools.product(answers, slices, LEVEL_BANDS, DURATION_BANDS):
            self.predictions.labels(label=label, slice=slice_, level_band=level, duration_band=duration, **self._ids)

    def set_reference(self, reference: Reference | None) -> None:
        """Export this version's reference distribution (None: speech_reference_available 0, no buckets)."""
        self._reference.set_reference(self._ids["model"], self._ids["version"], reference)

    def count_request(self, protocol: str, outcome: str, slice_: str) -> None:
        key = (protocol, outcome, slice_)
        if key not in self._request_children:
            self._request_children[key] = self.requests.labels(
                protocol=protocol, outcome=outcome, slice=slice_, **self._ids
            )
        self._request_children[key].inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        if stage not in self._stage_children:
            self._stage_children[stage] = self.duration.labels(stage=stage, **self._ids)
        self._stage_children[stage].observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def observe_clip(self, result: ClipResult, level_dbfs: float, times: StageTimes, slice_: str) -> None:
        """Input and output metrics for one answered clip of a request in `slice_`, and its batch's stage times."""
        self.audio_seconds.inc(result.duration_s)
        self.input_duration.observe(result.duration_s)
        self.input_level.observe(level_dbfs)
        self.speech_ratio.observe(result.speech_ratio)
        group = (slice_, compute_level_band(level_dbfs), compute_duration_band(result.duration_s))
        self._prediction_child(result.label, group).inc()
        self._confidence_child(group).observe(result.confidence)
        self.observe_stage("vad", times.vad)
        self.observe_stage("features", times.features)
        self.observe_stage("recognize", times.recognize)

    def _prediction_child(self, label: str, group: tuple[str, str, str]) -> Counter:
        """The predictions child for one answer label in one (slice, level_band, duration_band) group."""
        key = (label, *group)
        if key not in self._prediction_children:
            slice_, level, duration = group
            self._prediction_children[key] = self.predictions.labels(
                label=label, slice=slice_, level_band=level, duration_band=duration, **self._ids
            )
        return self._prediction_children[key]

    def _confidence_child(self, group: tuple[str, str, str]) -> _Observer:
        if group not in self._confidence_children:
            slice_, level, duration = group
            self._confidence_children[group] = self.confidence.labels(
                slice=slice_, level_band=level, duration_band=duration, **self._ids
            )
        return self._confidence_children[group]
