"""Builds the committed evaluation clip set (`speech_serving/clips/clips.npz`) from the slices.

A stratified sample (the same number of clips per label) of each evaluation slice, int16 audio.
"""

from __future__ import annotations

import pathlib

import numpy as np

from speech_serving.training.dataset import LabelledAudio
from speech_serving.training.voices import LABELS, SILENCE_LABEL

# clip-set slice name -> evaluation slice it is sampled from
CLIP_SLICES = {"clean": "clean_all", "young": "young", "noisy": "noisy", "other_mic": "other_mic", "silence": "silence"}


def compute_stratified(data: LabelledAudio, per_label: int, seed: int) -> np.ndarray:
    """Indices of `per_label` clips of every label present, in a fixed shuffled order."""
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for label in np.unique(data.labels):
        candidates = np.flatnonzero(data.labels == label)
        picked.extend(rng.choice(candidates, size=min(per_label, len(candidates)), replace=False))
    return rng.permutation(np.array(picked))


def apply_clip_set(
    slices: dict[str, LabelledAudio], path: pathlib.Path, per_label: int, silence_count: int, seed: int
) -> int:
    """Write the compressed clip set; returns its size in bytes."""
    audio: list[np.ndarray] = []
    labels: list[str] = []
    names: list[str] = []
    voices: list[str] = []
    for clip_slice, source in CLIP_SLICES.items():
        data = slices[source]
        count = silence_count if clip_slice == "silence" else per_label
        for i in compute_stratified(data, count, seed + len(audio)):
            audio.append(data.audio[i])
            labels.append(LABELS[data.labels[i]])
            names.append(clip_slice)
            voices.append(data.voices[i])
    assert all(label == SILENCE_LABEL for label, n in zip(labels, names, strict=True) if n == "silence")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        audio=np.stack(audio).astype(np.int16),
        labels=np.array(labels),
        slices=np.array(names),
        voices=np.array(voices),
    )
    return path.stat().st_size
