"""Decode and validate request audio: WAV or raw PCM16 bytes and INT16/FP32 arrays.

Everything returns float32 mono samples in [-1, 1] at 16 kHz or raises AudioError naming the problem.
"""

from __future__ import annotations

import binascii
import bisect
import struct
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
_INT16_SCALE = np.float32(1.0 / 32768.0)
# WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_EXTENSIBLE
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class AudioError(ValueError):
    """A client-side audio problem; the message names the input and what was expected."""


@dataclass(frozen=True)
class AudioLimits:
    """Bounds a clip and a request must respect (the server's --max-clip-seconds and per-request limits)."""

    max_seconds: float = 30.0  # per clip (--max-clip-seconds)
    max_clips: int = 64  # per request (--max-clips-per-request)
    max_total_seconds: float = 120.0  # per request, all clips together (--max-request-audio-seconds)

    @property
    def max_samples(self) -> int:
        return int(self.max_seconds * SAMPLE_RATE)


_JSON_TYPE_NAMES = {
    type(None): "null",
    bool: "true/false",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
}


def json_type_name(value: object) -> str:
    """What a decoded JSON value is, in JSON's words (null, not NoneType) for error messages."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def decode_base64(text: object, field: str) -> bytes:
    """Decode a base64 string field, with an error that names the field."""
    if not isinstance(text, (str, bytes)):
        raise AudioError(f"{field}: expected a base64 string, got {json_type_name(text)}")
    try:
        # strict a2b_base64 validates in C: half the cost of b64decode(validate=True)'s regex pre-check
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioError(f"{field}: not valid base64 ({exc})") from None


def decode_audio_bytes(data: bytes, field: str, limits: AudioLimits) -> np.ndarray:
    """WAV (detected by its RIFF header) or raw little-endian PCM16 mono 16 kHz → float32."""
    if len(data) == 0:
        raise AudioError(f"{field}: empty audio (0 bytes)")
    if data[:4] == b"RIFF":
        return decode_wav(data, field, limits)
    kind = compute_non_audio_kind(data)
    if kind:
        raise AudioError(f"{field}: not audio: looks like {kind}; send a WAV file or raw PCM16LE mono 16 kHz")
    if len(data) % 2:
        raise AudioError(
            f"{field}: raw audio must be 16-bit PCM (an even number of bytes), got {len(data)} bytes;"
            " send a WAV file or PCM16LE mono 16 kHz"
        )
    _check_length(len(data) // 2, field, limits)
    return np.frombuffer(data, dtype="<i2").astype(np.float32) * _INT16_SCALE


_MAGIC = {
    b"OggS": "an Ogg file",
    b"fLaC": "a FLAC file",
    b"ID3": "an MP3 file",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
    b"\xff\xd8\xff": "a JPEG image",
}
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\r\n"


def compute_non_audio_kind(data: bytes) -> str | None:
    """What a non-WAV payload evidently is, if it is not raw PCM (None when it may be PCM)."""
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    head = data[:4096]
    # Real PCM essentially never consists of printable ASCII only (the low byte of each sample is ~uniform),
    # while text, JSON or doubly base64-encoded audio always does.
    if len(head) >= 16 and not head.translate(None, _TEXT_BYTES):
        return "text"
    return None


def decode_wav(data: bytes, field: str, limits: AudioLimits) -> np.ndarray:
    """Parse a RIFF/WAVE file (PCM16 or float32, mono, 16 kHz) without copying twice."""
    if len(data) < 12 or data[8:12] != b"WAVE":
        raise AudioError(f"{field}: not audio: RIFF header without WAVE type")
    fmt, payload = _wav_chunks(data, field)
    if fmt is None:
        raise AudioError(f"{field}: WAV file has no 'fmt ' chunk")
    if payload is None:
        raise AudioError(f"{field}: WAV file has no 'data' chunk")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]
    if channels != 1:
        raise AudioError(f"{field}: expected mono audio, got {channels} channels")
    if rate != SAMPLE_RATE:
        raise AudioError(f"{field}: wrong sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    if tag == _PCM and bits == 16:
        _check_length(len(payload) // 2, field, limits)
        return np.frombuffer(payload, dtype="<i2", count=len(payload) // 2).astype(np.float32) * _INT16_SCALE
    if tag == _FLOAT and bits == 32:
        _check_length(len(payload) // 4, field, limits)
        return validate_samples(np.frombuffer(payload, dtype="<f4", count=len(payload) // 4), field, limits)
    raise AudioError(
        f"{field}: unsupported WAV sample format (format tag {tag}, {bits} bits); expected 16-bit PCM or 32-bit float"
    )


def _wav_chunks(data: bytes, field: str) -> tuple[bytes | None, bytes | None]:
    """Walk the RIFF chunk list; return the fmt and data chunk bodies."""
    fmt = payload = None
    pos = 12
    while pos + 8 <= len(data) and (fmt is None or payload is None):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise AudioError(f"{field}: WAV 'fmt ' chunk is truncated")
            fmt = body
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    return fmt, payload


def decode_array(array: np.ndarray, field: str, limits: AudioLimits) -> np.ndarray:
    """An INT16 or FP32 tensor of shape [n] or [1, n] → float32 samples."""
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise AudioError(f"{field}: wrong shape {list(array.shape)}, expected [samples] or [1, samples]")
    if array.dtype == np.int16:
        _check_length(array.shape[0], field, limits)
        return array.astype(np.float32) * _INT16_SCALE
    if array.dtype == np.float32:
        return validate_samples(array, field, limits)
    raise AudioError(f"{field}: wrong dtype {array.dtype}, expected INT16 or FP32")


def validate_samples(samples: np.ndarray, field: str, limits: AudioLimits) -> np.ndarray:
    """Float samples must be finite and within [-1, 1]; length within limits."""
    _check_length(samples.shape[0], field, limits)
    if not np.isfinite(samples).all():
        raise AudioError(f"{field}: audio contains NaN or Inf samples")
    peak = float(np.abs(samples).max())
    if peak > 1.0:
        raise AudioError(f"{field}: float samples must lie in [-1, 1], got peak {peak:.3g}")
    return samples.astype(np.float32, copy=False)


def _check_length(n_samples: int, field: str, limits: AudioLimits) -> None:
    if n_samples == 0:
        raise AudioError(f"{field}: empty audio (0 samples)")
    if n_samples > limits.max_samples:
        raise AudioError(
            f"{field}: audio too long: {n_samples / SAMPLE_RATE:.2f} s, limit is {limits.max_seconds:g} s"
            " per clip (--max-clip-seconds)"
        )


def check_clip_count(n_clips: int, field: str, limits: AudioLimits) -> None:
    """Refuse a request with more clips than allowed, before any of them is decoded."""
    if n_clips > limits.max_clips:
        raise AudioError(
            f"{field}: {n_clips} clips in one request, limit is {limits.max_clips} (--max-clips-per-request);"
            " split them over several requests"
        )


def check_total_samples(n_samples: int, limits: AudioLimits) -> None:
    """Refuse a request whose clips hold more audio together than allowed."""
    if n_samples > limits.max_total_seconds * SAMPLE_RATE:
        raise AudioError(
            f"request audio: {n_samples / SAMPLE_RATE:.2f} s in total, limit is {limits.max_total_seconds:g} s per"
            " request (--max-request-audio-seconds); split the clips over several requests"
        )


def compute_level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (0 dB = full-scale square wave); floor at -120 dB for digital silence."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float32))))
    return max(-120.0, 20.0 * np.log10(rms + 1e-12))


# Derived slices of the input the server measured (docs/model-server.md, "Slices", says why these cuts). Each band
# A level on an edge belongs to the band above it (-40.0 dBFS is `normal`); a clip of exactly 1.5 s is `medium`,
# as the pipeline scores it whole like a 1 s keyword.
LEVEL_BANDS = ("silent", "quiet", "normal", "loud")
LEVEL_BAND_EDGES_DBFS = (-60.0, -40.0, -20.0)  # silent < -60 <= quiet < -40 <= normal < -20 <= loud
DURATION_BANDS = ("short", "medium", "long")
DURATION_BAND_EDGES_S = (0.5, 1.5)  # short < 0.5 <= medium <= 1.5 < long (1.5 s = the pipeline's SHORT_CLIP)


def compute_level_band(level_dbfs: float) -> str:
    """The clip's level band from its RMS level in dBFS (compute_level_dbfs)."""
    return LEVEL_BANDS[bisect.bisect_right(LEVEL_BAND_EDGES_DBFS, level_dbfs)]


def compute_duration_band(seconds: float) -> str:
    """The clip's duration band; up to 1.5 s inclusive is one keyword scored whole, longer is a recording."""
    shortest, longest = DURATION_BAND_EDGES_S
    if seconds < shortest:
        return "short"
    return "medium" if seconds <= longest else "long"


def encode_wav(samples_int16: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """A minimal PCM16 mono WAV file (used by the load generator, tests and docs)."""
    pcm = np.asarray(samples_int16, dtype="<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm
