"""The espeak-ng voice catalogue, the by-family train/test split and the utterance specs.

A voice is an accent (espeak language) plus a variant; variants of one family (iven, iven2, ...)
always land on the same side of the split so test voices are never heard in training.
"""

from __future__ import annotations

import dataclasses
import random
import re
import subprocess

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_LABEL = "_unknown_"
SILENCE_LABEL = "_silence_"
# Output order of the recognizer: the index of a label is its class id.
LABELS = (SILENCE_LABEL, UNKNOWN_LABEL) + KEYWORDS
UNKNOWN_WORDS = (
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "four",
    "happy",
    "house",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "wow",
    "zero",
    "learn",
    "follow",
    "forward",
    "backward",
    "visual",
)
# espeak-ng's built-in English accents (no mbrola voices: those need extra packages).
ACCENTS = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One espeak-ng voice variant (file name under !v/) with its declared gender."""

    name: str
    gender: str  # "M" or "F"

    @property
    def family(self) -> str:
        return re.sub(r"\d+$", "", self.name.lower())


@dataclasses.dataclass(frozen=True)
class Utterance:
    """Everything needed to synthesize one word deterministically."""

    word: str
    label: str
    accent: str
    variant: str
    speed: int  # words per minute
    pitch: int  # 0..99

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


def fetch_variants() -> list[Variant]:
    """Parse `espeak-ng --voices=variant` (sorted by name so the split is stable)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True).stdout
    variants = []
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5 or not cols[4].startswith("!v/"):
            continue
        variants.append(Variant(name=cols[4][3:], gender=cols[2].split("/")[-1]))
    return sorted(variants, key=lambda v: v.name)


def compute_split(variants: list[Variant], test_share: float, seed: int) -> tuple[list[Variant], list[Variant]]:
    """Split by family, separately per gender, so both sides hold male and female voices."""
    rng = random.Random(seed)
    chosen: set[str] = set()  # families held out; a family is never split, even across genders
    for gender in ("M", "F"):
        pool = [v for v in variants if v.gender == gender]
        families = sorted({v.family for v in pool} - chosen)
        rng.shuffle(families)
        target = max(1, round(test_share * len(pool)))
        count = sum(1 for v in pool if v.family in chosen)
        for family in families:
            if count >= target:
                break
            chosen.add(family)
            count += sum(1 for v in pool if v.family == family)
    by_gender = sorted(variants, key=lambda v: v.gender != "M")  # stable: males first, as listed
    test = [v for v in by_gender if v.family in chosen]
    train = [v for v in by_gender if v.family not in chosen]
    return train, test


def compute_utterances(
    variants: list[Variant],
    per_class: int,
    seed: int,
    pitch_range: tuple[int, int] = (0, 99),
    labels: tuple[str, ...] = (UNKNOWN_LABEL,) + KEYWORDS,
) -> list[Utterance]:
    """`per_class` utterances of each label (a random one of 25 words for `_unknown_`)."""
    rng = random.Random(seed)
    out = []
    for label in labels:
        for _ in range(per_class):
            variant = rng.choice(variants)
            word = rng.choice(UNKNOWN_WORDS) if label == UNKNOWN_LABEL else label
            out.append(
                Utterance(
                    word=word,
                    label=label,
                    accent=rng.choice(ACCENTS),
                    variant=variant.name,
                    speed=rng.randint(120, 230),
                    pitch=rng.randint(*pitch_range),
                )
            )
    return out
