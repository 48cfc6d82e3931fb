"""A small 1-D CNN keyword recognizer in numpy with hand-written gradients (checked by a test).

Conv(40→64, k5) → ReLU → MaxPool2 → Conv(64→64, k3) → ReLU → MaxPool2 → Conv(64→64, k3) → ReLU
→ global max over time → Dense(64→12) → softmax. 'Same' padding, so any clip of ≥ 4 frames works.
"""

from __future__ import annotations

import dataclasses

import numpy as np

KERNELS = (5, 3, 3)


@dataclasses.dataclass(frozen=True)
class Architecture:
    n_mels: int = 40
    channels: int = 64
    n_classes: int = 12


def compute_initial_params(arch: Architecture, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """He-normal conv/dense weights (conv weights in ONNX order [out, in, k]); zero biases."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    c_in = arch.n_mels
    for i, k in enumerate(KERNELS, start=1):
        std = np.sqrt(2.0 / (c_in * k))
        params[f"conv{i}.w"] = (rng.standard_normal((arch.channels, c_in, k)) * std).astype(dtype)
        params[f"conv{i}.b"] = np.zeros(arch.channels, dtype=dtype)
        c_in = arch.channels
    params["dense.w"] = (rng.standard_normal((arch.channels, arch.n_classes)) * np.sqrt(1.0 / arch.channels)).astype(
        dtype
    )
    params["dense.b"] = np.zeros(arch.n_classes, dtype=dtype)
    return params


def _conv_forward(x, w, b):
    """x [B, T, C] channels-last; w [O, C, k] → y [B, T, O] with 'same' zero padding."""
    o, c, k = w.shape
    pad = k // 2
    batch, t = x.shape[0], x.shape[1]
    xp = np.pad(x, ((0, 0), (pad, pad), (0, 0)))
    # im2col with the tap index outermost so every slice copied is contiguous in C.
    cols = np.concatenate([xp[:, j : j + t, :] for j in range(k)], axis=2).reshape(batch * t, k * c)
    wmat = w.transpose(2, 1, 0).reshape(k * c, o)
    y = (cols @ wmat + b).reshape(batch, t, o)
    return y, cols


def _conv_backward(dy, cols, w, x_shape):
    o, c, k = w.shape
    batch, t, _ = x_shape
    dy2 = dy.reshape(batch * t, o)
    dw = (cols.T @ dy2).reshape(k, c, o).transpose(2, 1, 0)
    db = dy2.sum(axis=0)
    dcols = (dy2 @ w.transpose(2, 1, 0).reshape(k * c, o).T).reshape(batch, t, k, c)
    pad = k // 2
    dxp = np.zeros((batch, t + 2 * pad, c), dtype=dy.dtype)
    for j in range(k):  # tap j of output frame t read padded input frame t + j
        dxp[:, j : j + t, :] += dcols[:, :, j, :]
    return dxp[:, pad : pad + t, :], dw, db


def _pool_forward(x):
    """Max over non-overlapping pairs of frames (floor), remembering the winner for backward."""
    t2 = x.shape[1] // 2
    first, second = x[:, 0 : 2 * t2 : 2], x[:, 1 : 2 * t2 : 2]
    took_first = first >= second
    return np.where(took_first, first, second), took_first


def _pool_backward(dy, took_first, x_shape):
    t2 = x_shape[1] // 2
    dx = np.zeros(x_shape, dtype=dy.dtype)
    dx[:, 0 : 2 * t2 : 2] = dy * took_first
    dx[:, 1 : 2 * t2 : 2] = dy * ~took_first
    return dx


def compute_forward(params, x, keep_cache: bool = False):
    """x [B, n_mels, T] (already normalised) → logits [B, n_classes] (and a cache for backward)."""
    h = np.ascontiguousarray(x.transpose(0, 2, 1))
    cache = []
    for i in (1, 2, 3):
        y, cols = _conv_forward(h, params[f"conv{i}.w"], params[f"conv{i}.b"])
        r = np.maximum(y, 0)
        entry = {"x_shape": h.shape, "cols": cols, "y": y}
        if i < 3:
            h, entry["pool_idx"] = _pool_forward(r)
            entry["r_shape"] = r.shape
        else:
            entry["gidx"] = r.argmax(axis=1)  # [B, C]
            h = np.take_along_axis(r, entry["gidx"][:, None, :], axis=1)[:, 0, :]
            entry["r_shape"] = r.shape
        cache.append(entry)
    logits = h @ params["dense.w"] + params["dense.b"]
    return (logits, (cache, h)) if keep_cache else logits


def compute_softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def compute_loss_and_grads(params, x, y):
    """Mean cross-entropy over the batch and its gradient for every parameter."""
    logits, (cache, pooled) = compute_forward(params, x, keep_cache=True)
    probs = compute_softmax(logits)
    batch = x.shape[0]
    loss = float(-np.log(probs[np.arange(batch), y] + 1e-12).mean())
    dlogits = probs.copy()
    dlogits[np.arange(batch), y] -= 1
    dlogits /= batch
    grads = {"dense.w": pooled.T @ dlogits, "dense.b": dlogits.sum(axis=0)}
    dh = dlogits @ params["dense.w"].T  # [B, C]
    for i in (3, 2, 1):
        entry = cache[i - 1]
        if i == 3:
            dr = np.zeros(entry["r_shape"], dtype=dh.dtype)
            np.put_along_axis(dr, entry["gidx"][:, None, :], dh[:, None, :], axis=1)
        else:
            dr = _pool_backward(dh, entry["pool_idx"], entry["r_shape"])
        dy = dr * (entry["y"] > 0)
        dh, grads[f"conv{i}.w"], grads[f"conv{i}.b"] = _conv_backward(
            dy, entry["cols"], params[f"conv{i}.w"], entry["x_shape"]
        )
    return loss, grads


class Adam:
    """Adam with bias correction; the learning rate is set per step by the caller's schedule."""

    def __init__(self, params, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.beta1, self.beta2, self.eps, self.weight_decay, self.t = beta1, beta2, eps, weight_decay, 0

    def step(self, params, grads, lr):
        self.t += 1
        c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        for k, g in grads.items():
            self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * g * g
            update = (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)
            if self.weight_decay and k.endswith(".w"):  # decoupled (AdamW): biases not decayed
                update = update + self.weight_decay * params[k]
            params[k] -= (lr * update).astype(params[k].dtype)
