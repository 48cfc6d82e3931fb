"""A model version's reference distribution: what its training inputs look like to the server, as the card's
`reference` (input level, clip duration, VAD speech share, the model's own answers) on the server's buckets.

Each clip goes through the server's code (decode_array, compute_level_dbfs, SpeechPipeline.run_batch), so a
live histogram on /metrics and the reference count the same thing on the same `le` edges. The server reads
the card back with fetch_reference; a drift distance (rollout_operator.domain.drift) compares the two.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import logging
import math
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from speech_serving.audio import AudioLimits, compute_level_dbfs, decode_array
from speech_serving.metrics import REFERENCE_INPUTS, compute_le_labels
from speech_serving.pipeline import SILENCE, SpeechPipeline, load_pipeline
from speech_serving.training import augment as A
from speech_serving.training.dataset import Corpus, compute_training_clips
from speech_serving.training.versions import VERSIONS

log = logging.getLogger(__name__)

# Clips per pipeline call while computing a reference (the server's default --max-batch).
REFERENCE_BATCH = 16
# At most this many training clips are measured per version: every k-th clip of the training set in its order
# (k = ceil(total / this)), so clean and augmented copies keep their proportions. 2,000 clips put a share's
# standard error under 1.2 points and the PSI of the reference against itself resampled near (buckets - 1) / n
# = 0.008, far under the 0.1 below which a population counts as stable; the server's pipeline measures them in
# about a minute per version on one busy core (26 ms a clip).
REFERENCE_MAX_CLIPS = 2000
METHOD = (
    "each clip as the server measures it: INT16 samples decoded by audio.decode_array, RMS level by "
    "audio.compute_level_dbfs, duration and VAD speech share and the answer by pipeline.SpeechPipeline.run_batch "
    "(Silero VAD + the model); counts per bucket of the server's histograms (metrics.REFERENCE_INPUTS)"
)


class ReferenceCardError(ValueError):
    """A card's `reference` is not one this server can export; the message names the field."""


@dataclass(frozen=True)
class Reference:
    """A validated reference: per-bucket counts for each of REFERENCE_INPUTS (on its buckets, +Inf last),
    answer counts by label, and n, the clips behind every histogram."""

    n: int
    histograms: dict[str, tuple[int, ...]]
    predictions: dict[str, int]
    inputs: str


def compute_bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """The bucket a value falls in: the first upper bound >= value, the +Inf bucket after the last (le)."""
    return bisect.bisect_left(bounds, value)


def compute_reference(
    pipeline: SpeechPipeline, clips: Iterable[np.ndarray], labels: Iterable[str], inputs: str
) -> dict:
    """The card's `reference` for the model in `pipeline` on int16 clips; `labels` are every answer it can give
    (all exported, 0 when never given), `inputs` says in words which clips these are."""
    histograms = {name: [0] * (len(buckets) + 1) for name, buckets in REFERENCE_INPUTS.items()}
    answers = dict.fromkeys(sorted({*labels, SILENCE}), 0)
    n = 0
    batch: list[np.ndarray] = []
    for clip in clips:
        batch.append(decode_array(np.asarray(clip), "reference clip", AudioLimits()))
        if len(batch) == REFERENCE_BATCH:
            n += _count_batch(pipeline, batch, histograms, answers)
            batch = []
    if batch:
        n += _count_batch(pipeline, batch, histograms, answers)
    if n == 0:
        raise ReferenceCardError(f"reference of {inputs}: no clips to measure")
    return {
        "n": n,
        "inputs": inputs,
        "method": METHOD,
        "histograms": {
            name: {"le": compute_le_labels(REFERENCE_INPUTS[name]), "counts": counts}
            for name, counts in histograms.items()
        },
        "predictions": answers,
    }


def _count_batch(pipeline: SpeechPipeline, batch: list[np.ndarray], histograms: dict, answers: dict) -> int:
    results, _ = pipeline.run_batch(batch)
    for clip, result in zip(batch, results, strict=True):
        measured = {
            "speech_input_duration_seconds": result.duration_s,
            "speech_input_level_dbfs": compute_level_dbfs(clip),
            "speech_vad_speech_ratio": result.speech_ratio,
        }
        for name, value in measured.items():
            histograms[name][compute_bucket_index(REFERENCE_INPUTS[name], value)] += 1
        answers[result.label] = answers.get(result.label, 0) + 1
    return len(batch)


def compute_subsample_step(total: int, max_clips: int = REFERENCE_MAX_CLIPS) -> int:
    """k for a subsample of every k-th clip (from the first) of `total` that holds at most `max_clips`."""
    if max_clips < 1:
        raise ReferenceCardError(f"max_clips: expected >= 1, got {max_clips}")
    return max(1, math.ceil(total / max_clips))


def compute_training_root(name: str) -> str:
    """The trained version whose training inputs `name` saw: itself, or its base for a derived version."""
    while VERSIONS[name].base is not None:
        name = str(VERSIONS[name].base)
    return name


def compute_version_references(
    names: list[str], corpus: Corpus, out_dir: pathlib.Path, max_clips: int = REFERENCE_MAX_CLIPS
) -> dict[str, dict]:
    """The `reference` of each version's `<name>.onnx` in out_dir: its (or its base's) training inputs,
    subsampled, answered by the version's own model. Versions sharing a base share one pass over the inputs."""
    roots: dict[str, list[str]] = {}
    for name in names:
        roots.setdefault(compute_training_root(name), []).append(name)
    references = {}
    for root, members in roots.items():
        spec = VERSIONS[root]
        if spec.recipe is None or spec.settings is None:
            raise ReferenceCardError(f"version {root}: a trained version needs a recipe and settings")
        total, clips = compute_training_clips(corpus, spec.recipe, spec.settings.seed)
        step = compute_subsample_step(total, max_clips)
        # islice still draws every clip (the augmented copies must be made in order to stay the training ones)
        picked = [A.compute_int16(clip) for clip, _ in itertools.islice(clips, None, None, step)]
        log.info("reference inputs of %s: %d of %d training clips (every %d)", root, len(picked), total, step)
        for name in members:
            pipeline = load_pipeline(out_dir / f"{name}.onnx")
            whose = f"{root}'s training inputs" + ("" if name == root else f" (base of {name})")
            inputs = f"{whose}: every {step} of {total:,} clips in training order, {len(picked):,} clips"
            references[name] = compute_reference(pipeline, picked, pipeline.recognizer.labels, inputs)
    return references


def compute_reference_lines(reference: dict) -> list[str]:
    """A short markdown summary of a card's reference: n, where from, the main buckets, the answer mix."""
    titles = {
        "speech_input_level_dbfs": "level (dBFS)",
        "speech_input_duration_seconds": "duration (s)",
        "speech_vad_speech_ratio": "VAD speech share",
    }
    n = reference["n"]
    lines = ["", "## Reference distribution (exported by the server as speech_reference_*)", ""]
    lines.append(f"{reference['inputs']}.")
    for name, title in titles.items():
        histogram = reference["histograms"][name]
        ranges = _bucket_ranges(histogram["le"])
        top = sorted(zip(histogram["counts"], ranges, strict=True), key=lambda cr: -cr[0])[:3]
        lines.append(f"- {title}: " + ", ".join(f"{r} {100 * c / n:.0f}%" for c, r in top if c))
    answers = sorted(reference["predictions"].items(), key=lambda kv: -kv[1])[:4]
    lines.append("- the model's answers: " + ", ".join(f"{label} {100 * c / n:.1f}%" for label, c in answers))
    return lines


def _bucket_ranges(le: list[str]) -> list[str]:
    """Bucket names: `<= first`, `a…b` for (a, b], `> last` for the +Inf bucket."""
    out = [f"≤ {float(le[0]):g}"]
    out += [f"{float(low):g}…{float(high):g}" for low, high in zip(le[:-2], le[1:-1], strict=True)]
    return out + [f"> {float(le[-2]):g}"]


def parse_reference(raw: object) -> Reference:
    """A card's `reference` checked against this server's buckets; ReferenceCardError names the field that is wrong."""
    if not isinstance(raw, Mapping):
        raise ReferenceCardError(f"reference: expected an object, got {type(raw).__name__}")
    n = raw.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ReferenceCardError(f"reference.n: expected an integer >= 1, got {n!r}")
    histograms = raw.get("histograms")
    if not isinstance(histograms, Mapping) or set(histograms) != set(REFERENCE_INPUTS):
        got = sorted(histograms) if isinstance(histograms, Mapping) else histograms
        raise ReferenceCardError(f"reference.histograms: expected exactly {sorted(REFERENCE_INPUTS)}, got {got!r}")
    parsed = {name: _parse_histogram(name, histograms[name], n) for name in REFERENCE_INPUTS}
    predictions = _parse_counts("reference.predictions", raw.get("predictions"), n)
    inputs = raw.get("inputs", "")
    return Reference(n, parsed, predictions, inputs if isinstance(inputs, str) else "")


def _parse_histogram(name: str, raw: object, n: int) -> tuple[int, ...]:
    field = f"reference.histograms.{name}"
    if not isinstance(raw, Mapping):
        raise ReferenceCardError(f"{field}: expected an object with le and counts, got {type(raw).__name__}")
    expected_le = compute_le_labels(REFERENCE_INPUTS[name])
    if raw.get("le") != expected_le:
        raise ReferenceCardError(
            f"{field}.le: {raw.get('le')!r} are not this server's buckets {expected_le}; recompute the reference "
            "(speech-train --reference-only)"
        )
    counts = raw.get("counts")
    if not isinstance(counts, list) or len(counts) != len(expected_le) or not all(_is_count(c) for c in counts):
        raise ReferenceCardError(f"{field}.counts: expected {len(expected_le)} integers >= 0, got {counts!r}")
    if sum(counts) != n:
        raise ReferenceCardError(f"{field}.counts: add up to {sum(counts)}, expected reference.n = {n}")
    return tuple(counts)


def _parse_counts(field: str, raw: object, n: int) -> dict[str, int]:
    if not isinstance(raw, Mapping) or not raw:
        raise ReferenceCardError(f"{field}: expected an object of label -> count, got {raw!r}")
    for label, count in raw.items():
        if not isinstance(label, str) or not label or not _is_count(count):
            raise ReferenceCardError(f"{field}: expected label -> integer >= 0, got {label!r}: {count!r}")
    if sum(raw.values()) != n:
        raise ReferenceCardError(f"{field}: add up to {sum(raw.values())}, expected reference.n = {n}")
    return dict(raw)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def fetch_reference(model_path: pathlib.Path) -> tuple[Reference | None, str]:
    """The reference in the card next to a model file (`<stem>.json`, whose sha256 must be the file's), or None
    and the reason in words (no card, a card for another file, no `reference`, or an invalid one)."""
    card_path = model_path.with_suffix(".json")
    if not card_path.is_file():
        return None, f"no model card {card_path.name} next to {model_path}"
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"model card {card_path}: not readable JSON ({exc})"
    if not isinstance(card, dict):
        return None, f"model card {card_path}: expected a JSON object"
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    if card.get("sha256") != digest:
        return None, f"model card {card_path} describes another file (its sha256 is not {model_path.name}'s)"
    if "reference" not in card:
        return None, f"model card {card_path} has no reference (speech-train --reference-only writes one)"
    try:
        return parse_reference(card["reference"]), ""
    except ReferenceCardError as exc:
        return None, f"model card {card_path}: {exc}"
