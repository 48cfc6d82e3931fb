"""Builds the training sets and the labelled evaluation slices from the synthesized corpus.

Slices (all from voices never used in training): clean_male, young (female, pitch 80–99),
noisy (0–10 dB SNR), other_mic (band-pass), clean_all; `silence` holds background noise only.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np

from speech_serving.features import compute_log_mel_batch
from speech_serving.training import augment as A
from speech_serving.training import synth
from speech_serving.training.voices import (
    KEYWORDS,
    LABELS,
    SILENCE_LABEL,
    UNKNOWN_LABEL,
    Utterance,
    Variant,
    compute_split,
    compute_utterances,
    fetch_variants,
)

SLICES = ("clean_male", "young", "noisy", "other_mic", "clean_all")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything that decides which audio exists; its hash names the synthesis cache."""

    seed: int = 20261123
    test_share: float = 0.25  # share of voices (by family, per gender) held out for evaluation
    train_per_class: int = 800  # synthesized words per keyword
    eval_per_class: int = 100  # per keyword and slice
    # `_unknown_` (25 words) gets this many times a keyword's share, as in real command data;
    # it makes `_unknown_` the majority class a model that learnt nothing falls back to.
    unknown_factor: int = 2


@dataclasses.dataclass
class Corpus:
    train_voices: list[Variant]
    test_voices: list[Variant]
    train: synth.WordSet
    evaluation: dict[str, synth.WordSet]  # clean_male / young / all


@dataclasses.dataclass
class LabelledAudio:
    """int16 clips [n, 16000] with class ids and the voice that spoke each (`noise` for silence)."""

    audio: np.ndarray
    labels: np.ndarray
    voices: list[str]


def _ensure_set(config, name, voices, per_class, seed, pitch_range, workers) -> synth.WordSet:
    """All labels once, then the extra `_unknown_` words as a second cached set."""
    base = compute_utterances(voices, per_class, seed, pitch_range)
    parts = [synth.ensure_words(base, name, workers)]
    extra = (config.unknown_factor - 1) * per_class
    if extra > 0:
        more = compute_utterances(voices, extra, seed + 7919, pitch_range, labels=(UNKNOWN_LABEL,))
        parts.append(synth.ensure_words(more, f"{name}-unknown", workers))
    return synth.WordSet.concat(parts)


def ensure_corpus(config: DataConfig, workers: int = 2) -> Corpus:
    """Synthesize (or load cached) training words and the three synthetic evaluation sets."""
    train_v, test_v = compute_split(fetch_variants(), config.test_share, config.seed)
    male = [v for v in test_v if v.gender == "M"]
    female = [v for v in test_v if v.gender == "F"]
    n, s = config.eval_per_class, config.seed
    full = (0, 99)
    evaluation = {
        "clean_male": _ensure_set(config, "eval-clean_male", male, n, s + 1, full, workers),
        "young": _ensure_set(config, "eval-young", female, n, s + 2, (80, 99), workers),
        "all": _ensure_set(config, "eval-all", test_v, n, s + 3, full, workers),
    }
    train = _ensure_set(config, "train", train_v, config.train_per_class, s, full, workers)
    return Corpus(train_v, test_v, train, evaluation)


def _keyword_share(utterances) -> int:
    """Silence examples get as many clips as one keyword has."""
    return sum(1 for u in utterances if u.label == KEYWORDS[0])


def _with_silence(clips, labels, voices, count, rng):
    for _ in range(count):
        clips.append(A.compute_silence_clip(rng))
        labels.append(LABELS.index(SILENCE_LABEL))
        voices.append("noise")


def compute_slice(corpus: Corpus, name: str, seed: int) -> LabelledAudio:
    """One evaluation slice as int16 audio; silence examples make up 1/12 like every class."""
    rng = np.random.default_rng([seed, SLICES.index(name) if name in SLICES else 99])
    source = {"clean_male": "clean_male", "young": "young"}.get(name, "all")
    words = corpus.evaluation[source]
    clips, labels, voices = [], [], []
    if name != "silence":
        for i, utt in enumerate(words.utterances):
            clip = A.compute_placed(words.word(i), rng, rng.uniform(-25, -3), max_shift_s=0.15)
            if name == "noisy":
                kind = A.NOISE_KINDS[int(rng.integers(len(A.NOISE_KINDS)))]
                clip = A.compute_with_noise(clip, kind, rng.uniform(0, 10), rng)
            elif name == "other_mic":
                clip = A.compute_band_passed(clip, rng.uniform(200, 600), rng.uniform(2500, 4000))
            clips.append(clip)
            labels.append(LABELS.index(utt.label))
            voices.append(utt.voice)
    n_silence = _keyword_share(words.utterances)
    _with_silence(clips, labels, voices, n_silence, rng)
    audio = np.stack([A.compute_int16(c) for c in clips])
    return LabelledAudio(audio, np.array(labels, dtype=np.int64), voices)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a version's training set is made from the training words."""

    genders: tuple[str, ...] = ("M", "F")
    augmented_copies: int = 0  # extra corrupted copies of every clip, on top of one clean copy
    p_noise: float = 0.8
    p_mic: float = 0.3
    # Training words spoken at an espeak-ng pitch (`-p`) above this are left out; 99 keeps all.
    max_pitch: int = 99
    # Voice families (Variant.family, e.g. "whisper") whose training words are left out; with
    # genders=("M",) these take the voices a slice regression (v6) should fail on out of training.
    exclude_families: tuple[str, ...] = ()
    snr_db: tuple[float, float] = (-3.0, 25.0)  # SNR range of the augmentation noise

    def __post_init__(self) -> None:
        problems = []
        if not self.genders or not set(self.genders) <= {"M", "F"}:
            problems.append(f"genders: expected a non-empty subset of ('M', 'F'), got {self.genders!r}")
        if self.augmented_copies < 0:
            problems.append(f"augmented_copies: expected >= 0, got {self.augmented_copies!r}")
        for name in ("p_noise", "p_mic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}: expected a probability 0..1, got {getattr(self, name)!r}")
        if not 0 <= self.max_pitch <= 99:
            problems.append(f"max_pitch: expected an espeak-ng pitch 0..99, got {self.max_pitch!r}")
        if any(f != f.lower() or not f for f in self.exclude_families):
            problems.append(f"exclude_families: expected lower-case family names, got {self.exclude_families!r}")
        if len(self.snr_db) != 2 or not self.snr_db[0] < self.snr_db[1]:
            problems.append(f"snr_db: expected (low, high) with low < high, got {self.snr_db!r}")
        if problems:
            raise ValueError("Recipe: " + "; ".join(problems))

    def is_kept(self, utterance: Utterance, variant: Variant) -> bool:
        """Whether a training word spoken by `variant` goes into this recipe's set."""
        return (
            variant.gender in self.genders
            and variant.family not in self.exclude_families
            and utterance.pitch <= self.max_pitch
        )


def compute_training_clips(corpus: Corpus, recipe: Recipe, seed: int) -> tuple[int, Iterator[tuple[np.ndarray, int]]]:
    """A recipe's training clips in training order: (how many, an iterator of float 1 s clips and class ids).

    One clean copy of every kept word, then the silence clips, then each augmented copy of all of them; the
    clean ones are made at once, the copies as the iterator reaches them (so a pass over them holds one at a
    time). Deterministic for a seed: the features (compute_training_set) and the reference distribution
    (training/reference.py) see the same clips.
    """
    rng = np.random.default_rng(seed)
    variants = {v.name: v for v in corpus.train_voices}
    keep = [i for i, u in enumerate(corpus.train.utterances) if recipe.is_kept(u, variants[u.variant])]
    base, labels = [], []
    for i in keep:
        base.append(A.compute_placed(corpus.train.word(i), rng, rng.uniform(-30, -1), max_shift_s=0.25))
        labels.append(LABELS.index(corpus.train.utterances[i].label))
    n_silence = _keyword_share([corpus.train.utterances[i] for i in keep])
    silence: list[np.ndarray] = []
    _with_silence(silence, labels, [], n_silence, rng)
    clips = base + silence

    def in_order() -> Iterator[tuple[np.ndarray, int]]:
        yield from zip(clips, labels, strict=True)
        for _ in range(recipe.augmented_copies):
            for clip, label in zip(clips, labels, strict=True):
                yield A.compute_augmented(clip, rng, recipe.p_noise, recipe.p_mic, recipe.snr_db), label

    return len(clips) * (1 + recipe.augmented_copies), in_order()


def compute_training_set(corpus: Corpus, recipe: Recipe, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features [n, 40, 98] float32 and class ids for a recipe (deterministic for a seed)."""
    _, clips = compute_training_clips(corpus, recipe, seed)
    features, labels = [], []
    while chunk := list(itertools.islice(clips, 2048)):
        features.append(compute_log_mel_batch(np.stack([A.compute_int16(clip) for clip, _ in chunk])))
        labels += [label for _, label in chunk]
    return np.concatenate(features), np.array(labels, dtype=np.int64)
