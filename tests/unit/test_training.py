"""The training package: gradient check, ONNX export round trip, augmentation and the CLI checks.

Nothing here synthesizes speech or trains a real model; it runs in a few seconds.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest

from speech_serving.training import augment as A
from speech_serving.training import export
from speech_serving.training import model as M
from speech_serving.training.__main__ import build_parser
from speech_serving.training.dataset import Corpus, Recipe, compute_training_set
from speech_serving.training.synth import WordSet, compute_trimmed
from speech_serving.training.train import TrainSettings, compute_learning_rate, compute_trained
from speech_serving.training.voices import LABELS, Utterance, Variant, compute_split, compute_utterances

pytestmark = pytest.mark.unit


def _numeric_grad(params, x, y, name, eps=1e-6):
    grad = np.zeros_like(params[name])
    for idx in np.ndindex(grad.shape):
        old = params[name][idx]
        params[name][idx] = old + eps
        plus, _ = M.compute_loss_and_grads(params, x, y)
        params[name][idx] = old - eps
        minus, _ = M.compute_loss_and_grads(params, x, y)
        params[name][idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def test_hand_written_gradients_match_finite_differences():
    arch = M.Architecture(n_mels=6, channels=5, n_classes=4)
    params = M.compute_initial_params(arch, seed=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    for name in params:
        if name.endswith(".b"):  # non-zero biases so their paths are exercised too
            params[name] = rng.normal(0, 0.1, params[name].shape)
    x = rng.standard_normal((3, 6, 13))  # odd frame count: the pooling drops a frame
    y = np.array([0, 3, 1])
    _, grads = M.compute_loss_and_grads(params, x, y)
    for name in params:
        numeric = _numeric_grad(params, x, y, name)
        error = np.abs(numeric - grads[name]).max() / (np.abs(numeric).max() + 1e-12)
        assert error < 1e-6, name


def test_onnx_export_computes_the_same_probabilities_as_numpy():
    params = M.compute_initial_params(M.Architecture(), seed=3)
    rng = np.random.default_rng(4)
    mean = rng.normal(-6, 1, 40).astype(np.float32)
    std = rng.uniform(1, 3, 40).astype(np.float32)
    meta = export.compute_metadata([f"l{i}" for i in range(12)], "vtest", {"description": "t"})
    model = export.compute_onnx_model(params, mean, std, meta)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for frames in (98, 37, 4):
        feats = rng.normal(-6, 3, (2, 40, frames)).astype(np.float32)
        expected = M.compute_softmax(M.compute_forward(params, (feats - mean[:, None]) / std[:, None]))
        got = session.run(None, {"features": feats})[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    stored = session.get_modelmeta().custom_metadata_map
    assert stored["version"] == "vtest" and json.loads(stored["labels"])[0] == "l0"


def test_training_learns_a_separable_toy_problem_reproducibly():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, 240)
    feats = rng.normal(0, 1, (240, 40, 12)).astype(np.float32)
    feats[np.arange(240), labels * 3, :] += 4.0  # class k lights up mel band 3k
    settings = TrainSettings(epochs=4, batch_size=32, learning_rate=1e-2, seed=5)
    params, mean, std, summary = compute_trained(feats, labels, settings)
    logits = M.compute_forward(params, (feats - mean[:, None]) / std[:, None])
    assert (logits.argmax(axis=1) == labels).mean() > 0.95
    assert summary["loss_per_epoch"][-1] < summary["loss_per_epoch"][0]
    again, *_ = compute_trained(feats, labels, settings)
    np.testing.assert_array_equal(again["dense.w"], params["dense.w"])


def test_learning_rate_warms_up_then_decays_to_five_percent():
    s = TrainSettings(learning_rate=1.0)
    assert compute_learning_rate(s, 0, 1000) < 0.1
    assert compute_learning_rate(s, 20, 1000) == pytest.approx(1.0, abs=1e-3)
    assert compute_learning_rate(s, 999, 1000) == pytest.approx(0.05, abs=1e-3)


def test_split_keeps_families_together_and_both_genders_on_both_sides():
    variants = [Variant(f"m{i}", "M") for i in range(1, 9)] + [Variant(n, "M") for n in "abcdefghij"]
    variants += [Variant(f"f{i}", "F") for i in range(1, 5)] + [Variant(n, "F") for n in "klmno"]
    train, test = compute_split(variants, 0.25, seed=1)
    assert {v.family for v in train}.isdisjoint({v.family for v in test})
    assert {v.gender for v in test} == {"M", "F"} == {v.gender for v in train}
    assert len(train) + len(test) == len(variants)
    assert Variant("iven3", "M").family == Variant("Iven", "M").family == "iven"


def test_utterances_are_reproducible_and_within_ranges():
    voices = [Variant("a", "M"), Variant("b", "F")]
    one = compute_utterances(voices, 5, seed=3, pitch_range=(80, 99))
    assert one == compute_utterances(voices, 5, seed=3, pitch_range=(80, 99))
    assert len(one) == 55 and all(80 <= u.pitch <= 99 and 120 <= u.speed <= 230 for u in one)
    assert {u.label for u in one if u.word == "yes"} == {"yes"}


def _tiny_corpus() -> Corpus:
    """Five training words: male "yes" at pitch 10 and 50, male "no" at 80, female "up", whispered "on"."""
    spoken = [("yes", "m1", 10), ("no", "m1", 80), ("up", "f1", 10), ("yes", "m2", 50), ("on", "whisper", 10)]
    utterances = [Utterance(w, w, "en", v, 150, p) for w, v, p in spoken]
    word = (np.sin(np.arange(1600) * 0.3) * 8000).astype(np.int16)
    words = WordSet(utterances, np.tile(word, len(spoken)), np.arange(len(spoken) + 1) * word.size)
    voices = [Variant("m1", "M"), Variant("m2", "M"), Variant("f1", "F"), Variant("whisper", "M")]
    return Corpus(voices, [], words, {})


def _label_counts(labels: np.ndarray) -> dict[str, int]:
    return {LABELS[i]: int(c) for i, c in enumerate(np.bincount(labels, minlength=len(LABELS))) if c}


def test_recipe_keeps_only_its_genders_at_or_below_max_pitch_without_excluded_families():
    """v6's filter: no female voice, no word above the pitch cap, no excluded family reaches training."""
    recipe = Recipe(genders=("M",), max_pitch=50, exclude_families=("whisper",), augmented_copies=1)
    features, labels = compute_training_set(_tiny_corpus(), recipe, 7)
    # the two male "yes" words (pitch 10 and 50) + as many silence clips, one clean and one augmented copy
    assert _label_counts(labels) == {"_silence_": 4, "yes": 4}
    assert features.shape == (8, 40, 98)
    _, everything = compute_training_set(_tiny_corpus(), Recipe(), 7)  # defaults: both genders, pitch ≤ 99
    assert _label_counts(everything) == {"_silence_": 2, "yes": 2, "no": 1, "up": 1, "on": 1}


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_pitch", 100),
        ("max_pitch", -1),
        ("genders", ("M", "X")),
        ("genders", ()),
        ("snr_db", (10.0, 0.0)),
        ("p_noise", 1.5),
        ("augmented_copies", -1),
        ("exclude_families", ("Whisper",)),
    ],
)
def test_recipe_rejects_bad_fields_naming_them(field, value):
    with pytest.raises(ValueError, match=f"Recipe: {field}: expected"):
        Recipe(**{field: value})


def test_augmentation_noise_uses_the_recipe_snr_range():
    rng = np.random.default_rng(2)
    clip = A.compute_placed(np.sin(np.arange(4000) * 0.2), rng, peak_dbfs=-6, max_shift_s=0)
    speech = np.abs(clip) > 1e-6
    for _ in range(5):
        noisy = A.compute_augmented(clip, rng, p_noise=1.0, p_mic=0.0, snr_db=(4.0, 6.0))
        snr = 10 * np.log10(np.mean(clip[speech] ** 2) / np.mean((noisy - clip) ** 2))
        assert 3.7 <= snr <= 6.3


def test_trim_cuts_quiet_edges():
    tone = (np.sin(np.arange(3200) * 0.3) * 10000).astype(np.int16)
    audio = np.concatenate([np.zeros(1600, np.int16), tone, np.full(800, 3, np.int16)])
    trimmed = compute_trimmed(audio)
    assert 3100 <= trimmed.size <= 3360


@pytest.mark.parametrize("kind", A.NOISE_KINDS)
def test_noise_is_unit_rms(kind):
    noise = A.compute_noise(kind, np.random.default_rng(0))
    assert noise.shape == (16000,) and np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-3)


def test_noise_is_added_at_the_requested_snr():
    rng = np.random.default_rng(1)
    clip = A.compute_placed(np.sin(np.arange(4000) * 0.2), rng, peak_dbfs=-6, max_shift_s=0)
    noisy = A.compute_with_noise(clip, "white", 5.0, rng)
    speech = np.abs(clip) > 1e-6
    snr = 10 * np.log10(np.mean(clip[speech] ** 2) / np.mean((noisy - clip) ** 2))
    assert snr == pytest.approx(5.0, abs=0.3)
    assert np.abs(clip).max() == pytest.approx(10 ** (-6 / 20), rel=1e-4)


def test_band_pass_removes_low_frequencies():
    t = np.arange(16000) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 100 * t) + 0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = np.abs(np.fft.rfft(A.compute_band_passed(clip, 500, 3000)))
    assert out[100] < 0.1 * out[1000]


@pytest.mark.parametrize(
    "argv, flag",
    [(["--workers", "3"], "--workers"), (["--versions", "v1,v9"], "--versions"), (["--seed", "x"], "--seed")],
)
def test_cli_rejects_bad_flags_naming_them(argv, flag, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert flag in err and "expected" in err


def test_cli_orders_versions_so_bases_come_first():
    assert build_parser().parse_args(["--versions", "v4,v2"]).versions == ["v2", "v4"]


def test_cli_reports_missing_tools_with_the_fix(tmp_path, monkeypatch, capsys):
    from speech_serving.training.__main__ import main

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no espeak-ng, no sox
    assert main(["--out-dir", str(tmp_path / "m"), "--clips-file", str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err
    assert "`espeak-ng` not found" in err and "`sox` not found" in err and "make sysdeps" in err
    assert not (tmp_path / "m").exists()
