"""Unit tests for the log-mel front end shared by training, serving and benchmarks.

They pin the shape, dtype and frequency mapping the shipped models were trained with.
"""

import json

import numpy as np
import pytest

from speech_serving import features as F

pytestmark = pytest.mark.unit


def _tone(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(F.SAMPLE_RATE * seconds)) / F.SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_one_second_clip_gives_40_by_98_float32():
    out = F.compute_log_mel(_tone(440.0))
    assert out.shape == (40, 98)
    assert out.dtype == np.float32
    assert F.compute_num_frames(16000) == 98


@pytest.mark.parametrize("freq_hz", [300.0, 1000.0, 2500.0, 6000.0])
def test_tone_peaks_in_the_band_whose_centre_is_nearest(freq_hz):
    out = F.compute_log_mel(_tone(freq_hz))
    loudest = int(np.argmax(out.mean(axis=1)))
    centres = F.mel_band_centres_hz()
    # With triangular filters the loudest band is one of the two whose centres straddle the tone.
    nearest = np.argsort(np.abs(centres - freq_hz))[:2]
    assert loudest in nearest


def test_silence_is_finite_and_at_the_log_floor():
    out = F.compute_log_mel(np.zeros(16000, dtype=np.int16))
    assert np.all(np.isfinite(out))
    assert np.allclose(out, np.log(F.LOG_FLOOR), atol=1e-4)


def test_int16_and_float_input_agree():
    tone = _tone(1000.0, amplitude=0.25)
    pcm = np.round(tone * 32768).astype(np.int16)
    from_pcm, from_float = F.compute_log_mel(pcm), F.compute_log_mel(tone)
    # Bands far from the tone only hold int16 quantisation noise; compare where the tone is.
    loud = from_float > -2.0
    assert loud.sum() > 98
    np.testing.assert_allclose(from_pcm[loud], from_float[loud], atol=1e-2)


def test_batch_matches_single_clip():
    rng = np.random.default_rng(0)
    clips = (rng.standard_normal((3, 12000)) * 0.1).astype(np.float32)
    batch = F.compute_log_mel_batch(clips)
    assert batch.shape == (3, 40, F.compute_num_frames(12000))
    for i in range(3):
        np.testing.assert_allclose(batch[i], F.compute_log_mel(clips[i]), rtol=1e-5, atol=1e-4)


def test_matches_a_direct_loop_implementation():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(4000) * 0.2).astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = F.compute_num_frames(4000)
    expected = np.empty((40, frames))
    bank = F.compute_mel_filterbank().astype(np.float64)
    for j in range(frames):
        seg = audio[j * 160 : j * 160 + 400] * window
        power = np.abs(np.fft.rfft(seg, n=512)) ** 2
        expected[:, j] = np.log(bank @ power + 1e-6)
    np.testing.assert_allclose(F.compute_log_mel(audio), expected, atol=2e-3)


def test_short_input_gives_one_frame():
    assert F.compute_log_mel(np.zeros(100, dtype=np.float32)).shape == (40, 1)


def test_filterbank_covers_20_to_8000_hz_htk():
    bank = F.compute_mel_filterbank()
    assert bank.shape == (40, 257)
    freqs = np.linspace(0, 8000, 257)
    assert np.all(bank[:, freqs < 20] == 0)
    assert bank[:, (freqs > 100) & (freqs < 7500)].sum(axis=0).min() > 0.4
    centres = F.mel_band_centres_hz()
    assert np.all(np.diff(centres) > 0) and 20 < centres[0] < 100 and 7000 < centres[-1] < 8000


def test_config_json_carries_every_constant():
    config = json.loads(F.compute_feature_config_json())
    assert config["n_mels"] == 40 and config["hop_length"] == 160 and config["n_fft"] == 512
    assert config["win_length"] == 400 and config["sample_rate"] == 16000
    assert config["f_min"] == 20.0 and config["f_max"] == 8000.0 and config["mel_scale"] == "htk"


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 2, 2), dtype=np.float32), "clips"),
        (np.zeros(10, dtype=np.int32), "dtype"),
    ],
)
def test_bad_input_names_the_problem(bad, message):
    fn = F.compute_log_mel_batch if bad.ndim == 3 else F.compute_log_mel
    with pytest.raises((ValueError, TypeError), match=message):
        fn(bad)


def test_two_dimensional_input_to_single_clip_is_rejected():
    with pytest.raises(ValueError, match="1-D mono"):
        F.compute_log_mel(np.zeros((2, 100), dtype=np.float32))
