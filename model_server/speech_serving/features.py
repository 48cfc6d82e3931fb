"""Log-mel features for the keyword recognizer, in plain vectorised numpy.

The same code serves training, the model server and the benchmarks; the constants below are also
written into every ONNX file's metadata so a server can refuse a model built for other features.
"""

from __future__ import annotations

import functools
import json

import numpy as np

SAMPLE_RATE = 16000
WIN_LENGTH = 400  # 25 ms Hann window
N_FFT = 512
HOP_LENGTH = 160  # 10 ms hop
N_MELS = 40
F_MIN = 20.0
F_MAX = 8000.0
LOG_FLOOR = 1e-6  # ln(mel + floor) keeps digital silence finite
CLIP_SAMPLES = SAMPLE_RATE  # the recognizer is trained on 1 s clips

# One dict holding every parameter that changes the features; goes into ONNX metadata as JSON.
FEATURE_CONFIG: dict[str, object] = {
    "kind": "log-mel",
    "sample_rate": SAMPLE_RATE,
    "win_length": WIN_LENGTH,
    "window": "hann",
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "n_mels": N_MELS,
    "f_min": F_MIN,
    "f_max": F_MAX,
    "mel_scale": "htk",
    "log": "ln(mel + 1e-6)",
    "log_floor": LOG_FLOOR,
    "center": False,
}


def compute_feature_config_json() -> str:
    """The feature config as canonical JSON (sorted keys), as stored in ONNX metadata."""
    return json.dumps(FEATURE_CONFIG, sort_keys=True)


def compute_num_frames(num_samples: int) -> int:
    """Frames produced for a clip of `num_samples` (no centre padding; short clips give 1 frame)."""
    if num_samples <= WIN_LENGTH:
        return 1
    return 1 + (num_samples - WIN_LENGTH) // HOP_LENGTH


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=1)
def compute_mel_filterbank() -> np.ndarray:
    """Triangular HTK mel filters, float32 [N_MELS, N_FFT // 2 + 1] (unnormalised, peak 1)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(np.array(F_MIN)), _hz_to_mel(np.array(F_MAX)), N_MELS + 2)
    hz_points = _mel_to_hz(mel_points)
    lower, centre, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (fft_freqs[None, :] - lower) / (centre - lower)
    falling = (upper - fft_freqs[None, :]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    bank.setflags(write=False)  # cached and shared: nobody may modify it
    return bank


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    # Periodic Hann (as torch/librosa use for STFTs).
    n = np.arange(WIN_LENGTH)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / WIN_LENGTH)).astype(np.float32)
    window.setflags(write=False)
    return window


def mel_band_centres_hz() -> np.ndarray:
    """Centre frequency of each mel band in Hz, float64 [N_MELS] (for tests and plots)."""
    mel_points = np.linspace(_hz_to_mel(np.array(F_MIN)), _hz_to_mel(np.array(F_MAX)), N_MELS + 2)
    return _mel_to_hz(mel_points)[1:-1]


def _as_float_audio(audio: np.ndarray) -> np.ndarray:
    """int16 PCM is scaled to [-1, 1); float input is taken as already scaled."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"audio: expected int16 PCM or float samples, got dtype {audio.dtype}")
    return audio.astype(np.float32, copy=False)


def compute_log_mel_batch(clips: np.ndarray) -> np.ndarray:
    """Log-mel of equal-length clips [batch, samples] → float32 [batch, N_MELS, frames]."""
    audio = _as_float_audio(clips)
    if audio.ndim != 2:
        raise ValueError(f"clips: expected a 2-D array [batch, samples], got shape {audio.shape}")
    batch, samples = audio.shape
    if samples < WIN_LENGTH:
        # Pad very short input so at least one full window exists.
        audio = np.pad(audio, ((0, 0), (0, WIN_LENGTH - samples)))
        samples = WIN_LENGTH
    frames = compute_num_frames(samples)
    # Strided view [batch, frames, WIN_LENGTH] without copying, then one batched real FFT.
    view = np.lib.stride_tricks.sliding_window_view(audio, WIN_LENGTH, axis=1)[:, ::HOP_LENGTH]
    view = view[:, :frames]
    spectrum = np.fft.rfft(view * _window(), n=N_FFT, axis=-1)
    power = spectrum.real.astype(np.float32) ** 2 + spectrum.imag.astype(np.float32) ** 2
    mel = power @ compute_mel_filterbank().T  # [batch, frames, N_MELS]
    out = np.log(mel + np.float32(LOG_FLOOR)).astype(np.float32)
    return np.ascontiguousarray(out.transpose(0, 2, 1))


def compute_log_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel of one mono clip [samples] (int16 PCM or float in [-1, 1]) → float32 [N_MELS, frames]."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio: expected a 1-D mono clip, got shape {audio.shape}")
    return compute_log_mel_batch(audio[None, :])[0]
