"""The shipped cards' reference distributions (written by `speech-train --reference-only`): every version has one
the server can export, derived versions share their base's inputs, and the answers follow each model."""

from __future__ import annotations

import pytest

from speech_serving.models import compute_model_path, load_card, load_index
from speech_serving.server.config import ServerSettings
from speech_serving.server.model import SpeechModel
from speech_serving.training.reference import REFERENCE_MAX_CLIPS, fetch_reference, parse_reference
from speech_serving.training.voices import LABELS

pytestmark = pytest.mark.unit

VERSIONS = sorted(load_index()["versions"])
INPUTS = ("speech_input_duration_seconds", "speech_input_level_dbfs", "speech_vad_speech_ratio")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_shipped_card_has_a_reference_the_server_exports(version):
    reference, why = fetch_reference(compute_model_path(version))
    assert reference is not None, why
    assert REFERENCE_MAX_CLIPS // 2 <= reference.n <= REFERENCE_MAX_CLIPS
    assert set(reference.predictions) == set(LABELS)
    raw = load_card(version)["reference"]
    assert "'s training inputs" in raw["inputs"] and f"{reference.n:,} clips" in raw["inputs"]
    assert parse_reference(raw) == reference
    # every training clip is 1 s: one duration bucket (le 1.0) holds them all
    le = raw["histograms"]["speech_input_duration_seconds"]["le"]
    assert dict(zip(le, reference.histograms["speech_input_duration_seconds"], strict=True))["1.0"] == reference.n


def _reference(version):
    return parse_reference(load_card(version)["reference"])


@pytest.mark.parametrize("derived", ["v4", "v5"])
def test_derived_versions_have_v2_s_inputs_and_their_own_answers(derived):
    v2, other = _reference("v2"), _reference(derived)
    assert other.n == v2.n and other.histograms == v2.histograms  # the same clips through the same VAD
    assert "v2's training inputs (base of" in other.inputs
    assert other.predictions != v2.predictions


def test_v4_s_answers_are_v2_s_shifted_by_its_label_map():
    """v4 = v2's weights with labels rotated by one: where v2 answers LABELS[i], v4 answers LABELS[i + 1]."""
    v2, v4 = _reference("v2").predictions, _reference("v4").predictions
    shift = load_card("v4")["training"]["label_shift"]
    assert shift == 1
    assert {LABELS[(i + shift) % len(LABELS)]: v2[label] for i, label in enumerate(LABELS)} == v4


def test_v2_s_noise_augmented_inputs_differ_from_v1_s_clean_ones_where_noise_shows():
    """v2 trained on noise-augmented copies, v1 on clean words only: the reference shows it without labels."""

    def share_at_most(reference, name, index):
        return sum(reference.histograms[name][: index + 1]) / reference.n

    v1, v2 = _reference("v1"), _reference("v2")
    # noise hides speech from the VAD: more of v2's clips have a speech share of 0 (the le 0.0 bucket)
    assert share_at_most(v2, "speech_vad_speech_ratio", 0) > share_at_most(v1, "speech_vad_speech_ratio", 0) + 0.03
    # and it adds energy: fewer of v2's clips are at or below -35 dBFS (le -35.0 is index 6 of the level buckets)
    assert share_at_most(v2, "speech_input_level_dbfs", 6) < share_at_most(v1, "speech_input_level_dbfs", 6)


def test_the_server_serving_a_shipped_version_loads_its_reference():
    model = SpeechModel(ServerSettings(model_version="v2"))
    model.load()
    try:
        assert model.reference == _reference("v2")
    finally:
        model.stop()
