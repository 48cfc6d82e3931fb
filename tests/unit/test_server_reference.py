"""The model server exports the served model's reference distribution (its card's `reference`) as gauges on the
live histograms' buckets; a model without one still serves, logs one line and exports available 0."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from speech_serving.metrics import REFERENCE_INPUTS, compute_le_labels
from speech_serving.server.app import build_app
from tests.support.speech_fixtures import (
    make_reference,
    make_speech_model,
    synthesize_word,
    write_model_card,
    write_tiny_recognizer,
)

pytestmark = pytest.mark.unit

# three clips: 1 s each; levels -27 (le -25), -22 and -21 (le -20); speech shares 0.45 (le 0.5), 0.85, 0.9 (le 0.9)
REFERENCE = make_reference(
    {
        "speech_input_duration_seconds": {"1.0": 3},
        "speech_input_level_dbfs": {"-25.0": 1, "-20.0": 2},
        "speech_vad_speech_ratio": {"0.5": 1, "0.9": 2},
    },
    {"yes": 2, "_silence_": 1, "no": 0},
)


async def _serve_and_scrape(model_path, version: str) -> dict[str, list]:
    """One answered request, then /metrics: the speech_reference_* samples of `version`, by family."""
    app = build_app(make_speech_model(model_path, model_version=version))
    word = base64.b64encode(synthesize_word("yes").tobytes()).decode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://speech") as client:
        body = {"instances": [{"audio_b64": word}]}
        assert (await client.post("/v1/models/speech-commands:predict", json=body)).status_code == 200
        text = (await client.get("/metrics")).text
    return {
        family.name: [s for s in family.samples if s.labels["version"] == version]
        for family in text_string_to_metric_families(text)
        if family.name.startswith("speech_reference_")
    }


def _by_label(samples: list, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples}


async def test_a_model_with_a_reference_exports_it_cumulative_on_the_live_buckets(tmp_path):
    path = write_tiny_recognizer(tmp_path / "tiny.onnx")
    write_model_card(path, REFERENCE)
    got = await _serve_and_scrape(path, "ref-yes")
    assert [s.value for s in got["speech_reference_available"]] == [1.0]
    level = _by_label(got["speech_reference_input_level_dbfs_bucket"], "le")
    assert list(level) == compute_le_labels(REFERENCE_INPUTS["speech_input_level_dbfs"])
    # cumulative like a histogram: 0 up to -30, 1 at le -25, all 3 from le -20 on (+Inf included)
    assert level["-30.0"] == 0 and level["-25.0"] == 1 and level["-20.0"] == 3 and level["+Inf"] == 3
    ratio = _by_label(got["speech_reference_vad_speech_ratio_bucket"], "le")
    assert (ratio["0.4"], ratio["0.5"], ratio["0.8"], ratio["0.9"], ratio["1.0"]) == (0, 1, 1, 3, 3)
    duration = _by_label(got["speech_reference_input_duration_seconds_bucket"], "le")
    assert (duration["0.5"], duration["1.0"], duration["+Inf"]) == (0, 3, 3)
    for name in ("input_level_dbfs", "vad_speech_ratio", "input_duration_seconds"):
        assert [s.value for s in got[f"speech_reference_{name}_count"]] == [3.0]
    shares = _by_label(got["speech_reference_prediction_share"], "label")
    assert shares == pytest.approx({"yes": 2 / 3, "_silence_": 1 / 3, "no": 0.0})
    assert {s.labels["model"] for samples in got.values() for s in samples} == {"speech-commands"}


@pytest.mark.parametrize(
    "version, card, why",
    [
        ("ref-no-card", None, "no model card tiny.json next to"),  # an ONNX file given by path, nothing beside it
        ("ref-old-card", {}, "has no reference"),  # a card written before references existed
        ("ref-bad", {"n": 3}, "reference.histograms: expected exactly"),  # one this server cannot read
    ],
)
async def test_a_model_without_a_usable_reference_still_serves_says_so_once_and_exports_available_0(
    tmp_path, caplog, version, card, why
):
    path = write_tiny_recognizer(tmp_path / "tiny.onnx")
    if card is not None:
        write_model_card(path, card or None)
    with caplog.at_level(logging.INFO, logger="speech_serving.server"):
        got = await _serve_and_scrape(path, version)
    lines = [r.getMessage() for r in caplog.records if "reference distribution" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"model speech-commands {version} has no reference distribution: ") and why in lines[0]
    assert [s.value for s in got["speech_reference_available"]] == [0.0]
    others = {name: samples for name, samples in got.items() if name != "speech_reference_available"}
    assert all(samples == [] for samples in others.values()), others  # no buckets, no shares: nothing to compare
