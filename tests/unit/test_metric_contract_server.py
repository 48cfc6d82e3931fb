"""Pins the model server's half of the metric contract: names, types and label sets on /metrics.

The names are written out here on purpose: renaming one in metrics.py must fail this test (and the docs).
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from speech_serving.metrics import CONTRACT
from speech_serving.server.app import build_app
from tests.support.speech_fixtures import (
    LABELS,
    make_reference,
    make_speech_model,
    synthesize_word,
    write_model_card,
    write_tiny_recognizer,
)

pytestmark = pytest.mark.unit
VERSION = "contract-v3"
BASE = {"model", "version"}
# family name → (type, label names). Counters are exposed as <family>_total.
PINNED = {
    "speech_requests": ("counter", BASE | {"protocol", "outcome", "slice"}),
    "speech_request_duration_seconds": ("histogram", BASE | {"stage"}),
    "speech_audio_seconds": ("counter", BASE),
    "speech_input_duration_seconds": ("histogram", BASE),
    "speech_input_level_dbfs": ("histogram", BASE),
    "speech_vad_speech_ratio": ("histogram", BASE),
    "speech_predictions": ("counter", BASE | {"label", "slice", "level_band", "duration_band"}),
    "speech_confidence": ("histogram", BASE | {"slice", "level_band", "duration_band"}),
    "speech_batch_size": ("histogram", BASE),
    "speech_reference_available": ("gauge", BASE),
    "speech_reference_input_duration_seconds_bucket": ("gauge", BASE | {"le"}),
    "speech_reference_input_duration_seconds_count": ("gauge", BASE),
    "speech_reference_input_level_dbfs_bucket": ("gauge", BASE | {"le"}),
    "speech_reference_input_level_dbfs_count": ("gauge", BASE),
    "speech_reference_vad_speech_ratio_bucket": ("gauge", BASE | {"le"}),
    "speech_reference_vad_speech_ratio_count": ("gauge", BASE),
    "speech_reference_prediction_share": ("gauge", BASE | {"label"}),
}
# the scraped model's card: two training clips, both 1 s at -25 dBFS, half speech, answered yes and no
REFERENCE = make_reference(
    {
        "speech_input_duration_seconds": {"1.0": 2},
        "speech_input_level_dbfs": {"-25.0": 2},
        "speech_vad_speech_ratio": {"0.5": 2},
    },
    {"yes": 1, "no": 1},
)
SLICES = ("young", "noisy")  # the allow-list the scraped server runs with
SLICE_VALUES = {"young", "noisy", "none", "other"}


@pytest.fixture(scope="module")
async def scraped(tmp_path_factory) -> dict:
    path = write_tiny_recognizer(tmp_path_factory.mktemp("m") / "tiny.onnx")
    write_model_card(path, REFERENCE)
    app = build_app(make_speech_model(path, model_version=VERSION, slices=SLICES))
    word = base64.b64encode(synthesize_word("no").tobytes()).decode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://speech") as client:
        v1 = {"instances": [{"audio_b64": word}]}
        young = {"x-slice": "young"}
        assert (await client.post("/v1/models/speech-commands:predict", json=v1, headers=young)).status_code == 200
        v2 = {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [word]}]}
        noisy = {"x-slice": "Noisy"}  # matched case-insensitively
        assert (await client.post("/v2/models/speech-commands/infer", json=v2, headers=noisy)).status_code == 200
        silent = {"inputs": [{"name": "audio", "datatype": "INT16", "shape": [32000], "data": [0] * 32000}]}
        assert (await client.post("/v2/models/speech-commands/infer", json=silent)).status_code == 200
        bad = {"instances": [{"audio_b64": "!!"}]}
        unlisted = {"x-slice": "elderly"}
        assert (await client.post("/v1/models/speech-commands:predict", json=bad, headers=unlisted)).status_code == 400
        # Prometheus asks for OpenMetrics first; the server answers the classic format (see app.py)
        resp = await client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert resp.headers["content-type"].startswith("text/plain; version=")
        assert resp.headers["x-model-version"] == VERSION
        text = resp.text
    families = {}
    for fam in text_string_to_metric_families(text):
        samples = [s for s in fam.samples if s.labels.get("version") == VERSION]
        if fam.name.startswith("speech_") and samples:
            families[fam.name] = (fam.type, samples)
    return families


def test_pinned_list_matches_the_code_contract():
    assert {name.removesuffix("_total") if CONTRACT[name][0] == "counter" else name for name in CONTRACT} == set(PINNED)
    for name, (kind, extra, _) in CONTRACT.items():
        assert PINNED[name.removesuffix("_total") if kind == "counter" else name] == (kind, BASE | set(extra))


def test_every_documented_series_exists_with_exact_labels(scraped):
    assert set(scraped) == set(PINNED), "undocumented or missing speech_* families on /metrics"
    for name, (kind, labels) in PINNED.items():
        got_kind, samples = scraped[name]
        assert got_kind == kind, name
        # speech_input_level_dbfs has negative buckets; it must still have _sum (the chart's drift alert)
        suffixes = {"counter": {"_total"}, "gauge": {""}}.get(kind, {"_bucket", "_sum", "_count"})
        main = [s for s in samples if s.name in {name + suf for suf in suffixes}]
        assert {s.name[len(name) :] for s in main} == suffixes, name
        for s in main:
            # a histogram's le comes with its type; a reference gauge's le is one of its pinned labels
            assert set(s.labels) - ({"le"} if kind == "histogram" else set()) == labels, (name, s.labels)
            assert s.labels["model"] == "speech-commands"


def values(scraped, name: str, *labels: str) -> dict:
    """Sample values summed by the given labels (one label: keyed by its value, several: by a tuple)."""
    _, samples = scraped[name]
    summed: dict = {}
    for s in samples:
        if s.name in (name + "_total", name + "_count"):
            key = tuple(s.labels[label] for label in labels)
            summed[key[0] if len(key) == 1 else key] = summed.get(key[0] if len(key) == 1 else key, 0) + s.value
    return summed


def test_label_values_and_counts_after_a_few_requests(scraped):
    requests = values(scraped, "speech_requests", "protocol", "outcome", "slice")
    # every protocol x outcome x slice exists (at 0 until used), and each request counts in its own slice
    expected = {
        (p, o, s): 0 for p in ("v1", "v2") for o in ("ok", "client_error", "server_error") for s in SLICE_VALUES
    }
    expected |= {("v1", "ok", "young"): 1, ("v1", "client_error", "other"): 1}
    expected |= {("v2", "ok", "noisy"): 1, ("v2", "ok", "none"): 1}
    assert requests == expected
    stages = values(scraped, "speech_request_duration_seconds", "stage")
    assert stages == {"decode": 3, "vad": 3, "features": 3, "recognize": 3, "total": 4}
    predictions = values(scraped, "speech_predictions", "label")
    assert set(predictions) == set(LABELS)  # pre-created at 0 so rate() works before the first answer
    assert sum(predictions.values()) == 3 and predictions["_silence_"] >= 1
    by_slice = values(scraped, "speech_predictions", "slice")
    assert by_slice == {"young": 1, "noisy": 1, "none": 1, "other": 0}
    groups = values(scraped, "speech_predictions", "slice", "level_band", "duration_band")
    assert len(groups) == len(SLICE_VALUES) * 4 * 3  # every slice x level band x duration band, pre-created
    # espeak's "no" (1.2 s at about -25 dBFS) is a normal, medium clip; 2 s of digital silence is silent and long
    assert {k: v for k, v in groups.items() if v} == {
        ("young", "normal", "medium"): 1,
        ("noisy", "normal", "medium"): 1,
        ("none", "silent", "long"): 1,
    }
    confidence = values(scraped, "speech_confidence", "slice", "level_band", "duration_band")
    assert {k: v for k, v in confidence.items() if v} == {k: v for k, v in groups.items() if v}
    (audio,) = [s.value for s in scraped["speech_audio_seconds"][1] if s.name == "speech_audio_seconds_total"]
    conf_count = sum(s.value for s in scraped["speech_confidence"][1] if s.name == "speech_confidence_count")
    assert conf_count == 3 and audio > 0.5
    level = {s.labels["le"]: s.value for s in scraped["speech_input_level_dbfs"][1] if s.name.endswith("_bucket")}
    assert level["-90.0"] == 1  # the digital-silence clip sits at the -120 dBFS floor
    (level_sum,) = [s.value for s in scraped["speech_input_level_dbfs"][1] if s.name == "speech_input_level_dbfs_sum"]
    assert level_sum < -120  # three clips, one at -120 dBFS, the others below 0
    assert np.isclose(sum(v for v in values(scraped, "speech_batch_size", "model").values()), 3)


async def test_outcome_is_the_status_class_client_mistakes_never_count_as_server_error(tmp_path):
    """The error-rate gate reads outcome="server_error": a client must not be able to raise it (issue 12)."""
    model = make_speech_model(
        write_tiny_recognizer(tmp_path / "tiny.onnx"), model_version="outcome-v1", max_request_bytes=4096
    )
    app = build_app(model)
    v2 = "/v2/models/speech-commands/infer"
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": "2"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://speech") as client:
        mistakes = [
            client.post(v2, json={"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [None]}]}),
            client.post("/v2/models/speech-commands/versions/v2/infer", json={}),  # unserved path: 404
            client.post("/v2/models/other/infer", json={}),  # another model: 404
            client.post(v2, content=b"{}" + b"\0" * 5000, headers=headers),  # over --max-request-bytes: 413
            client.post("/v1/models/speech-commands:predict", json={"instances": [{"audio_b64": "AAAA"}] * 65}),
        ]
        statuses = [(await m).status_code for m in mistakes]
        assert statuses == [400, 404, 404, 413, 400]
        assert (await client.post("/v2/repository/models/speech-commands/unload")).status_code == 404  # not inference
        model.stop()  # the server's own failure: 503, and that is a server_error
        assert (await client.post(v2, json={})).status_code == 503
        text = (await client.get("/metrics")).text
    requests = {
        (s.labels["protocol"], s.labels["outcome"]): s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "speech_requests"
        for s in fam.samples
        if s.name == "speech_requests_total" and s.labels["version"] == "outcome-v1" and s.labels["slice"] == "none"
    }
    assert requests == {
        ("v1", "ok"): 0,
        ("v1", "client_error"): 1,
        ("v1", "server_error"): 0,
        ("v2", "ok"): 0,
        ("v2", "client_error"): 4,
        ("v2", "server_error"): 1,
    }


def test_the_signed_histogram_exposes_buckets_count_and_sum_once_with_the_library_s_le_labels():
    """SignedHistogram (speech_input_level_dbfs) on prometheus_client's public custom-collector API: its
    exposition must be a normal histogram's, plus the `_sum` the library would leave out."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from speech_serving.metrics import SignedHistogram

    bounds = (-90.0, -30.0, -3.0, 0.0)
    registry = CollectorRegistry()
    level = SignedHistogram("level_dbfs", "level", ("model",), buckets=bounds, registry=registry)
    for value in (-120.0, -30.0, -3.5):
        level.labels(model="m").observe(value)
    level.labels(model="idle")  # a child nobody observed yet: zero everywhere, still a complete histogram
    (family,) = text_string_to_metric_families(generate_latest(registry).decode())
    assert (family.name, family.type, family.documentation) == ("level_dbfs", "histogram", "level")
    reference = Histogram("ref", "ref", buckets=bounds, registry=None)  # the library's own le labels
    le = [s.labels["le"] for f in reference.collect() for s in f.samples if s.name == "ref_bucket"]
    assert le == ["-90.0", "-30.0", "-3.0", "0.0", "+Inf"]

    def expected(model, cumulative, total):
        return [("level_dbfs_bucket", {"model": model, "le": b}, n) for b, n in zip(le, cumulative, strict=True)] + [
            ("level_dbfs_count", {"model": model}, cumulative[-1]),
            ("level_dbfs_sum", {"model": model}, total),
        ]

    assert [(s.name, s.labels, s.value) for s in family.samples] == (
        expected("m", (1, 2, 3, 3, 3), -153.5) + expected("idle", (0, 0, 0, 0, 0), 0.0)
    )


def test_prometheus_client_still_leaves_count_and_sum_out_of_a_negative_bucket_family():
    """Why SignedHistogram adds `_count`/`_sum` itself. It adds only what is missing, so if this starts failing
    (prometheus_client changed), /metrics stays right and SignedHistogram can shrink to the plain family."""
    from prometheus_client import Histogram
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily("x", "x", labels=["m"])
    family.add_metric(["a"], [("-1.0", 1), ("+Inf", 2)], -3.0)
    assert {s.name for s in family.samples} == {"x_bucket"}
    plain = Histogram("y", "y", buckets=(-1.0, 0.0), registry=None)
    plain.observe(-2.0)
    names = {s.name for f in plain.collect() for s in f.samples} - {"y_created"}  # build_app turns _created off
    assert names == {"y_bucket", "y_count"}


def test_the_slow_requests_bounds_are_the_latency_histogram_s_bucket_edges(scraped):
    """The operator's slow-requests template selects le="<bound>" of the end-to-end latency
    histogram; every bound it accepts must be a bucket the server writes, with that exact label."""
    from rollout_operator.domain.templates import LATENCY_BOUNDS

    _, samples = scraped["speech_request_duration_seconds"]
    written = [
        s.labels["le"]
        for s in samples
        if s.name == "speech_request_duration_seconds_bucket" and s.labels["stage"] == "total"
    ]
    assert written == [*LATENCY_BOUNDS.values(), "+Inf"]
