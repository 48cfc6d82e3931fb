"""Synthesizes words with espeak-ng + sox into trimmed 16 kHz int16 waveforms, cached on disk.

The cache key is a hash of the utterance list and the espeak-ng version, so a changed recipe
never reuses stale audio; two worker processes at most (the machine is shared).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import subprocess
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from speech_serving.features import SAMPLE_RATE
from speech_serving.training.voices import Utterance

log = logging.getLogger(__name__)
TRIM_DB = -35.0  # frames quieter than peak - 35 dB at either end are cut
MAX_WORD_SAMPLES = SAMPLE_RATE  # a word longer than 1 s is cropped to its loudest second


def compute_cache_root() -> pathlib.Path:
    root = os.environ.get("MODELROLLOUT_CACHE") or os.path.expanduser("~/.cache/modelrollout")
    return pathlib.Path(root) / "speech-data"


def fetch_espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
    return out.stdout.split("Data at")[0].strip()


def compute_trimmed(audio: np.ndarray) -> np.ndarray:
    """Cut leading/trailing quiet 10 ms frames (below peak + TRIM_DB); keep at most 1 s."""
    if audio.size == 0:
        return audio
    frame = SAMPLE_RATE // 100
    n = audio.size // frame
    if n == 0:
        return audio
    energy = (audio[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(10 * np.log10(energy + 1e-12) > 10 * np.log10(energy.max() + 1e-12) + TRIM_DB)
    word = audio[loud[0] * frame : (loud[-1] + 1) * frame]
    if word.size > MAX_WORD_SAMPLES:
        start = (word.size - MAX_WORD_SAMPLES) // 2
        word = word[start : start + MAX_WORD_SAMPLES]
    return word


def fetch_utterance_audio(utt: Utterance) -> np.ndarray:
    """Run espeak-ng | sox for one word; returns trimmed int16 samples at 16 kHz."""
    speak = subprocess.Popen(
        ["espeak-ng", "-v", utt.voice, "-s", str(utt.speed), "-p", str(utt.pitch), "--stdout", utt.word],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    convert = subprocess.run(
        ["sox", "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed", "-b", "16", "-c", "1", "-"],
        stdin=speak.stdout,
        capture_output=True,
        check=True,
    )
    speak.wait()
    if speak.returncode != 0:
        raise RuntimeError(f"espeak-ng failed for {utt}")
    return compute_trimmed(np.frombuffer(convert.stdout, dtype=np.int16))


def compute_key(utterances: list[Utterance], espeak_version: str) -> str:
    blob = json.dumps([dataclasses.astuple(u) for u in utterances] + [espeak_version, TRIM_DB])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass
class WordSet:
    """Variable-length words stored flat: word i is samples[offsets[i]:offsets[i + 1]]."""

    utterances: list[Utterance]
    samples: np.ndarray  # int16
    offsets: np.ndarray  # int64 [n + 1]

    def word(self, i: int) -> np.ndarray:
        return self.samples[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def concat(cls, parts: list[WordSet]) -> WordSet:
        offsets = [parts[0].offsets]
        for part in parts[1:]:
            offsets.append(part.offsets[1:] + offsets[-1][-1])
        return cls(
            [u for p in parts for u in p.utterances],
            np.concatenate([p.samples for p in parts]),
            np.concatenate(offsets),
        )


def ensure_words(utterances: list[Utterance], name: str, workers: int = 2) -> WordSet:
    """Synthesize (or load from the cache) every utterance in order."""
    key = compute_key(utterances, fetch_espeak_version())
    path = compute_cache_root() / f"{name}-{key}.npz"
    if path.exists():
        data = np.load(path)
        return WordSet(utterances, data["samples"], data["offsets"])
    log.info("synthesizing %d %s words with %d processes -> %s", len(utterances), name, workers, path)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        words = list(pool.map(fetch_utterance_audio, utterances, chunksize=64))
    offsets = np.concatenate([[0], np.cumsum([w.size for w in words])]).astype(np.int64)
    samples = np.concatenate(words).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, samples=samples, offsets=offsets)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry
    return WordSet(utterances, samples, offsets)
