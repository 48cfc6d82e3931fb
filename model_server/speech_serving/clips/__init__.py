"""A small labelled evaluation clip set (unseen espeak-ng voices), shipped with the package.

Used by the load generator, tests and benchmarks; rebuilt by `speech-train --clips-only`.
Slices: clean, young (female, pitch 80–99), noisy (0–10 dB SNR), other_mic (band-pass), silence.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import pathlib
import wave

import numpy as np

CLIPS_FILE = pathlib.Path(__file__).with_name("clips.npz")
SLICES = ("clean", "young", "noisy", "other_mic", "silence")
SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Clip:
    """One 1 s clip: int16 PCM at 16 kHz mono, its true label, slice and the voice that spoke it."""

    audio: np.ndarray
    label: str
    slice: str
    voice: str

    def wav_bytes(self) -> bytes:
        return compute_wav_bytes(self.audio)


@dataclasses.dataclass(frozen=True)
class ClipArrays:
    """The same clips as parallel arrays (audio int16 [n, 16000]) for vectorised use."""

    audio: np.ndarray
    labels: np.ndarray
    slices: np.ndarray
    voices: np.ndarray


@functools.lru_cache(maxsize=1)
def _load_all() -> ClipArrays:
    if not CLIPS_FILE.exists():
        raise FileNotFoundError(f"clip set {CLIPS_FILE} is missing; rebuild it with `speech-train --clips-only`")
    with np.load(CLIPS_FILE, allow_pickle=False) as data:
        arrays = ClipArrays(data["audio"], data["labels"], data["slices"], data["voices"])
    for array in dataclasses.astuple(arrays):
        array.setflags(write=False)  # cached and shared between callers
    return arrays


def load_clip_arrays(slice: str | None = None) -> ClipArrays:  # noqa: A002 - the natural name
    """All clips, or those of one slice, as arrays."""
    arrays = _load_all()
    if slice is None:
        return arrays
    if slice not in SLICES:
        raise ValueError(f"slice: expected one of {', '.join(SLICES)}, got {slice!r}")
    keep = arrays.slices == slice
    return ClipArrays(arrays.audio[keep], arrays.labels[keep], arrays.slices[keep], arrays.voices[keep])


def load_clips(slice: str | None = None) -> list[Clip]:  # noqa: A002
    """All clips, or those of one slice (see SLICES), in a fixed order."""
    arrays = load_clip_arrays(slice)
    return [
        Clip(arrays.audio[i], str(arrays.labels[i]), str(arrays.slices[i]), str(arrays.voices[i]))
        for i in range(len(arrays.labels))
    ]


def compute_wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A mono 16-bit WAV file holding the clip (what a client would upload)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.asarray(audio, dtype="<i2").tobytes())
    return buffer.getvalue()
