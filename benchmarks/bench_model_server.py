"""Model-server benchmark: bare in-process pipeline vs the speech-server over HTTP, same clips, one run.

Prints one summary line and writes benchmarks/results/model_server.json (throughput ratio, p50/p99, stages).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "model_server.json"
PHASE_SECONDS = float(os.environ.get("BENCH_PHASE_SECONDS", "8"))
CONCURRENCY = 8


def load_bench_clips(n: int = 64) -> tuple[list[np.ndarray], str]:
    """1 s int16 clips: the shipped clean slice if the clips package is there, else espeak-ng words."""
    try:
        from speech_serving.clips import load_clips

        clips = [np.asarray(c.audio, dtype=np.int16) for c in load_clips("clean")]
        return clips[:n], "speech_serving.clips clean slice"
    except (ImportError, FileNotFoundError):
        pass
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    out = []
    for i in range(n):
        wav = subprocess.run(["espeak-ng", "--stdout", "-s", str(140 + 7 * i % 80), words[i % 10]],
                             check=True, capture_output=True).stdout
        raw = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16",
                              "-c", "1", "-", "pad", "0.2", "1", "trim", "0", "1"],
                             input=wav, check=True, capture_output=True).stdout
        out.append(np.frombuffer(raw, dtype="<i2").copy())
    return out, "espeak-ng words padded to 1 s"


def resolve_model() -> tuple[str, str]:
    from speech_serving.server.config import resolve_model_uri

    try:
        return str(resolve_model_uri("builtin:v2")), "builtin:v2"
    except SystemExit:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))
        from speech_fixtures import write_tiny_recognizer

        path = Path(tempfile.mkdtemp()) / "tiny.onnx"
        return str(write_tiny_recognizer(path)), "tiny test recognizer (builtin:v2 not shipped yet)"


def summarize(latencies: list[float], wall: float) -> dict:
    lat = np.array(latencies) * 1e3
    return {"requests": len(latencies), "throughput_rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3)}


def bench_bare(model_path: str, clips: list[np.ndarray]) -> dict:
    from speech_serving.pipeline import load_pipeline

    pipe = load_pipeline(Path(model_path), threads=1)
    floats = [c.astype(np.float32) / 32768.0 for c in clips]
    for c in floats[:8]:
        pipe.run_clip(c)
    latencies, start, i = [], time.perf_counter(), 0
    while time.perf_counter() - start < PHASE_SECONDS:
        t = time.perf_counter()
        pipe.run_clip(floats[i % len(floats)])
        latencies.append(time.perf_counter() - t)
        i += 1
    return summarize(latencies, time.perf_counter() - start)


def v1_bodies(clips: list[np.ndarray]) -> list[bytes]:
    """Raw PCM16 in base64: the cheapest encoding (no WAV parsing, no JSON number lists)."""
    return [json.dumps({"instances": [{"audio_b64": base64.b64encode(c.tobytes()).decode()}]}).encode() for c in clips]


def v2_bodies(clips: list[np.ndarray]) -> list[bytes]:
    return [json.dumps({"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1],
                                    "data": [base64.b64encode(c.tobytes()).decode()]}]}).encode() for c in clips]


async def drive(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"content-type": "application/json"}) as session:
        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with session.post(url, data=bodies[i % len(bodies)]) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors[0] += 1
                latencies.append(time.perf_counter() - t)
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - start
    out = summarize(latencies, wall)
    out["errors"] = errors[0]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "speech_serving.server", "--model-uri", model_path, "--model-version", "bench",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"speech-server exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("speech-server did not start within 60 s")


async def scrape_stage_means(base: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as resp:
        text = await resp.text()
    sums, counts = {}, {}
    for line in text.splitlines():
        if line.startswith("speech_request_duration_seconds_sum") or line.startswith("speech_request_duration_seconds_count"):
            stage = line.split('stage="')[1].split('"')[0]
            (sums if "_sum{" in line else counts)[stage] = float(line.rsplit(" ", 1)[1])
    return {s: round(sums[s] / counts[s] * 1e3, 3) for s in sums if counts.get(s)}


def run() -> dict:
    clips, clip_source = load_bench_clips()
    model_path, model_desc = resolve_model()
    bare = bench_bare(model_path, clips)
    port = free_port()
    proc = start_server(model_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        v1 = f"{base}/v1/models/speech-commands:predict"
        asyncio.run(drive(v1, v1_bodies(clips), 4, 1.0))  # warm-up
        server = {
            "v1_batch1": asyncio.run(drive(v1, v1_bodies(clips), 1, PHASE_SECONDS)),
            "v1_concurrency8": asyncio.run(drive(v1, v1_bodies(clips), CONCURRENCY, PHASE_SECONDS)),
            "v2_concurrency8": asyncio.run(drive(f"{base}/v2/models/speech-commands/infer", v2_bodies(clips),
                                                 CONCURRENCY, PHASE_SECONDS)),
        }
        stages = asyncio.run(scrape_stage_means(base))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    ratio = {k: round(v["throughput_rps"] / bare["throughput_rps"], 3) for k, v in server.items()}
    return {"clips": len(clips), "clip_source": clip_source, "model": model_desc, "phase_seconds": PHASE_SECONDS,
            "cpu_count": os.cpu_count(), "bare_pipeline": bare, "server": server,
            "throughput_ratio_vs_bare": ratio, "server_stage_mean_ms": stages, "goal_ratio": 0.8}


def main() -> None:
    result = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    bare, srv = result["bare_pipeline"], result["server"]
    print(
        f"model_server: bare {bare['throughput_rps']} clips/s p50 {bare['p50_ms']} ms | "
        f"server v1 batch1 {srv['v1_batch1']['throughput_rps']} rps p50 {srv['v1_batch1']['p50_ms']} ms "
        f"p99 {srv['v1_batch1']['p99_ms']} ms | v1 c8 {srv['v1_concurrency8']['throughput_rps']} rps "
        f"(ratio {result['throughput_ratio_vs_bare']['v1_concurrency8']}) p99 {srv['v1_concurrency8']['p99_ms']} ms | "
        f"v2 c8 ratio {result['throughput_ratio_vs_bare']['v2_concurrency8']} (goal >= 0.8)"
    )


if __name__ == "__main__":
    main()
