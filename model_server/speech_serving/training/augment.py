"""Turns synthesized words into 1 s clips: placement, gain, noise, band-pass "other microphone".

Every function takes an explicit numpy Generator so a seeded run reproduces bit for bit.
"""

from __future__ import annotations

import numpy as np

from speech_serving.features import CLIP_SAMPLES, SAMPLE_RATE

NOISE_KINDS = ("white", "pink", "brown", "hum")


def compute_noise(kind: str, rng: np.random.Generator, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Unit-RMS noise of the given colour; `hum` is mains hum (50/60 Hz and harmonics) plus hiss."""
    if kind == "white":
        noise = rng.standard_normal(n)
    elif kind in ("pink", "brown"):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 1.0)
        # pink: power ~ 1/f (amplitude 1/sqrt f); brown: power ~ 1/f^2
        spectrum /= np.sqrt(freqs) if kind == "pink" else freqs
        noise = np.fft.irfft(spectrum, n)
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        mains = rng.choice([50.0, 60.0])
        noise = sum(np.sin(2 * np.pi * mains * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5))
        noise = noise + 0.05 * rng.standard_normal(n)
    else:
        raise ValueError(f"noise kind: expected one of {NOISE_KINDS}, got {kind!r}")
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def compute_placed(word: np.ndarray, rng: np.random.Generator, peak_dbfs: float, max_shift_s: float) -> np.ndarray:
    """Put the word into a 1 s float clip, centred ± a random shift, scaled to `peak_dbfs`."""
    word = word.astype(np.float32)
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    if word.size == 0:
        return clip
    slack = CLIP_SAMPLES - word.size
    max_shift = min(int(max_shift_s * SAMPLE_RATE), slack // 2)
    start = slack // 2 + (int(rng.integers(-max_shift, max_shift + 1)) if max_shift > 0 else 0)
    clip[start : start + word.size] = word
    peak = np.abs(clip).max()
    if peak > 0:
        clip *= 10 ** (peak_dbfs / 20) / peak
    return clip


def compute_with_noise(clip: np.ndarray, kind: str, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add noise at `snr_db` relative to the speech RMS (measured where the word is)."""
    active = np.abs(clip) > 1e-4 * (np.abs(clip).max() + 1e-12)
    rms = np.sqrt(np.mean(clip[active] ** 2)) if active.any() else 1e-3
    noise = compute_noise(kind, rng, clip.size) * rms * 10 ** (-snr_db / 20)
    return clip + noise


def compute_band_passed(clip: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """A cheap "other microphone": 2nd-order Butterworth-like magnitude band-pass in the FFT domain."""
    spectrum = np.fft.rfft(clip)
    freqs = np.maximum(np.fft.rfftfreq(clip.size, 1 / SAMPLE_RATE), 1e-3)
    high_pass = 1 / np.sqrt(1 + (low_hz / freqs) ** 4)
    low_pass = 1 / np.sqrt(1 + (freqs / high_hz) ** 4)
    out = np.fft.irfft(spectrum * high_pass * low_pass, clip.size).astype(np.float32)
    # A quieter mic would be turned up: restore the original peak level.
    return out * (np.abs(clip).max() / (np.abs(out).max() + 1e-12))


def compute_silence_clip(rng: np.random.Generator) -> np.ndarray:
    """A `_silence_` example: background noise only, −60…−15 dBFS RMS."""
    kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
    return compute_noise(kind, rng) * 10 ** (rng.uniform(-60, -15) / 20)


def compute_augmented(
    clip: np.ndarray,
    rng: np.random.Generator,
    p_noise: float,
    p_mic: float,
    snr_db: tuple[float, float] = (-3.0, 25.0),
) -> np.ndarray:
    """Training-time corruption: noise at an SNR in `snr_db` with probability p_noise, band-pass with p_mic."""
    if rng.random() < p_mic:
        clip = compute_band_passed(clip, rng.uniform(200, 600), rng.uniform(2500, 4000))
    if rng.random() < p_noise:
        kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
        clip = compute_with_noise(clip, kind, rng.uniform(*snr_db), rng)
    return clip


def compute_int16(clip: np.ndarray) -> np.ndarray:
    """Clip to full scale and quantise, as a real recording would be."""
    return np.round(np.clip(clip, -1.0, 32767 / 32768) * 32768).astype(np.int16)
