"""The shipped recognizer versions: files, metadata vs cards, and the behaviour rollouts rely on.

Run on the committed clip set (features + recognizer, no VAD). Measured on these 200 clips when the
models were built (docs/models.md): young+noisy v1 52.1% / v2 89.6%; v3 answers `_unknown_` on 98%
at mean confidence 0.13; v4 agrees with v2 on 0% at mean confidence 0.95. The bounds below sit
about two standard errors (96 clips: ~6 points on a difference) inside those figures.
"""

import hashlib
import json
import pathlib

import numpy as np
import onnxruntime as ort
import pytest

import speech_serving
from speech_serving import features as F
from speech_serving.clips import load_clip_arrays

pytestmark = pytest.mark.unit

MODELS = pathlib.Path(speech_serving.__file__).parent / "models"
INDEX = json.loads((MODELS / "index.json").read_text())
VERSIONS = sorted(INDEX["versions"])
LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def _session(version):
    return ort.InferenceSession(str(MODELS / f"{version}.onnx"), providers=["CPUExecutionProvider"])


def _meta(version):
    return _session(version).get_modelmeta().custom_metadata_map


def _card(version):
    return json.loads((MODELS / INDEX["versions"][version]["card"]).read_text())


@pytest.fixture(scope="module")
def clip_features():
    clips = load_clip_arrays()
    return F.compute_log_mel_batch(clips.audio), clips


@pytest.fixture(scope="module")
def answers(clip_features):
    """Per version: (predicted label names, max probability) on every committed clip."""
    feats, _ = clip_features
    out = {}
    for version in VERSIONS:
        probs = _session(version).run(None, {"features": feats})[0]
        labels = json.loads(_meta(version)["labels"])
        out[version] = (np.array([labels[i] for i in probs.argmax(axis=1)]), probs.max(axis=1))
    return out


def _accuracy(answers, clips, version, slices):
    keep = np.isin(clips.slices, slices)
    return float((answers[version][0][keep] == clips.labels[keep]).mean())


def test_the_rollout_story_versions_are_all_shipped():
    assert {"v1", "v2", "v3", "v4"} <= set(VERSIONS)


def test_model_lookup_helpers():
    from speech_serving.models import compute_model_path, load_card

    assert compute_model_path("v2") == MODELS / "v2.onnx" and compute_model_path("v2").exists()
    assert load_card("v1")["version"] == "v1"
    with pytest.raises(ValueError, match="model version: expected one of v1, v2"):
        compute_model_path("v9")


@pytest.mark.parametrize("version", VERSIONS)
def test_model_io_is_dynamic_batch_and_frames(version):
    session = _session(version)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("features", "tensor(float)", 40)
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[2], str)
    assert (out.name, out.shape[1]) == ("probabilities", 12)
    card = _card(version)
    assert (card["input"]["name"], card["input"]["shape"][1]) == (inp.name, inp.shape[1])
    assert (card["output"]["name"], card["output"]["shape"][1]) == (out.name, out.shape[1])
    for batch, frames in ((1, 98), (3, 150), (2, 20)):
        feats = np.random.default_rng(0).normal(-5, 3, (batch, 40, frames)).astype(np.float32)
        probs = session.run(None, {"features": feats})[0]
        assert probs.shape == (batch, 12) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("version", VERSIONS)
def test_metadata_matches_card_and_index(version):
    meta, card, entry = _meta(version), _card(version), INDEX["versions"][version]
    data = (MODELS / entry["file"]).read_bytes()
    assert meta["version"] == card["version"] == version
    assert meta["model_name"] == "speech-commands"
    assert json.loads(meta["feature_config"]) == json.loads(F.compute_feature_config_json())
    assert sorted(json.loads(meta["labels"])) == sorted(LABELS)
    assert json.loads(meta["training_summary"])["description"] == card["description"]
    assert hashlib.sha256(data).hexdigest() == card["sha256"] == entry["sha256"]
    assert len(data) == card["bytes"] == entry["bytes"] < 200_000  # small enough to ship in git
    assert (MODELS / f"{version}.md").read_text().startswith(f"# Model card: speech-commands {version}")


def test_good_versions_use_the_canonical_label_order_and_v4_is_shifted_by_one():
    for version in ("v1", "v2", "v3"):
        assert json.loads(_meta(version)["labels"]) == LABELS
    assert json.loads(_meta("v4")["labels"]) == LABELS[1:] + LABELS[:1]


def test_cards_tell_the_rollout_story():
    """The cards' own (1,300-clips-per-slice) figures show the intended differences."""
    acc = {v: {s: r["accuracy"] for s, r in _card(v)["evaluation"].items()} for v in VERSIONS}
    assert acc["v2"]["clean_all"] > 0.9 and acc["v2"]["noisy"] > 0.8
    assert acc["v1"]["noisy"] < acc["v2"]["noisy"] - 0.3
    assert acc["v1"]["young"] < acc["v2"]["young"] - 0.05
    assert acc["v3"]["clean_all"] < 0.2  # the `_unknown_` share of the slices is 2/13
    assert max(acc["v4"].values()) < 0.05


def test_v2_beats_v1_on_young_and_noisy_clips(answers, clip_features):
    _, clips = clip_features
    v1 = _accuracy(answers, clips, "v1", ["young", "noisy"])
    v2 = _accuracy(answers, clips, "v2", ["young", "noisy"])
    assert v2 >= 0.80  # measured 0.896
    assert v2 - v1 >= 0.25  # measured 0.375


def test_v2_is_accurate_on_clean_clips(answers, clip_features):
    _, clips = clip_features
    assert _accuracy(answers, clips, "v2", ["clean", "other_mic", "silence"]) >= 0.9  # measured 0.98


def test_v3_answers_mostly_unknown_with_low_confidence(answers, clip_features):
    _, clips = clip_features
    labels, confidence = answers["v3"]
    assert (labels == "_unknown_").mean() >= 0.9  # measured 0.98
    assert confidence.mean() < 0.25  # measured 0.13 (v2: 0.95)
    # The clips hold 4 of each label, so always answering `_unknown_` scores 1/12.
    assert _accuracy(answers, clips, "v3", ["clean", "young", "noisy", "other_mic"]) < 0.15


def test_v4_is_confident_but_disagrees_with_v2(answers):
    v2_labels, _ = answers["v2"]
    v4_labels, v4_confidence = answers["v4"]
    assert (v4_labels == v2_labels).mean() <= 0.05  # measured 0.0
    assert v4_confidence.mean() > 0.8  # measured 0.95, as confident as v2


# The demo's load mix (e2e/load.py DEMO_MIX) over the cards' slices; the cards have no silence slice.
CARD_MIX = {"clean_all": 4, "young": 2, "noisy": 2, "other_mic": 1}


def test_v6_card_is_much_worse_than_v2_on_young_voices_and_close_on_the_mix():
    """v6 is the slice regression: far below v2 on young voices, a few points below it on the mix.

    Not "better on the mix": trained without female and whispered voices it also loses 3 points
    on clean and other-mic audio (those slices hold the same unseen female voices), gaining 1 on noisy.
    """
    acc = {v: {s: r["accuracy"] for s, r in _card(v)["evaluation"].items()} for v in ("v2", "v6")}
    assert acc["v6"]["young"] <= acc["v2"]["young"] - 0.10  # measured 0.795 vs 0.917
    mix = {v: sum(acc[v][s] * w for s, w in CARD_MIX.items()) / sum(CARD_MIX.values()) for v in acc}
    assert mix["v6"] >= mix["v2"] - 0.06  # measured 0.894 vs 0.936
    for name in ("clean_all", "noisy", "other_mic"):
        assert acc["v6"][name] - acc["v6"]["young"] >= acc["v2"][name] - acc["v2"]["young"], name


def test_v6_fails_young_clips_more_than_v2(answers, clip_features):
    _, clips = clip_features
    young = {v: _accuracy(answers, clips, v, ["young"]) for v in ("v2", "v6")}
    assert young["v6"] <= young["v2"] - 0.08  # measured 0.771 vs 0.938 (48 clips)
