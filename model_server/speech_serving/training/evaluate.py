"""Evaluates exported ONNX models on the labelled slices exactly as a server would run them.

Labels come from each model's own metadata (so a wrong label map shows up), features from
`speech_serving.features`; reports accuracy, mean confidence and the predicted-label mix.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from speech_serving.features import compute_log_mel_batch
from speech_serving.training.voices import LABELS


def fetch_session(path: pathlib.Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the machine is shared; one thread is plenty for this size
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fetch_model_labels(session) -> list[str]:
    return json.loads(session.get_modelmeta().custom_metadata_map["labels"])


def compute_probabilities(session, features: np.ndarray, batch: int = 256) -> np.ndarray:
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: features[s : s + batch]})[0] for s in range(0, len(features), batch)]
    return np.concatenate(parts)


def compute_features(audio: np.ndarray, batch: int = 1024) -> np.ndarray:
    return np.concatenate([compute_log_mel_batch(audio[s : s + batch]) for s in range(0, len(audio), batch)])


def evaluate_predictions(probs: np.ndarray, model_labels: list[str], truth: np.ndarray) -> dict:
    """Accuracy (by label name, so a shifted label map counts as wrong), confidence, label mix."""
    predicted = [model_labels[i] for i in probs.argmax(axis=1)]
    truth_names = [LABELS[i] for i in truth]
    correct = np.array([p == t for p, t in zip(predicted, truth_names, strict=True)])
    mix = {label: round(predicted.count(label) / len(predicted), 4) for label in LABELS if label in predicted}
    return {
        "n": int(len(truth)),
        "accuracy": round(float(correct.mean()), 4),
        "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
        "label_mix": dict(sorted(mix.items(), key=lambda kv: -kv[1])),
        "predicted": predicted,
    }


def evaluate_model(path: pathlib.Path, slices: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Per slice: accuracy, mean confidence, label mix (and the raw predicted labels)."""
    session = fetch_session(path)
    labels = fetch_model_labels(session)
    return {
        name: evaluate_predictions(compute_probabilities(session, feats), labels, truth)
        for name, (feats, truth) in slices.items()
    }


def compute_agreement(a: dict[str, dict], b: dict[str, dict]) -> dict[str, float]:
    """Share of clips per slice on which two models give the same label (what shadowing measures)."""
    return {
        name: round(
            float(np.mean([x == y for x, y in zip(a[name]["predicted"], b[name]["predicted"], strict=True)])), 4
        )
        for name in a
    }
