"""Reference distributions (training/reference.py): counts on the server's buckets for a small synthetic set,
the same counts the live server's histograms show for the same clips, the subsample, the card format's checks."""

from __future__ import annotations

import base64
import copy

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from speech_serving.features import compute_log_mel_batch
from speech_serving.metrics import REFERENCE_INPUTS, compute_le_labels
from speech_serving.pipeline import load_pipeline
from speech_serving.server.app import build_app
from speech_serving.training import augment as A
from speech_serving.training.__main__ import build_parser
from speech_serving.training.dataset import Corpus, Recipe, compute_training_clips, compute_training_set
from speech_serving.training.reference import (
    ReferenceCardError,
    _bucket_ranges,
    compute_reference,
    compute_reference_lines,
    compute_subsample_step,
    compute_training_root,
    fetch_reference,
    parse_reference,
)
from speech_serving.training.synth import WordSet
from speech_serving.training.voices import Utterance, Variant
from tests.support.speech_fixtures import (
    LABELS,
    make_reference,
    make_speech_model,
    synthesize_word,
    write_model_card,
    write_tiny_recognizer,
)

pytestmark = pytest.mark.unit

DURATION, LEVEL, RATIO = "speech_input_duration_seconds", "speech_input_level_dbfs", "speech_vad_speech_ratio"


def _tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return np.round(np.sin(2 * np.pi * 440 * t) * amplitude * 32767).astype(np.int16)


def _nonzero(histogram: dict) -> dict[str, int]:
    return {le: c for le, c in zip(histogram["le"], histogram["counts"], strict=True) if c}


@pytest.fixture(scope="module")
def always_yes(tmp_path_factory):
    return load_pipeline(write_tiny_recognizer(tmp_path_factory.mktemp("m") / "yes.onnx", always="yes"))


def test_a_small_synthetic_set_lands_in_the_hand_computed_buckets(always_yes):
    clips = [
        np.zeros(16000, np.int16),  # 1 s digital silence: -120 dBFS floor, no speech
        np.zeros(32000, np.int16),  # 2 s digital silence: a long clip with no VAD segment -> _silence_
        _tone(1.0, 0.1),  # RMS 0.1 / sqrt(2) = 0.0707 -> 20 log10 = -23.0 dBFS: the (-25, -20] bucket
        _tone(1.0, 0.01),  # -43.0 dBFS: the (-45, -40] bucket
    ]
    reference = compute_reference(always_yes, clips, LABELS, "four test clips")
    assert reference["n"] == 4 and reference["inputs"] == "four test clips"
    histograms = reference["histograms"]
    assert set(histograms) == set(REFERENCE_INPUTS)
    for name, buckets in REFERENCE_INPUTS.items():
        assert histograms[name]["le"] == compute_le_labels(buckets)  # the server's own le strings, +Inf last
        assert histograms[name]["le"][-1] == "+Inf"
    assert _nonzero(histograms[DURATION]) == {"1.0": 3, "2.0": 1}  # le semantics: exactly 1.0 s is in le="1.0"
    assert _nonzero(histograms[LEVEL]) == {"-90.0": 2, "-20.0": 1, "-40.0": 1}
    assert _nonzero(histograms[RATIO]) == {"0.0": 4}  # Silero hears no speech in silence or a pure tone
    # a keyword-length clip is scored whole (the model always says yes); the long silent one is _silence_
    assert reference["predictions"] == {label: 0 for label in LABELS} | {"yes": 3, "_silence_": 1}
    assert "decode_array" in reference["method"] and "run_batch" in reference["method"]


async def test_the_reference_counts_what_the_live_histograms_count_for_the_same_clips(tmp_path, always_yes):
    """The point of computing with the server's code: the same clips give the same buckets live and in the card."""
    clips = [synthesize_word("yes"), synthesize_word("stop"), _tone(1.0, 0.3), np.zeros(16000, np.int16)]
    reference = compute_reference(always_yes, clips, LABELS, "same clips")
    model = make_speech_model(write_tiny_recognizer(tmp_path / "yes.onnx", always="yes"), model_version="ref-live")
    app = build_app(model)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://speech") as client:
        for clip in clips:
            body = {"instances": [{"audio_b64": base64.b64encode(clip.tobytes()).decode()}]}
            assert (await client.post("/v1/models/speech-commands:predict", json=body)).status_code == 200
        text = (await client.get("/metrics")).text
    live = {
        (family.name, s.labels["le"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels.get("version") == "ref-live"
    }
    for name in REFERENCE_INPUTS:
        cumulative = np.cumsum(reference["histograms"][name]["counts"]).tolist()
        assert [live[(name, le)] for le in reference["histograms"][name]["le"]] == cumulative, name
    speech = sum(reference["histograms"][RATIO]["counts"][1:])
    assert speech >= 2  # the two spoken words have VAD speech, so the ratio histogram is not trivially all-zero


def test_the_subsample_step_keeps_at_most_max_clips():
    assert compute_subsample_step(10, 4) == 3  # every 3rd from the first: 0, 3, 6, 9 (k = ceil(10 / 4))
    assert compute_subsample_step(8, 4) == 2
    assert compute_subsample_step(3, 4) == 1
    assert compute_subsample_step(31200, 2000) == 16  # v2's training set: 1,950 clips
    with pytest.raises(ReferenceCardError, match="max_clips: expected >= 1"):
        compute_subsample_step(1, 0)


def test_no_clips_is_an_error_not_an_empty_reference(always_yes):
    with pytest.raises(ReferenceCardError, match="reference of nothing: no clips to measure"):
        compute_reference(always_yes, [], LABELS, "nothing")


GOOD = make_reference({DURATION: {"1.0": 2}, LEVEL: {"-25.0": 2}, RATIO: {"0.5": 2}}, {"yes": 1, "no": 1})


def _broken(change) -> dict:
    raw = copy.deepcopy(GOOD)
    change(raw)
    return raw


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "reference: expected an object, got list"),
        (_broken(lambda r: r.update(n=0)), r"reference.n: expected an integer >= 1, got 0"),
        (_broken(lambda r: r.update(n=True)), r"reference.n: expected an integer >= 1, got True"),
        (_broken(lambda r: r["histograms"].pop(LEVEL)), r"reference.histograms: expected exactly"),
        (
            _broken(lambda r: r["histograms"][LEVEL]["le"].pop(0)),
            r"reference.histograms.speech_input_level_dbfs.le: .* are not this server's buckets",
        ),
        (
            _broken(lambda r: r["histograms"][RATIO]["counts"].pop()),
            r"reference.histograms.speech_vad_speech_ratio.counts: expected 13 integers >= 0",
        ),
        (
            _broken(lambda r: r["histograms"][RATIO]["counts"].__setitem__(0, -1)),
            r"reference.histograms.speech_vad_speech_ratio.counts: expected 13 integers >= 0",
        ),
        (
            _broken(lambda r: r["histograms"][DURATION]["counts"].__setitem__(0, 5)),
            r"reference.histograms.speech_input_duration_seconds.counts: add up to 7, expected reference.n = 2",
        ),
        (_broken(lambda r: r.update(predictions={})), r"reference.predictions: expected an object of label -> count"),
        (
            _broken(lambda r: r["predictions"].update(yes=2.5)),
            r"reference.predictions: expected label -> integer >= 0, got 'yes': 2.5",
        ),
        (_broken(lambda r: r["predictions"].update(go=3)), r"reference.predictions: add up to 5, expected"),
    ],
)
def test_a_card_reference_the_server_cannot_export_is_refused_naming_the_field(raw, message):
    with pytest.raises(ReferenceCardError, match=message):
        parse_reference(raw)


def test_the_card_round_trip_keeps_counts_and_answers(tmp_path, always_yes):
    model = write_tiny_recognizer(tmp_path / "m.onnx", always="yes")
    raw = compute_reference(always_yes, [np.zeros(16000, np.int16), _tone(2.0, 0.1)], LABELS, "two clips")
    write_model_card(model, raw)
    reference, why = fetch_reference(model)
    assert why == "" and reference is not None
    assert reference.n == 2 and reference.inputs == "two clips"
    assert {name: list(counts) for name, counts in reference.histograms.items()} == {
        name: raw["histograms"][name]["counts"] for name in REFERENCE_INPUTS
    }
    assert reference.predictions == raw["predictions"]


def test_a_card_for_another_file_or_without_a_reference_gives_none_and_says_why(tmp_path):
    model = write_tiny_recognizer(tmp_path / "m.onnx")
    assert fetch_reference(model) == (None, f"no model card m.json next to {model}")
    write_model_card(model, GOOD, sha256="0" * 64)
    reference, why = fetch_reference(model)
    assert reference is None and "describes another file" in why
    write_model_card(model, None)
    reference, why = fetch_reference(model)
    assert reference is None and "has no reference (speech-train --reference-only writes one)" in why
    write_model_card(model, _broken(lambda r: r.update(n=-3)))
    reference, why = fetch_reference(model)
    assert reference is None and "reference.n: expected an integer >= 1, got -3" in why
    model.with_suffix(".json").write_text("{not json")
    reference, why = fetch_reference(model)
    assert reference is None and "not readable JSON" in why


def _tiny_corpus() -> Corpus:
    """Three training words by two male voices and one female voice."""
    spoken = [("yes", "m1"), ("no", "m2"), ("up", "f1")]
    utterances = [Utterance(w, w, "en", v, 150, 50) for w, v in spoken]
    word = (np.sin(np.arange(4000) * 0.3) * 8000).astype(np.int16)
    words = WordSet(utterances, np.tile(word, len(spoken)), np.arange(len(spoken) + 1) * word.size)
    return Corpus([Variant("m1", "M"), Variant("m2", "M"), Variant("f1", "F")], [], words, {})


def test_the_training_clips_are_the_ones_the_features_are_made_of():
    """compute_training_set is log-mel of compute_training_clips, in order: the reference sees the training inputs."""
    recipe = Recipe(genders=("M",), augmented_copies=2)
    total, clips = compute_training_clips(_tiny_corpus(), recipe, 5)
    audio, labels = zip(*clips, strict=True)
    # 2 male words + as many silence clips (one keyword's share: "yes" once), each in 1 clean + 2 augmented copies
    assert total == len(audio) == (2 + 1) * 3
    assert [LABELS[i] for i in labels] == ["yes", "no", "_silence_"] * 3
    features, set_labels = compute_training_set(_tiny_corpus(), recipe, 5)
    assert np.array_equal(compute_log_mel_batch(np.stack([A.compute_int16(c) for c in audio])), features)
    assert list(set_labels) == list(labels)
    assert not np.array_equal(audio[0], audio[3])  # the copies are augmented, not repeated


def test_derived_versions_take_their_base_s_training_inputs():
    assert {v: compute_training_root(v) for v in ("v1", "v2", "v3", "v4", "v5")} == {
        "v1": "v1",
        "v2": "v2",
        "v3": "v3",
        "v4": "v2",
        "v5": "v2",
    }


def test_the_card_page_summarises_the_reference():
    lines = compute_reference_lines(GOOD)
    text = "\n".join(lines)
    assert "## Reference distribution" in text
    assert "\nby hand.\n" in text  # where the clips came from (speech-train writes which and how many)
    assert "- level (dBFS): -30…-25 100%" in text  # the (-30, -25] bucket
    assert "- duration (s): 0.5…1 100%" in text
    assert "- VAD speech share: 0.4…0.5 100%" in text
    assert "- the model's answers: yes 50.0%, no 50.0%" in text
    assert _bucket_ranges(["0.25", "0.5", "+Inf"]) == ["≤ 0.25", "0.25…0.5", "> 0.5"]


def test_the_cli_has_the_reference_flags_with_bounds():
    args = build_parser().parse_args(["--reference-only", "--versions", "v4,v1"])
    assert args.reference_only and args.versions == ["v1", "v4"] and args.reference_clips == 2000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--reference-clips", "5"])
