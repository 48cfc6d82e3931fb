"""Model-server benchmark: bare in-process pipeline vs the speech-server over HTTP, same clips, one run.

Prints one summary line and writes benchmarks/results/model_server.json (throughput ratio, p50/p99, stages).
"""

from __future__ import annotations

import os

# Same BLAS setting as speech-server (see its __main__) so the bare pipeline is measured like the served one.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import asyncio  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "model_server.json"
PHASE_SECONDS = float(os.environ.get("BENCH_PHASE_SECONDS", "8"))  # per mode, over all rounds
ROUNDS = 6  # fine interleaving: other load on a shared machine then hits every mode alike
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

    for uri in ("builtin:v2", "builtin:v1"):
        try:
            return str(resolve_model_uri(uri)), uri
        except SystemExit:
            continue
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))
    from speech_fixtures import write_tiny_recognizer

    path = Path(tempfile.mkdtemp()) / "tiny.onnx"
    return str(write_tiny_recognizer(path)), "tiny test recognizer (no shipped model found)"


class Phase:
    """Latencies, wall time and CPU seconds of one mode, accumulated over interleaved rounds."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.wall = self.client_cpu = self.server_cpu = 0.0
        self.errors = 0

    def add(self, latencies: list[float], wall: float, client_cpu: float, server_cpu: float, errors: int) -> None:
        self.latencies += latencies
        self.wall += wall
        self.client_cpu += client_cpu
        self.server_cpu += server_cpu
        self.errors += errors

    def summary(self) -> dict:
        lat = np.array(self.latencies) * 1e3
        n = max(1, len(self.latencies))
        return {"requests": len(self.latencies), "throughput_rps": round(len(self.latencies) / self.wall, 1),
                "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
                "errors": self.errors, "server_cpu_ms_per_request": round(self.server_cpu / n * 1e3, 3),
                "client_cpu_ms_per_request": round(self.client_cpu / n * 1e3, 3)}


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BARE_STAGES = {"vad": 0.0, "features": 0.0, "recognize": 0.0, "clips": 0}


def bare_round(pipe, floats: list[np.ndarray], seconds: float, phase: Phase) -> None:
    """The same pipeline code the server runs, one clip per call, in a loop in this process."""
    latencies, start, i, cpu0 = [], time.perf_counter(), 0, time.process_time()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        _, times = pipe.run_batch([floats[i % len(floats)]])
        latencies.append(time.perf_counter() - t)
        for stage in ("vad", "features", "recognize"):
            BARE_STAGES[stage] += getattr(times, stage)
        BARE_STAGES["clips"] += 1
        i += 1
    phase.add(latencies, time.perf_counter() - start, time.process_time() - cpu0, 0.0, 0)


def v1_bodies(clips: list[np.ndarray]) -> list[bytes]:
    """Raw PCM16 in base64: the cheapest encoding (no WAV parsing, no JSON number lists)."""
    return [json.dumps({"instances": [{"audio_b64": base64.b64encode(c.tobytes()).decode()}]}).encode() for c in clips]


def v2_binary_bodies(clips: list[np.ndarray]) -> list[tuple[bytes, str]]:
    """The binary tensor extension: a small JSON header, then raw INT16 samples (no base64, no lists)."""
    out = []
    for c in clips:
        header = json.dumps({"inputs": [{"name": "audio", "datatype": "INT16", "shape": [1, len(c)],
                                         "parameters": {"binary_data_size": c.nbytes}}]}).encode()
        out.append((header + c.astype("<i2").tobytes(), f"inference-header-content-length: {len(header)}\r\n"))
    return out


def v2_bodies(clips: list[np.ndarray]) -> list[bytes]:
    return [json.dumps({"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1],
                                    "data": [base64.b64encode(c.tobytes()).decode()]}]}).encode() for c in clips]


class RawHttpConnection:
    """A minimal HTTP/1.1 keep-alive client: the benchmark shares 2 cores with the server, and aiohttp's
    ~0.4 ms CPU per request would be charged to the server's throughput."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, extra: str = "") -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(url: str, bodies: list[bytes], concurrency: int, seconds: float, server_pid: int,
                phase: Phase | None = None) -> None:
    host_port, path = url.split("://", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds
    conns = [RawHttpConnection(host, int(port)) for _ in range(concurrency)]

    async def worker(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            body, extra = bodies[i % len(bodies)] if isinstance(bodies[0], tuple) else (bodies[i % len(bodies)], "")
            if await conns[k].post("/" + path, body, extra) != 200:
                errors[0] += 1
            latencies.append(time.perf_counter() - t)
            i += concurrency

    start, cpu0, srv0 = time.perf_counter(), time.process_time(), process_cpu_seconds(server_pid)
    try:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        for conn in conns:
            conn.close()
    wall = time.perf_counter() - start
    if phase is not None:
        phase.add(latencies, wall, time.process_time() - cpu0, process_cpu_seconds(server_pid) - srv0, errors[0])


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
    from speech_serving.pipeline import load_pipeline

    clips, clip_source = load_bench_clips()
    model_path, model_desc = resolve_model()
    pipe = load_pipeline(Path(model_path), threads=1)
    floats = [c.astype(np.float32) / 32768.0 for c in clips]
    port = free_port()
    proc = start_server(model_path, port)
    base = f"http://127.0.0.1:{port}"
    v1, v2 = f"{base}/v1/models/speech-commands:predict", f"{base}/v2/models/speech-commands/infer"
    modes = {"v1_batch1": (v1, v1_bodies(clips), 1), "v1_concurrency8": (v1, v1_bodies(clips), CONCURRENCY),
             "v2_concurrency8": (v2, v2_bodies(clips), CONCURRENCY),
             "v2_binary_concurrency8": (v2, v2_binary_bodies(clips), CONCURRENCY)}
    phases = {name: Phase() for name in ["bare", *modes]}
    slice_s = PHASE_SECONDS / ROUNDS
    try:
        bare_round(pipe, floats, 0.5, Phase())  # warm-up both sides
        asyncio.run(drive(v1, modes["v1_batch1"][1], 4, 1.0, proc.pid))
        BARE_STAGES.update(vad=0.0, features=0.0, recognize=0.0, clips=0)
        # Interleaved rounds: other load on this shared machine then hits every mode alike.
        for _ in range(ROUNDS):
            bare_round(pipe, floats, slice_s, phases["bare"])
            for name, (url, bodies, conc) in modes.items():
                asyncio.run(drive(url, bodies, conc, slice_s, proc.pid, phases[name]))
        stages = asyncio.run(scrape_stage_means(base))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    bare = phases["bare"].summary()
    bare["cpu_ms_per_clip"] = bare.pop("client_cpu_ms_per_request")
    bare["stage_mean_ms"] = {k: round(BARE_STAGES[k] / BARE_STAGES["clips"] * 1e3, 3)
                             for k in ("vad", "features", "recognize")}
    for key in ("errors", "server_cpu_ms_per_request"):
        bare.pop(key)
    server = {name: phases[name].summary() for name in modes}
    ratio = {k: round(v["throughput_rps"] / bare["throughput_rps"], 3) for k, v in server.items()}
    return {"clips": len(clips), "clip_source": clip_source, "model": model_desc, "seconds_per_mode": PHASE_SECONDS,
            "rounds": ROUNDS, "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "bare_pipeline": bare, "server": server, "throughput_ratio_vs_bare": ratio,
            "server_stage_mean_ms_per_batch": stages, "goal_ratio": 0.8}


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
        f"v2 c8 ratio {result['throughput_ratio_vs_bare']['v2_concurrency8']}, v2 binary c8 ratio "
        f"{result['throughput_ratio_vs_bare']['v2_binary_concurrency8']} (goal >= 0.8)"
    )


if __name__ == "__main__":
    main()
