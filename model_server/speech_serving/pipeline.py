"""The speech pipeline: VAD → speech segments → 1 s log-mel windows → recognizer ONNX → answer.

Used in-process by the server (from a worker thread) and by the benchmark as the "bare" baseline.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from speech_serving import features
from speech_serving.vad import SileroVad, VadParams, compute_segments, compute_speech_ratio

SILENCE = "_silence_"
SAMPLE_RATE = features.SAMPLE_RATE
WINDOW = features.CLIP_SAMPLES  # the recognizer was trained on 1 s clips
SHORT_CLIP = int(1.5 * SAMPLE_RATE)  # up to this length a clip is one keyword and is scored whole


@dataclass(frozen=True)
class Segment:
    """One stretch of speech the VAD found and what the recognizer heard in it."""

    start_s: float
    end_s: float
    label: str
    confidence: float

    def to_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "label": self.label, "confidence": self.confidence}


@dataclass(frozen=True)
class ClipResult:
    """The answer for one clip plus the input measurements the metrics need."""

    label: str
    confidence: float
    segments: tuple[Segment, ...]
    duration_s: float
    speech_ratio: float


@dataclass
class StageTimes:
    """Seconds spent per stage for one batch (each request in the batch waited this long)."""

    vad: float = 0.0
    features: float = 0.0
    recognize: float = 0.0
    segments: int = field(default=0)


class Recognizer:
    """The keyword recognizer ONNX: features f32 [B, 40, frames] → probabilities [B, n_labels]."""

    def __init__(self, path: Path, threads: int = 1):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path = Path(path)
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        self.labels = _parse_labels(meta, self.path)
        _check_feature_config(meta, self.path)
        self._input = self._session.get_inputs()[0].name
        self._output = "probabilities" if any(o.name == "probabilities" for o in self._session.get_outputs()) else None
        n_out = self._session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.labels):
            raise ValueError(
                f"{self.path}: model outputs {n_out} classes but its metadata lists {len(self.labels)} labels"
            )

    def compute_probabilities(self, feats: np.ndarray) -> np.ndarray:
        out = self._session.run([self._output] if self._output else None, {self._input: feats})
        return out[0]


def _parse_labels(meta: dict, path: Path) -> list[str]:
    raw = meta.get("labels")
    if raw is None:
        raise ValueError(f"{path}: ONNX metadata has no 'labels' entry (expected a JSON list of class names)")
    try:
        labels = json.loads(raw)
    except json.JSONDecodeError:
        labels = [x.strip() for x in raw.split(",")]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or not labels:
        raise ValueError(f"{path}: ONNX metadata 'labels' must be a non-empty list of strings, got {raw!r}")
    return labels


def _check_feature_config(meta: dict, path: Path) -> None:
    # A model trained on other features would answer confidently and wrongly: refuse to load it.
    raw = meta.get("feature_config")
    if raw is None:
        return
    if json.loads(raw) != json.loads(features.compute_feature_config_json()):
        raise ValueError(
            f"{path}: model was built for features {raw}, this server computes {features.compute_feature_config_json()}"
        )


class SpeechPipeline:
    """VAD + features + recognizer for batches of float32 clips; thread-compatible, not thread-safe."""

    def __init__(self, recognizer: Recognizer, vad: SileroVad, params: VadParams = VadParams()):
        self.recognizer = recognizer
        self.vad = vad
        self.params = params

    def run_batch(self, clips: list[np.ndarray]) -> tuple[list[ClipResult], StageTimes]:
        times = StageTimes()
        t0 = time.perf_counter()
        spans = []
        for clip in clips:
            probs = self.vad.compute_speech_probs(clip)
            spans.append((compute_segments(probs, clip.shape[0], self.params), float(probs.max(initial=0.0))))
        times.vad = time.perf_counter() - t0
        regions = [compute_regions(clip.shape[0], spans[i][0]) for i, clip in enumerate(clips)]
        windows = [(i, s, e, compute_window(clip, s, e)) for i, clip in enumerate(clips) for s, e in regions[i]]
        times.segments = len(windows)
        scored = self._score_windows([w[3] for w in windows], times)
        per_clip: list[list[Segment]] = [[] for _ in clips]
        for (i, start, end, _), (label, conf) in zip(windows, scored, strict=True):
            if len(clips[i]) <= SHORT_CLIP:
                start, end = compute_short_clip_span(spans[i][0], len(clips[i]))
            per_clip[i].append(Segment(round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3), label, conf))
        results = [compute_clip_result(clip, per_clip[i], spans[i][0], spans[i][1]) for i, clip in enumerate(clips)]
        return results, times

    def run_clip(self, clip: np.ndarray) -> ClipResult:
        return self.run_batch([clip])[0][0]

    def _score_windows(self, windows: list[np.ndarray], times: StageTimes) -> list[tuple[str, float]]:
        """Features and recognizer, batched by window length (1 s windows all batch together)."""
        answers: list[tuple[str, float]] = [("", 0.0)] * len(windows)
        by_len: dict[int, list[int]] = {}
        for k, w in enumerate(windows):
            by_len.setdefault(w.shape[0], []).append(k)
        for idxs in by_len.values():
            t0 = time.perf_counter()
            # One clip at a time: batched log-mel is ~3x slower per clip (its [B, frames, 400] temporaries
            # fall out of cache); batching pays only in the recognizer call below.
            feats = np.stack([features.compute_log_mel(windows[k]) for k in idxs])
            t1 = time.perf_counter()
            probs = self.recognizer.compute_probabilities(feats)
            times.features += t1 - t0
            times.recognize += time.perf_counter() - t1
            best = probs.argmax(axis=1)
            for row, k in enumerate(idxs):
                answers[k] = (self.recognizer.labels[int(best[row])], float(probs[row, best[row]]))
        return answers


def compute_regions(n_samples: int, segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What the recognizer scores: a keyword-length clip whole, a longer recording per VAD segment.

    Silero misses a share of high-pitched (young) voices that the recognizer, trained on whole 1 s clips
    with a `_silence_` class, still hears; so short clips never depend on the VAD for their answer.
    """
    if n_samples <= SHORT_CLIP:
        return [(0, n_samples)]
    return segments


def compute_short_clip_span(segments: list[tuple[int, int]], n_samples: int) -> tuple[int, int]:
    """The reported segment of a short clip: from the first to the last VAD segment, else the whole clip."""
    if not segments:
        return 0, n_samples
    return segments[0][0], segments[-1][1]


def compute_window(clip: np.ndarray, start: int, end: int) -> np.ndarray:
    """The audio the recognizer sees for a segment: ≥ 1 s centred on it, zero-padded at clip edges."""
    length = max(WINDOW, end - start)
    begin = (start + end) // 2 - length // 2
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(0, begin), min(clip.shape[0], begin + length)
    out[lo - begin : hi - begin] = clip[lo:hi]
    return out


def compute_clip_result(
    clip: np.ndarray, segments: list[Segment], spans: list[tuple[int, int]], max_prob: float
) -> ClipResult:
    """The clip's answer is its most confident segment; no speech (VAD or recognizer) means `_silence_`."""
    duration = clip.shape[0] / SAMPLE_RATE
    ratio = compute_speech_ratio(spans, clip.shape[0])
    if not segments:
        # A long recording where the VAD found no speech: confidence is the VAD's complement of its peak.
        return ClipResult(SILENCE, round(1.0 - max_prob, 6), (), duration, ratio)
    best = max(segments, key=lambda s: s.confidence)
    spoken = tuple(s for s in segments if s.label != SILENCE)
    return ClipResult(best.label, best.confidence, spoken, duration, ratio)


def load_pipeline(model_path: Path, threads: int = 1, params: VadParams = VadParams()) -> SpeechPipeline:
    """Recognizer from `model_path` plus the Silero VAD from the silero-vad wheel."""
    return SpeechPipeline(Recognizer(model_path, threads), SileroVad(threads=threads), params)
