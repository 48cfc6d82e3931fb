"""Drives the load generator (speech_serving.loadgen) at a rollout's front door for as long as a
scenario runs, in short segments so results can be attributed to the phases they fell in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable

import aiohttp
import numpy as np

from speech_serving import loadgen
from speech_serving.clips import load_clip_arrays

# The demo's traffic: mostly clean speech plus the slices v1 is weak on (young voices, noise).
DEMO_MIX = {"clean": 4.0, "young": 2.0, "noisy": 2.0, "other_mic": 1.0, "silence": 1.0}
# Counted per version (and slice) by compute_totals / compute_slice_totals, summed over segments.
COUNTS = ("requests", "errors", "correct", "feedback_sent", "feedback_accepted", "feedback_rejected")


def load_labelled_clips(names: list[str]) -> dict[str, list[tuple[np.ndarray, str]]]:
    """slice -> [(int16 samples, true label)] from the shipped clip set."""
    out = {}
    for name in names:
        arrays = load_clip_arrays(name)
        out[name] = [(arrays.audio[i], str(arrays.labels[i])) for i in range(len(arrays.labels))]
        if not out[name]:
            raise ValueError(f"clip slice {name!r} is empty")
    return out


@dataclasses.dataclass(frozen=True)
class Segment:
    """One load-generator run: when (seconds since the runner started) and its summary."""

    t0: float
    t1: float
    summary: dict


class LoadRunner:
    """Sends `rate` req/s of the `mix` to whatever `resolve_url()` returns, until stopped."""

    def __init__(
        self,
        resolve_url: Callable[[], str | None],
        mix: dict[str, float] | None = None,
        rate: float = 20.0,
        segment_s: float = 5.0,
        concurrency: int = 8,
        headers: dict[str, str] | None = None,
        feedback_share: float = 0.0,
    ):
        self.resolve_url, self.mix = resolve_url, dict(mix or DEMO_MIX)
        self.rate, self.segment_s, self.concurrency = rate, segment_s, concurrency
        self.headers = headers or {}
        self.feedback_share = feedback_share  # share of answers whose true label goes to the router's /feedback
        self.clips = load_labelled_clips([s for s, w in self.mix.items() if w > 0])
        self.segments: list[Segment] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)

    def __enter__(self) -> LoadRunner:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.segment_s + 15)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _run(self) -> None:
        seed = 0
        while not self._stop.is_set():
            url = self.resolve_url()
            if not url:  # the front door has no ready endpoint (yet)
                self._stop.wait(0.5)
                continue
            seed += 1
            spec = loadgen.LoadSpec(
                url=url,
                mix=self.mix,
                rate=self.rate,
                duration_s=self.segment_s,
                concurrency=self.concurrency,
                seed=seed,
                headers=self.headers,
                feedback_share=self.feedback_share,
            )
            t0 = self.elapsed()
            summary = asyncio.run(loadgen.run_load(spec, self.clips))
            with self._lock:
                self.segments.append(Segment(t0, self.elapsed(), summary))

    def history(self, since: float = 0.0, until: float | None = None) -> list[Segment]:
        """Segments that started at or after `since` and ended by `until`."""
        with self._lock:
            return [s for s in self.segments if s.t0 >= since and (until is None or s.t1 <= until)]

    def compute_totals(self, since: float = 0.0, until: float | None = None) -> dict[str, dict]:
        """version -> {requests, errors, correct, accuracy, feedback_*} over the chosen segments."""
        totals: dict[str, dict] = {}
        for seg in self.history(since, until):
            for version, data in seg.summary["versions"].items():
                _add_counts(totals.setdefault(version, {}), data["total"])
        return {version: _with_accuracy(t) for version, t in totals.items()}

    def compute_slice_totals(self, since: float = 0.0, until: float | None = None) -> dict[str, dict[str, dict]]:
        """version -> slice -> the same counts as compute_totals, per slice of the mix."""
        totals: dict[str, dict[str, dict]] = {}
        for seg in self.history(since, until):
            for version, data in seg.summary["versions"].items():
                for name, stats in data["slices"].items():
                    _add_counts(totals.setdefault(version, {}).setdefault(name, {}), stats)
        return {v: {name: _with_accuracy(t) for name, t in sorted(by.items())} for v, by in sorted(totals.items())}


def _add_counts(into: dict, stats: dict) -> None:
    for key in COUNTS:
        into[key] = into.get(key, 0) + stats.get(key, 0)


def _with_accuracy(t: dict) -> dict:
    answered = t["requests"] - t["errors"]
    return {**t, "accuracy": round(t["correct"] / answered, 4) if answered else None}


@dataclasses.dataclass(frozen=True)
class ProbeAnswer:
    seq: int
    t: float  # seconds since the probe started
    version: str  # "error" when the request failed
    status: int
    detail: str = ""  # why it failed (exception or response body), for failure messages


class SequentialProbe:
    """One request at a time (strictly ordered) until stopped, recording which version answered.

    Used where order matters (an atomic blue-green switch); throughput is LoadRunner's job.
    """

    def __init__(
        self,
        resolve_url: Callable[[], str | None],
        clip: np.ndarray,
        interval_s: float = 0.05,
        protocol: str = "v1",
        model: str = "speech-commands",
    ):
        self.resolve_url, self.clip, self.interval_s = resolve_url, clip, interval_s
        self.protocol, self.model = protocol, model
        self.answers: list[ProbeAnswer] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> SequentialProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    async def _run(self) -> None:
        body = loadgen.encode_body(self.clip, self.protocol)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while not self._stop.is_set():
                url = self.resolve_url()
                if url:
                    await self._send(session, url, body)
                await asyncio.sleep(self.interval_s)

    async def _send(self, session: aiohttp.ClientSession, url: str, body: bytes) -> None:
        spec = loadgen.LoadSpec(url=url, mix={"clean": 1}, protocol=self.protocol, model_name=self.model, count=1)
        seq, t = len(self.answers), time.monotonic() - self.start
        try:
            async with session.post(
                loadgen.compute_endpoint(spec), data=body, headers={"content-type": "application/json"}
            ) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:200]
                    self.answers.append(ProbeAnswer(seq, t, "error", resp.status, detail))
                    return
                payload = await resp.json(content_type=None)
                version = loadgen.parse_answer(self.protocol, payload, resp.headers.get("x-model-version"))[2]
                self.answers.append(ProbeAnswer(seq, t, version, resp.status))
        except (TimeoutError, aiohttp.ClientError, KeyError, ValueError) as exc:
            self.answers.append(ProbeAnswer(seq, t, "error", 0, f"{type(exc).__name__}: {exc}"))
