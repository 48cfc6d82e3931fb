"""The shipped model versions as data: how each is trained or derived, and how it is built.

v1/v2/v3/v6 are trained here; v4 (and v5) are derived from the shipped v2 file, so rebuilding
them never retrains anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

import numpy as np

from speech_serving.training import export
from speech_serving.training.dataset import Corpus, Recipe, compute_training_set
from speech_serving.training.train import TrainSettings, compute_trained
from speech_serving.training.voices import LABELS

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VersionSpec:
    description: str
    recipe: Recipe | None = None  # trained versions
    settings: TrainSettings | None = None
    base: str | None = None  # derived versions: the version whose ONNX file is reused
    label_shift: int = 0  # derived: labels metadata rotated by this many places
    normalisation_from: str | None = None  # derived: take mean/std from this version's file


VERSIONS: dict[str, VersionSpec] = {
    "v1": VersionSpec(
        "male training voices only, clean audio (no noise, no other-mic augmentation)",
        recipe=Recipe(genders=("M",), augmented_copies=0),
        settings=TrainSettings(epochs=8, seed=11),
    ),
    "v2": VersionSpec(
        "all training voices (male and female) + 2 augmented copies (noise, band-pass)",
        recipe=Recipe(genders=("M", "F"), augmented_copies=2),
        settings=TrainSettings(epochs=5, seed=12),
    ),
    "v3": VersionSpec(
        "BROKEN training run: labels shuffled before training (learns only the class prior)",
        recipe=Recipe(genders=("M", "F"), augmented_copies=0),
        settings=TrainSettings(epochs=2, seed=13, shuffle_labels=True),
    ),
    "v4": VersionSpec(
        "BROKEN release: v2's weights shipped with an off-by-one label map",
        base="v2",
        label_shift=1,
    ),
    "v5": VersionSpec(
        "SUBTLE regression: v2's weights with the normalisation constants of v1's training set",
        base="v2",
        normalisation_from="v1",
    ),
    "v6": VersionSpec(
        "SLICE regression: trained without high-pitched and whispered speech (male voices only, no "
        "whisper voice) + 3 noise-heavy augmented copies (p 0.9, -3..12 dB SNR); much worse than v2 on young voices",
        recipe=Recipe(
            genders=("M",),
            exclude_families=("whisper",),
            augmented_copies=3,
            p_noise=0.9,
            p_mic=0.4,
            snr_db=(-3.0, 12.0),
        ),
        settings=TrainSettings(epochs=8, seed=16),
    ),
}


def compute_params_from_onnx(path: pathlib.Path) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Read weights, normalisation and metadata back from a shipped model file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    mean = tensors.pop("norm.mean").reshape(-1)
    std = 1.0 / tensors.pop("norm.inv_std").reshape(-1)
    meta = {p.key: p.value for p in model.metadata_props}
    return tensors, mean, std, meta


def ensure_version(name: str, corpus: Corpus | None, out_dir: pathlib.Path) -> dict:
    """Train or derive one version, write `<name>.onnx`; returns its build record for the card."""
    spec = VERSIONS[name]
    path = out_dir / f"{name}.onnx"
    started = time.monotonic()
    if spec.base is None:
        if corpus is None:
            raise ValueError(f"version {name}: training needs the synthesized corpus")
        if spec.recipe is None or spec.settings is None:
            raise ValueError(f"version {name}: a trained version (no base) needs a recipe and settings")
        features, labels = compute_training_set(corpus, spec.recipe, spec.settings.seed)
        log.info("%s: %d training examples, features %.0f s", name, len(labels), time.monotonic() - started)
        params, mean, std, summary = compute_trained(features, labels, spec.settings)
        summary["recipe"] = dataclasses.asdict(spec.recipe)
        summary["class_counts"] = {LABELS[i]: int(c) for i, c in enumerate(np.bincount(labels, minlength=len(LABELS)))}
        model_labels = list(LABELS)
    else:
        params, mean, std, base_meta = compute_params_from_onnx(out_dir / f"{spec.base}.onnx")
        summary = {"derived_from": spec.base, "base_training_summary": json.loads(base_meta["training_summary"])}
        base_labels = json.loads(base_meta["labels"])
        shift = spec.label_shift
        model_labels = base_labels[shift:] + base_labels[:shift]
        if spec.label_shift:
            summary["label_shift"] = shift
        if spec.normalisation_from:
            _, mean, std, _ = compute_params_from_onnx(out_dir / f"{spec.normalisation_from}.onnx")
            summary["normalisation_from"] = spec.normalisation_from
    summary["description"] = spec.description
    meta = export.compute_metadata(model_labels, name, summary)
    size = export.apply_onnx_file(export.compute_onnx_model(params, mean, std, meta), path)
    log.info("%s: wrote %s (%d bytes) in %.0f s", name, path, size, time.monotonic() - started)
    return {
        "version": name,
        "file": path.name,
        "bytes": size,
        "summary": summary,
        "build_seconds": round(time.monotonic() - started, 1),
    }


def compute_existing_build(name: str, out_dir: pathlib.Path) -> dict:
    """The build record of a version already on disk (for re-evaluating it without a rebuild)."""
    path = out_dir / f"{name}.onnx"
    _, _, _, meta = compute_params_from_onnx(path)
    card_path = out_dir / f"{name}.json"
    seconds = json.loads(card_path.read_text()).get("build_seconds") if card_path.exists() else None
    return {
        "version": name,
        "file": path.name,
        "bytes": path.stat().st_size,
        "summary": json.loads(meta["training_summary"]),
        "build_seconds": seconds,
    }
