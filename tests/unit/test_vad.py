"""Silero VAD (real ONNX from the silero-vad wheel) and the pure numpy segmenter.

Speech comes from espeak-ng so the VAD sees real voiced audio, not a synthetic tone.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from speech_serving.vad import (
    CHUNK,
    STREAMING_MODEL,
    SileroVad,
    VadParams,
    compute_frames,
    compute_segments,
    compute_speech_ratio,
    find_silero_data_dir,
)
from tests.support.speech_fixtures import synthesize_word

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def test_frames_carry_64_samples_of_context_and_pad_the_tail():
    samples = np.arange(1, 1201, dtype=np.float32)  # 2 full chunks + 176 samples
    frames = compute_frames(samples)
    assert frames.shape == (3, 576)
    np.testing.assert_array_equal(frames[0, :64], 0)  # nothing before the clip
    np.testing.assert_array_equal(frames[0, 64:], samples[:512])
    np.testing.assert_array_equal(frames[1, :64], samples[448:512])  # previous chunk's last 64
    np.testing.assert_array_equal(frames[2, 64 : 64 + 176], samples[1024:])
    np.testing.assert_array_equal(frames[2, 64 + 176 :], 0)


def probs_from(pattern: str) -> np.ndarray:
    """'.' = 0.05, 'm' = 0.4 (between release and threshold), 'S' = 0.9 — one char per 32 ms frame."""
    return np.array([{".": 0.05, "m": 0.4, "S": 0.9}[c] for c in pattern], dtype=np.float32)


def test_segmenter_hysteresis_min_silence_and_padding():
    params = VadParams(min_speech_s=0.1, min_silence_s=0.1, pad_s=0.0)
    # speech 5 frames, a 1-frame dip (< 100 ms, bridged), speech, 'm' frames keep it open, then silence
    probs = probs_from("..SSSSS.SSmm......SSSS....")
    segs = compute_segments(probs, len(probs) * CHUNK, params)
    assert segs == [(2 * CHUNK, 12 * CHUNK), (18 * CHUNK, 22 * CHUNK)]


def test_segmenter_drops_short_blips_and_pads_then_merges():
    params = VadParams(min_speech_s=0.1, min_silence_s=0.064, pad_s=0.03)
    probs = probs_from("..S.....SSSS...SSSS..")  # a 32 ms blip is below min_speech
    n = len(probs) * CHUNK
    segs = compute_segments(probs, n, params)
    pad = int(0.03 * 16000)
    assert segs[0] == (8 * CHUNK - pad, 12 * CHUNK + pad)
    assert len(segs) == 2 and segs[1][0] == 15 * CHUNK - pad
    # a segment still open at the end runs to the end of the clip (clamped after padding)
    assert compute_segments(probs_from("...SSSS"), 7 * CHUNK, params) == [(3 * CHUNK - pad, 7 * CHUNK)]
    # wide padding makes neighbours overlap: they merge into one
    wide = VadParams(min_speech_s=0.1, min_silence_s=0.064, pad_s=0.2)
    assert len(compute_segments(probs, n, wide)) == 1


def test_speech_ratio():
    assert compute_speech_ratio([(0, 4000), (8000, 12000)], 16000) == 0.5
    assert compute_speech_ratio([], 16000) == 0.0
    assert compute_speech_ratio([], 0) == 0.0


def test_vad_finds_a_spoken_word_and_nothing_in_silence(vad):
    word = synthesize_word("left", pad_s=0.5).astype(np.float32) / 32768.0
    probs = vad.compute_speech_probs(word)
    assert probs.shape == (-(-word.shape[0] // CHUNK),)
    segs = compute_segments(probs, word.shape[0])
    assert len(segs) == 1
    start, end = segs[0]
    voiced = np.flatnonzero(np.abs(word) > 0.02)
    # the segment covers where the waveform is loud, within a frame plus padding
    assert start <= voiced[0] + CHUNK and end >= voiced[-1] - 2 * CHUNK
    assert start > 0.3 * 16000  # and does not include the leading 0.5 s of silence
    quiet = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.001
    assert compute_segments(vad.compute_speech_probs(quiet), 16000) == []


def test_sequence_model_matches_streaming_model(vad):
    """The whole-clip sequence model must give the streaming model's probabilities (state carried over)."""
    word = synthesize_word("stop").astype(np.float32) / 32768.0
    seq = vad.compute_speech_probs(word)
    session = ort.InferenceSession(str(find_silero_data_dir() / STREAMING_MODEL), providers=["CPUExecutionProvider"])
    state, rate, frames = np.zeros((2, 1, 128), np.float32), np.array(16000, np.int64), compute_frames(word)
    streamed = []
    for i in range(frames.shape[0]):
        out, state = session.run(None, {"input": frames[i : i + 1], "state": state, "sr": rate})
        streamed.append(out[0, 0])
    np.testing.assert_allclose(seq, streamed, atol=1e-4)


def test_vad_uses_the_wheels_data_dir_without_importing_silero_vad(vad):
    import sys

    assert vad.model_path.parent == find_silero_data_dir()
    assert "silero_vad" not in sys.modules
