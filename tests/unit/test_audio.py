"""Audio decoding and validation: every accepted encoding and every rejected input class.

Rejections must name the field and what was wrong, because the server returns these messages as 400s.
"""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from speech_serving.audio import (
    AudioError,
    AudioLimits,
    compute_level_dbfs,
    compute_non_audio_kind,
    decode_array,
    decode_audio_bytes,
    decode_base64,
    encode_wav,
)

pytestmark = pytest.mark.unit
LIMITS = AudioLimits(max_seconds=2.0)


def wav_bytes(
    samples: bytes, tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16, extra_chunk: bool = False
) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if extra_chunk:  # e.g. a LIST chunk that some encoders write before data
        chunks += b"LIST" + struct.pack("<I", 5) + b"abcde\x00"
    chunks += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_pcm16_wav_decodes_to_scaled_floats():
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2")
    out = decode_audio_bytes(encode_wav(pcm), "audio", LIMITS)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, -1.0, 32767 / 32768])


def test_wav_with_odd_sized_extra_chunk_before_data():
    pcm = np.arange(10, dtype="<i2")
    out = decode_audio_bytes(wav_bytes(pcm.tobytes(), extra_chunk=True), "audio", LIMITS)
    np.testing.assert_allclose(out * 32768, np.arange(10))


def test_float32_wav_decodes():
    samples = np.array([0.25, -0.5, 0.0], dtype="<f4")
    out = decode_audio_bytes(wav_bytes(samples.tobytes(), tag=3, bits=32), "audio", LIMITS)
    np.testing.assert_array_equal(out, samples)


def test_raw_pcm16_decodes():
    pcm = np.array([100, -100, 3000], dtype="<i2")
    np.testing.assert_allclose(decode_audio_bytes(pcm.tobytes(), "x", LIMITS) * 32768, [100, -100, 3000])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "x: empty audio"),
        (b"\x01\x02\x03", "x: raw audio must be 16-bit PCM"),
        (b"this is plainly a sentence, not sound", "x: not audio: looks like text"),
        (b"OggS" + bytes(100), "x: not audio: looks like an Ogg file"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "x: not audio: RIFF header without WAVE"),
        (wav_bytes(bytes(64), rate=8000), "x: wrong sample rate 8000 Hz, expected 16000 Hz"),
        (wav_bytes(bytes(64), channels=2), "x: expected mono audio, got 2 channels"),
        (wav_bytes(bytes(64), bits=8), "x: unsupported WAV sample format"),
        (wav_bytes(b""), "x: empty audio (0 samples)"),
        (wav_bytes(np.array([0.0, np.nan], dtype="<f4").tobytes(), tag=3, bits=32), "x: audio contains NaN or Inf"),
        (wav_bytes(np.array([np.inf], dtype="<f4").tobytes(), tag=3, bits=32), "x: audio contains NaN or Inf"),
        (wav_bytes(np.array([1.5], dtype="<f4").tobytes(), tag=3, bits=32), "x: float samples must lie in [-1, 1]"),
        (np.zeros(32001, dtype="<i2").tobytes(), "x: audio too long: 2.00 s, limit is 2 s"),
        (b"RIFF\x00\x00\x00\x00WAVEdata\x02\x00\x00\x00\x00\x00", "x: WAV file has no 'fmt ' chunk"),
    ],
)
def test_bad_audio_bytes_are_rejected_with_a_message(data, expected):
    with pytest.raises(AudioError) as err:
        decode_audio_bytes(data, "x", LIMITS)
    assert str(err.value).startswith(expected), str(err.value)


def test_base64_errors_name_the_field():
    assert decode_base64(base64.b64encode(b"abcd").decode(), "f") == b"abcd"
    with pytest.raises(AudioError, match=r"^instances\[0\]\.audio_b64: not valid base64"):
        decode_base64("###not base64###", "instances[0].audio_b64")
    with pytest.raises(AudioError, match="expected a base64 string, got a number"):  # JSON's words
        decode_base64(12, "f")
    with pytest.raises(AudioError, match="expected a base64 string, got null"):
        decode_base64(None, "f")


def test_arrays_int16_and_float32_and_their_rejections():
    np.testing.assert_allclose(decode_array(np.array([[16384, 0]], dtype=np.int16), "t", LIMITS), [0.5, 0.0])
    np.testing.assert_array_equal(decode_array(np.array([0.5], dtype=np.float32), "t", LIMITS), [0.5])
    with pytest.raises(AudioError, match=r"t: wrong dtype float64, expected INT16 or FP32"):
        decode_array(np.zeros(4), "t", LIMITS)
    with pytest.raises(AudioError, match=r"t: wrong shape \[2, 2\]"):
        decode_array(np.zeros((2, 2), dtype=np.int16), "t", LIMITS)
    with pytest.raises(AudioError, match="NaN or Inf"):
        decode_array(np.array([np.nan], dtype=np.float32), "t", LIMITS)
    with pytest.raises(AudioError, match="empty audio"):
        decode_array(np.zeros(0, dtype=np.int16), "t", LIMITS)


def test_pcm_that_happens_to_be_quiet_is_not_mistaken_for_text():
    rng = np.random.default_rng(1)
    quiet = (rng.standard_normal(16000) * 30).astype("<i2")
    assert compute_non_audio_kind(quiet.tobytes()) is None
    assert compute_non_audio_kind(np.zeros(16000, dtype="<i2").tobytes()) is None


def test_level_dbfs():
    assert compute_level_dbfs(np.zeros(100, dtype=np.float32)) == -120.0
    assert compute_level_dbfs(np.ones(100, dtype=np.float32)) == pytest.approx(0.0, abs=1e-6)
    tone = 0.1 * np.sin(np.linspace(0, 200 * np.pi, 16000, dtype=np.float32))
    assert compute_level_dbfs(tone) == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.05)
