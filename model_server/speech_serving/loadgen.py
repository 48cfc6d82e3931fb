"""speech-loadgen: send labelled clips from named slices at a rate and mix, report per version and slice.

Each request names its slice in `x-slice`. The ground truth feeds this report (accuracy per responding
version and slice) and, for `--feedback-share` of the answers, the router's `POST /feedback` by the
answer's `x-request-id` (what the `accuracy` gate counts); gates never see it otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import aiohttp
import numpy as np

SLICES = ("clean", "young", "noisy", "other_mic", "silence")
MAX_REQUESTS = 100_000
MAX_DURATION_S = 3600.0
SLICE_HEADER = "x-slice"  # the model server's default --slice-header
REQUEST_ID_HEADER = "x-request-id"  # set on every answer by the router
MAX_ERROR_BODY = 64 * 1024  # read at most this much of an error or feedback answer


@dataclass(frozen=True)
class LoadSpec:
    """What to send: where, which protocol, which slices in which proportions, how fast and how long."""

    url: str  # base URL (http://host:port) or a full :predict / /infer URL
    mix: dict[str, float]  # slice name → relative weight
    protocol: str = "v1"
    model_name: str = "speech-commands"
    rate: float = 20.0  # requests per second (open loop); 0 = as fast as `concurrency` allows
    duration_s: float | None = None
    count: int | None = None
    concurrency: int = 8  # most requests in flight
    timeout_s: float = 10.0
    seed: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    feedback_share: float = 0.0  # share of answers (0..1) whose true label is POSTed to /feedback
    feedback_url: str | None = None  # None: <scheme>://<host:port of url>/feedback (the router's front door)


@dataclass
class Outcome:
    slice: str
    version: str
    ok: bool
    correct: bool
    latency_s: float
    confidence: float
    label: str
    feedback: str = ""  # "" not asked; "accepted" (200); "rejected:<status>"; "no-id"; "error"


@dataclass
class SliceStats:
    requests: int = 0
    errors: int = 0
    correct: int = 0
    accuracy: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_confidence: float | None = None
    labels: dict[str, int] = field(default_factory=dict)
    feedback_sent: int = 0  # POSTs to /feedback (answers without an x-request-id are not sent)
    feedback_accepted: int = 0  # ... answered 200
    feedback_rejected: int = 0  # ... answered another status or not at all (why: the summary's feedback_rejections)


def validate_spec(spec: LoadSpec) -> None:
    """Reject unbounded or malformed load with a message naming the option."""
    if spec.protocol not in ("v1", "v2"):
        raise ValueError(f"protocol: expected v1 or v2, got {spec.protocol!r}")
    if not spec.mix or any(w < 0 for w in spec.mix.values()) or sum(spec.mix.values()) <= 0:
        raise ValueError(f"mix: expected slice=weight pairs with positive total weight, got {spec.mix!r}")
    if spec.duration_s is None and spec.count is None:
        raise ValueError("duration/count: give at least one bound (--duration seconds or --count requests)")
    if spec.count is not None and not 0 < spec.count <= MAX_REQUESTS:
        raise ValueError(f"count: expected 1..{MAX_REQUESTS}, got {spec.count}")
    if spec.duration_s is not None and not 0 < spec.duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration: expected 0 < seconds <= {MAX_DURATION_S:g}, got {spec.duration_s}")
    if spec.rate < 0 or spec.rate > 10_000:
        raise ValueError(f"rate: expected 0..10000 requests per second, got {spec.rate}")
    if not 1 <= spec.concurrency <= 1024:
        raise ValueError(f"concurrency: expected 1..1024, got {spec.concurrency}")
    if not 0.0 <= spec.feedback_share <= 1.0:  # also rejects NaN
        raise ValueError(f"feedback-share: expected a share 0..1 of the answers, got {spec.feedback_share}")
    if spec.feedback_share > 0:
        compute_feedback_url(spec)


def compute_feedback_url(spec: LoadSpec) -> str:
    """Where feedback goes: `feedback_url`, else `/feedback` at the origin of `url` (the router's traffic port)."""
    if spec.feedback_url:
        return spec.feedback_url
    parts = urlsplit(spec.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url: expected http(s)://host:port to derive the feedback URL from, got {spec.url!r}")
    return f"{parts.scheme}://{parts.netloc}/feedback"


def compute_endpoint(spec: LoadSpec) -> str:
    if "/v1/models/" in spec.url or "/v2/models/" in spec.url:
        return spec.url
    base = spec.url.rstrip("/")
    if spec.protocol == "v1":
        return f"{base}/v1/models/{spec.model_name}:predict"
    return f"{base}/v2/models/{spec.model_name}/infer"


def encode_body(samples: np.ndarray, protocol: str) -> bytes:
    """Raw PCM16LE in base64: the cheapest encoding both protocols accept."""
    b64 = base64.b64encode(np.asarray(samples, dtype="<i2").tobytes()).decode()
    if protocol == "v1":
        return json.dumps({"instances": [{"audio_b64": b64}]}).encode()
    return json.dumps({"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [b64]}]}).encode()


def parse_answer(protocol: str, body: dict, header_version: str | None) -> tuple[str, float, str]:
    """(label, confidence, version) from a response body; the version header is the v1 source."""
    if protocol == "v1":
        pred = body["predictions"][0]
        return pred["label"], float(pred["confidence"]), header_version or "unknown"
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    return (
        outputs["label"][0],
        float(outputs["confidence"][0]),
        body.get("model_version") or header_version or "unknown",
    )


def load_slices(names: list[str]) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Labelled int16 clips per slice from speech_serving.clips."""
    from speech_serving.clips import load_clips

    out = {}
    for name in names:
        items = [_as_labelled(item) for item in load_clips(name)]
        if not items:
            raise ValueError(f"mix: slice {name!r} has no clips")
        out[name] = items
    return out


def _as_labelled(item) -> tuple[np.ndarray, str]:
    if isinstance(item, tuple):
        return np.asarray(item[0], dtype=np.int16), str(item[1])
    return np.asarray(item.audio, dtype=np.int16), str(item.label)


async def run_load(spec: LoadSpec, clips: dict[str, list[tuple[np.ndarray, str]]] | None = None) -> dict:
    """Send the load described by `spec`; return the JSON-able summary (see compute_summary)."""
    validate_spec(spec)
    clips = clips if clips is not None else load_slices([s for s, w in spec.mix.items() if w > 0])
    missing = [s for s, w in spec.mix.items() if w > 0 and not clips.get(s)]
    if missing:
        raise ValueError(f"mix: no clips for slice(s) {missing}; known slices: {sorted(clips)}")
    rng = random.Random(spec.seed)
    names = [s for s, w in spec.mix.items() if w > 0]
    weights = [spec.mix[s] for s in names]
    endpoint = compute_endpoint(spec)
    feedback_url = compute_feedback_url(spec) if spec.feedback_share > 0 else None
    outcomes: list[Outcome] = []
    sem = asyncio.Semaphore(spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    headers = {"content-type": "application/json", **spec.headers}
    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        tasks = []
        for i in range(spec.count if spec.count is not None else MAX_REQUESTS):
            delay = (start + i / spec.rate - time.perf_counter()) if spec.rate > 0 else 0.0
            if delay > 0:
                await asyncio.sleep(delay)
            if spec.duration_s is not None and time.perf_counter() - start >= spec.duration_s:
                break
            await sem.acquire()
            name = rng.choices(names, weights)[0]
            samples, truth = rng.choice(clips[name])
            ask = feedback_url if feedback_url and rng.random() < spec.feedback_share else None
            req = _Request(endpoint, spec.protocol, name, samples, truth, ask)
            tasks.append(asyncio.create_task(_send(session, req, sem, outcomes)))
        await asyncio.gather(*tasks)
    return compute_summary(spec, outcomes, time.perf_counter() - start)


@dataclass(frozen=True)
class _Request:
    endpoint: str
    protocol: str
    slice: str
    samples: np.ndarray
    truth: str
    feedback_url: str | None  # set: report the true label for this answer


async def _send(session: aiohttp.ClientSession, req: _Request, sem: asyncio.Semaphore, outcomes: list) -> None:
    t = time.perf_counter()
    name = req.slice
    try:
        headers = {SLICE_HEADER: name}
        async with session.post(req.endpoint, data=encode_body(req.samples, req.protocol), headers=headers) as resp:
            header_version = resp.headers.get("x-model-version")
            request_id = resp.headers.get(REQUEST_ID_HEADER)
            if resp.status != 200:
                await resp.content.read(MAX_ERROR_BODY)
                outcomes.append(
                    Outcome(name, header_version or "unknown", False, False, time.perf_counter() - t, 0.0, "")
                )
                return
            label, conf, version = parse_answer(req.protocol, await resp.json(content_type=None), header_version)
        latency = time.perf_counter() - t
        feedback = await _send_feedback(session, req.feedback_url, request_id, req.truth) if req.feedback_url else ""
        outcomes.append(Outcome(name, version, True, label == req.truth, latency, conf, label, feedback))
    except (TimeoutError, aiohttp.ClientError, KeyError, IndexError, ValueError, TypeError):
        outcomes.append(Outcome(name, "unknown", False, False, time.perf_counter() - t, 0.0, ""))
    finally:
        sem.release()


async def _send_feedback(session: aiohttp.ClientSession, url: str, request_id: str | None, truth: str) -> str:
    """POST the true label for one answer; what happened, as Outcome.feedback."""
    if not request_id:  # straight to a model server (no router), or a router without feedback
        return "no-id"
    try:
        async with session.post(url, json={"requestId": request_id, "label": truth}) as resp:
            await resp.content.read(MAX_ERROR_BODY)
            return "accepted" if resp.status == 200 else f"rejected:{resp.status}"
    except (TimeoutError, aiohttp.ClientError):
        return "error"


def compute_summary(spec: LoadSpec, outcomes: list[Outcome], wall_s: float) -> dict:
    """{"versions": {version: {"total": stats, "slices": {slice: stats}}}, "requests", "errors", ...}."""
    groups: dict[str, dict[str, list[Outcome]]] = {}
    for o in outcomes:
        groups.setdefault(o.version, {}).setdefault(o.slice, []).append(o)
    versions = {}
    for version, by_slice in sorted(groups.items()):
        every = [o for items in by_slice.values() for o in items]
        versions[version] = {
            "total": asdict(compute_stats(every)),
            "slices": {s: asdict(compute_stats(items)) for s, items in sorted(by_slice.items())},
        }
    rejections: dict[str, int] = {}
    for o in outcomes:
        if o.feedback and o.feedback != "accepted":
            reason = o.feedback.removeprefix("rejected:")
            rejections[reason] = rejections.get(reason, 0) + 1
    return {
        "endpoint": compute_endpoint(spec),
        "protocol": spec.protocol,
        "mix": spec.mix,
        "requests": len(outcomes),
        "errors": sum(not o.ok for o in outcomes),
        "wall_seconds": round(wall_s, 3),
        "achieved_rps": round(len(outcomes) / wall_s, 2) if wall_s > 0 else 0.0,
        "feedback_share": spec.feedback_share,
        # feedback not accepted, by HTTP status ("404", ...), "no-id" (answer without x-request-id), "error"
        "feedback_rejections": dict(sorted(rejections.items())),
        "versions": versions,
    }


def compute_stats(items: list[Outcome]) -> SliceStats:
    stats = SliceStats(requests=len(items), errors=sum(not o.ok for o in items), correct=sum(o.correct for o in items))
    stats.feedback_accepted = sum(o.feedback == "accepted" for o in items)
    stats.feedback_rejected = sum(o.feedback.startswith("rejected:") or o.feedback == "error" for o in items)
    stats.feedback_sent = stats.feedback_accepted + stats.feedback_rejected
    answered = [o for o in items if o.ok]
    if answered:
        lat = np.array([o.latency_s for o in answered]) * 1e3
        stats.accuracy = round(stats.correct / len(answered), 4)
        stats.p50_ms = round(float(np.percentile(lat, 50)), 2)
        stats.p99_ms = round(float(np.percentile(lat, 99)), 2)
        stats.mean_confidence = round(float(np.mean([o.confidence for o in answered])), 4)
        for o in answered:
            stats.labels[o.label] = stats.labels.get(o.label, 0) + 1
    return stats


def format_report(summary: dict) -> str:
    """The human-readable table: one block per responding version, one row per slice."""
    lines = [
        f"{summary['requests']} requests to {summary['endpoint']} in {summary['wall_seconds']} s "
        f"({summary['achieved_rps']} req/s), {summary['errors']} errors"
    ]
    feedback = bool(summary.get("feedback_share"))
    row = "  {:<10} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}" + ("  {:>17}" if feedback else "")
    for version, data in summary["versions"].items():
        lines.append(f"version {version}")
        lines.append(
            row.format("slice", "reqs", "errors", "accuracy", "p50 ms", "p99 ms", "mean conf", "feedback ok/sent")
        )
        for name, s in list(data["slices"].items()) + [("ALL", data["total"])]:
            lines.append(
                row.format(
                    name,
                    s["requests"],
                    s["errors"],
                    _fmt(s["accuracy"], pct=True),
                    _fmt(s["p50_ms"]),
                    _fmt(s["p99_ms"]),
                    _fmt(s["mean_confidence"]),
                    f"{s.get('feedback_accepted', 0)}/{s.get('feedback_sent', 0)}",
                )
            )
    if feedback and summary.get("feedback_rejections"):
        why = ", ".join(f"{k}: {v}" for k, v in summary["feedback_rejections"].items())
        lines.append(f"feedback not accepted: {why}")
    return "\n".join(lines)


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if pct else f"{value:.2f}"


def parse_mix(text: str) -> dict[str, float]:
    """'clean=3,noisy=1' → {'clean': 3.0, 'noisy': 1.0}; a bare name means weight 1."""
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in SLICES:
            raise ValueError(f"--mix: unknown slice {name!r}; known slices: {', '.join(SLICES)}")
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--mix: weight for {name!r} must be a number, got {weight!r}") from None
    return mix


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header: expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speech-loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="base URL (http://host:port) or a full predict/infer URL")
    p.add_argument("--protocol", default="v1", choices=["v1", "v2"])
    p.add_argument("--model-name", default="speech-commands")
    p.add_argument("--mix", default="clean", help=f"slice=weight list, slices: {', '.join(SLICES)}")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (0 = closed loop)")
    p.add_argument("--duration", type=float, default=None, help="seconds to send for")
    p.add_argument("--count", type=int, default=None, help="requests to send")
    p.add_argument("--concurrency", type=int, default=8, help="most requests in flight")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--header", action="append", default=[], help="extra request header 'Name: value' (repeatable)")
    p.add_argument(
        "--feedback-share",
        type=float,
        default=0.0,
        help="share (0..1) of answers whose true label is POSTed to the router's /feedback by x-request-id",
    )
    p.add_argument("--feedback-url", default=None, help="where feedback goes (default: /feedback at --url's host:port)")
    p.add_argument("--json", default=None, help="write the JSON summary to this file ('-' for stdout)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = LoadSpec(
            url=args.url,
            mix=parse_mix(args.mix),
            protocol=args.protocol,
            model_name=args.model_name,
            rate=args.rate,
            duration_s=args.duration,
            count=args.count,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            seed=args.seed,
            headers=dict(parse_header(h) for h in args.header),
            feedback_share=args.feedback_share,
            feedback_url=args.feedback_url,
        )
        summary = asyncio.run(run_load(spec))
    except ValueError as exc:
        print(f"speech-loadgen: {exc}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(summary, indent=2))
    else:
        print(format_report(summary))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
