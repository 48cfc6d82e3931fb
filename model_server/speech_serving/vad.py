"""Voice activity detection: Silero VAD ONNX (from the silero-vad wheel) plus a numpy segmenter.

We never `import silero_vad` (it needs torch); we only locate its data directory and load the ONNX.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
CHUNK = 512  # new samples per VAD frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous chunk the model sees in front of each chunk
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"
STREAMING_MODEL = "silero_vad.onnx"


@dataclass(frozen=True)
class VadParams:
    """Segmenter settings (Silero's own defaults except min_speech, see docs/model-server.md)."""

    threshold: float = 0.5
    release_offset: float = 0.15  # speech ends when prob drops below threshold - release_offset
    min_speech_s: float = 0.1  # keyword clips are short (~0.35 s); 250 ms dropped fast "go"s
    min_silence_s: float = 0.1
    pad_s: float = 0.03


def find_silero_data_dir() -> Path:
    """The silero-vad wheel's data directory, found without importing the package."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the silero-vad package is not installed; install it with "
            "`pip install --no-deps 'silero-vad>=6.2'` (its ONNX files are all we use)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def compute_frames(samples: np.ndarray) -> np.ndarray:
    """[n_frames, 576] windows: the previous 64 samples plus 512 new ones, last chunk zero-padded."""
    n_frames = max(1, -(-samples.shape[0] // CHUNK))
    padded = np.zeros(n_frames * CHUNK + CONTEXT, dtype=np.float32)
    padded[CONTEXT : CONTEXT + samples.shape[0]] = samples
    view = np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + CHUNK)
    return np.ascontiguousarray(view[::CHUNK][:n_frames])


class SileroVad:
    """Per-frame speech probabilities for a whole clip in one ONNX call (the 16 kHz sequence model)."""

    def __init__(self, data_dir: Path | None = None, threads: int = 1):
        data_dir = data_dir or find_silero_data_dir()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._sequence = (data_dir / SEQUENCE_MODEL).exists()
        path = data_dir / (SEQUENCE_MODEL if self._sequence else STREAMING_MODEL)
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.model_path = path

    def compute_speech_probs(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability per 32 ms frame, float32 [n_frames]."""
        frames = compute_frames(samples)
        if self._sequence:
            zeros = np.zeros((1, 1, 128), dtype=np.float32)
            out = self._session.run(["speech_probs"], {"input": frames, "h": zeros, "c": zeros})
            return out[0].reshape(-1)
        return self._run_streaming(frames)

    def _run_streaming(self, frames: np.ndarray) -> np.ndarray:
        # Fallback for wheels without the sequence model: one call per frame, state fed back.
        state = np.zeros((2, 1, 128), dtype=np.float32)
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        probs = np.empty(frames.shape[0], dtype=np.float32)
        for i in range(frames.shape[0]):
            out, state = self._session.run(None, {"input": frames[i : i + 1], "state": state, "sr": rate})
            probs[i] = out[0, 0]
        return probs


def compute_segments(probs: np.ndarray, n_samples: int, params: VadParams = VadParams()) -> list[tuple[int, int]]:
    """Speech segments [(start_sample, end_sample)] from frame probabilities (Silero's hysteresis rule)."""
    low = params.threshold - params.release_offset
    min_silence = int(params.min_silence_s * SAMPLE_RATE)
    raw: list[list[int]] = []
    start, silence_from = -1, -1
    for i, p in enumerate(probs.tolist()):
        pos = i * CHUNK
        if start < 0:
            if p >= params.threshold:
                start, silence_from = pos, -1
            continue
        if p >= params.threshold:
            silence_from = -1
        elif p < low:
            silence_from = pos if silence_from < 0 else silence_from
            if pos + CHUNK - silence_from >= min_silence:
                raw.append([start, silence_from])
                start, silence_from = -1, -1
    if start >= 0:
        raw.append([start, n_samples if silence_from < 0 else silence_from])
    return _pad_and_filter(raw, n_samples, params)


def _pad_and_filter(raw: list[list[int]], n_samples: int, params: VadParams) -> list[tuple[int, int]]:
    min_speech = int(params.min_speech_s * SAMPLE_RATE)
    pad = int(params.pad_s * SAMPLE_RATE)
    kept = [seg for seg in raw if seg[1] - seg[0] >= min_speech]
    out: list[tuple[int, int]] = []
    for start, end in kept:
        start, end = max(0, start - pad), min(n_samples, end + pad)
        if out and start <= out[-1][1]:  # padding made neighbours touch: merge them
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def compute_speech_ratio(segments: list[tuple[int, int]], n_samples: int) -> float:
    """Share of the clip covered by speech segments, 0..1."""
    if n_samples <= 0:
        return 0.0
    return min(1.0, sum(end - start for start, end in segments) / n_samples)
