"""The training loop: per-band normalisation, mini-batch Adam(W) with a cosine schedule.

Deterministic for a seed (numpy only); returns the parameters and a JSON-able summary.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from speech_serving.training import model as M

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    epochs: int = 6
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 1
    shuffle_labels: bool = False  # the deliberately broken run (v3)


def compute_normalisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and std over all clips and frames (float32 [40] each)."""
    mean = features.mean(axis=(0, 2), dtype=np.float64)
    std = features.std(axis=(0, 2), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def compute_learning_rate(settings: TrainSettings, step: int, total: int) -> float:
    """Short linear warm-up, then cosine decay to 5% of the peak."""
    warmup = max(1, total // 50)
    if step < warmup:
        return settings.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return settings.learning_rate * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))


def compute_trained(features: np.ndarray, labels: np.ndarray, settings: TrainSettings, arch=M.Architecture()):
    """Train from scratch; returns (params, mean, std, summary)."""
    rng = np.random.default_rng(settings.seed)
    if settings.shuffle_labels:
        labels = rng.permutation(labels)
    mean, std = compute_normalisation(features)
    x_all = (features - mean[None, :, None]) / std[None, :, None]
    params = M.compute_initial_params(arch, settings.seed)
    opt = M.Adam(params, weight_decay=settings.weight_decay)
    n = len(labels)
    steps_per_epoch = -(-n // settings.batch_size)  # the last, partial batch is used too
    total = steps_per_epoch * settings.epochs
    started, step, history = time.monotonic(), 0, []
    for epoch in range(settings.epochs):
        order = rng.permutation(n)
        losses = []
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * settings.batch_size : (b + 1) * settings.batch_size])
            loss, grads = M.compute_loss_and_grads(params, x_all[idx], labels[idx])
            opt.step(params, grads, compute_learning_rate(settings, step, total))
            losses.append(loss)
            step += 1
        history.append(round(float(np.mean(losses)), 4))
        log.info("epoch %d/%d loss %.4f (%.0f s)", epoch + 1, settings.epochs, history[-1], time.monotonic() - started)
    summary = {
        "examples": int(n),
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "weight_decay": settings.weight_decay,
        "seed": settings.seed,
        "shuffled_labels": settings.shuffle_labels,
        "loss_per_epoch": history,
        "train_seconds": round(time.monotonic() - started, 1),
        "parameters": int(sum(v.size for v in params.values())),
    }
    return params, mean, std, summary
