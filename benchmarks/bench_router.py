"""Router benchmark: direct call vs our Go router vs nginx (split_clients + mirror), same machine,
same Go backends, one run. Prints one summary line and writes benchmarks/results/router.json.

Each proxy runs pinned to one core (router: GOMAXPROCS=1; nginx: one worker) while the load
generator and backends share the other core. On a shared 2-core box the proxy may not be the only
bottleneck, so beside observed req/s we report requests per CPU-second the proxy consumed
(from /proc), which is the single-core capacity independent of what else limits the run.
Targets are interleaved over several rounds and the median of each figure is kept.
"""
from __future__ import annotations

import base64
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUTER_DIR = REPO / "model_server" / "traffic_router"
RESULTS = Path(__file__).resolve().parent / "results" / "router.json"
SECONDS = float(os.environ.get("BENCH_ROUTER_SECONDS", "3"))  # per measured point and round
ROUNDS = int(os.environ.get("BENCH_ROUTER_ROUNDS", "3"))
RATES = (200, 1000)
PROXY_CPU, LOAD_CPU = "1", "0"
CACHE = Path(os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout")


def build_tools() -> dict[str, Path]:
    router = Path(subprocess.run([str(ROUTER_DIR / "build.sh")], check=True, capture_output=True,
                                 text=True).stdout.split()[-1])
    out = CACHE / "bin" / "router-bench"
    out.mkdir(parents=True, exist_ok=True)
    tools = {"router": router}
    for name in ("echobackend", "loadgen"):
        subprocess.run(["go", "build", "-o", str(out / name), f"./tools/{name}"], cwd=ROUTER_DIR, check=True)
        tools[name] = out / name
    return tools


def write_bodies(tmp: Path) -> dict[str, Path]:
    """Small: a tiny v1 request. Audio: 1 s of 16 kHz PCM16 (32,000 bytes) base64 in v1 JSON."""
    pcm = b"".join(int(8000 * math.sin(2 * math.pi * 440 * i / 16000)).to_bytes(2, "little", signed=True)
                   for i in range(16000))
    bodies = {"small": b'{"instances": [{"audio_b64": "AAAAAA=="}]}',
              "audio_1s": json.dumps({"instances": [{"audio_b64": base64.b64encode(pcm).decode()}]}).encode()}
    paths = {}
    for name, data in bodies.items():
        paths[name] = tmp / f"{name}.json"
        paths[name].write_bytes(data)
    return paths


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


def start_backend(binary: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(pinned(LOAD_CPU, [str(binary)]), stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str = "/", timeout: float = 10) -> None:
    import http.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing answering on 127.0.0.1:{port}{path}")


def start_router(binary: Path, tmp: Path, stable: int, candidate: int, mirror: bool) -> tuple[subprocess.Popen, int]:
    traffic = {"stable": {"version": "v1", "weight": 90 if not mirror else 100}}
    if not mirror:
        traffic["candidate"] = {"version": "v2", "weight": 10}
    else:
        traffic["mirror"] = {"version": "v2", "percent": 100}
    cfg = tmp / f"router-{'mirror' if mirror else 'split'}.json"
    cfg.write_text(json.dumps({"traffic": traffic, "endpoints": {"v1": [f"127.0.0.1:{stable}"],
                                                                 "v2": [f"127.0.0.1:{candidate}"]}}))
    port = free_port()
    proc = subprocess.Popen(pinned(PROXY_CPU, [str(binary), "--rollout=bench", f"--port={port}",
                                               f"--static-config={cfg}", "--max-concurrency=4096"]),
                            env={**os.environ, "GOMAXPROCS": "1"}, stderr=subprocess.DEVNULL)
    wait_http(port, "/readyz")
    return proc, port


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  client_max_body_size 8m;
  client_body_buffer_size 1m;
  keepalive_requests 100000;
  upstream v1 {{ server 127.0.0.1:{stable}; keepalive 256; keepalive_requests 100000; }}
  upstream v2 {{ server 127.0.0.1:{candidate}; keepalive 256; keepalive_requests 100000; }}
  split_clients "${{request_id}}" $split_target {{ {split} }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      {mirror}
      proxy_pass http://$split_target;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location = /_mirror {{
      internal;
      proxy_pass http://v2$request_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def start_nginx(tmp: Path, stable: int, candidate: int, mirror: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    split = "100% v1;" if mirror else "10% v2; * v1;"
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, stable=stable, candidate=candidate, port=port, split=split,
                                      mirror="mirror /_mirror; mirror_request_body on;" if mirror else ""))
    proc = subprocess.Popen(pinned(PROXY_CPU, ["nginx", "-c", str(conf), "-p", str(tmp)]),
                            stderr=subprocess.DEVNULL)
    wait_http(port)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its descendants (nginx workers are children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def descendants(pid: int) -> list[int]:
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += [int(child), *descendants(int(child))]
    return out


def run_load(loadgen: Path, port: int, body: Path, rate: int, proxy_pid: int | None) -> dict:
    args = [str(loadgen), f"--url=http://127.0.0.1:{port}/v1/models/m:predict", f"--body-file={body}",
            f"--duration={SECONDS}s", "--warmup=1s", f"--rate={rate}", f"--connections={256 if rate else 32}"]
    cpu0 = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    out = subprocess.run(pinned(LOAD_CPU, args), check=True, capture_output=True, text=True)
    point = json.loads(out.stdout)
    if proxy_pid:
        # warm-up traffic also burns proxy CPU; scale requests by the measured share of wall time
        used = cpu_seconds(proxy_pid) - cpu0
        total_reqs = point["requests"] * (SECONDS + 1) / SECONDS
        point["proxy_cpu_s"] = round(used, 3)
        point["requests_per_cpu_s"] = round(total_reqs / used, 1) if used > 0 else None
    return point


def plan() -> list[tuple[str, str, int]]:
    """(target, payload, rate) points of one round; rate 0 = closed-loop maximum."""
    points = [(t, pl, r) for t in ("direct", "router", "nginx") for pl in ("small", "audio_1s") for r in (*RATES, 0)]
    return points + [(t, "small", r) for t in ("router+mirror", "nginx+mirror") for r in (200, 0)]


def measure(targets: dict[str, tuple[int, int | None]], loadgen: Path, bodies: dict[str, Path]) -> list[dict]:
    """Runs every point ROUNDS times, interleaving targets so a burst of load from elsewhere on
    the machine hits all of them alike; keeps the median of each figure."""
    runs: dict[tuple, list[dict]] = {}
    for rnd in range(ROUNDS):
        for target, payload, rate in plan():
            port, pid = targets[target]
            p = run_load(loadgen, port, bodies[payload], rate, pid)
            runs.setdefault((target, payload, rate), []).append(p)
            label = f"{rate} req/s" if rate else "max"
            print(f"  [{rnd + 1}/{ROUNDS}] {target:13s} {payload:8s} {label:9s} p50 {p['p50_ms']:.2f} ms  "
                  f"p99 {p['p99_ms']:.2f} ms  {p['throughput_rps']:.0f} req/s  errors {p['errors']}",
                  file=sys.stderr, flush=True)
    points = []
    for (target, payload, rate), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("p50_ms", "p99_ms", "throughput_rps")}
        if rs[0].get("requests_per_cpu_s") is not None:
            med["requests_per_cpu_s"] = statistics.median(r["requests_per_cpu_s"] for r in rs)
        points.append({"target": target, "payload": payload, "target_rps": rate, **med,
                       "errors": sum(r["errors"] for r in rs), "rounds": rs})
    return points


def added(points: list[dict], target: str, payload: str, rate: int) -> dict:
    def pick(t):
        return next(p for p in points if p["target"] == t and p["payload"] == payload and
                    p.get("target_rps", 0) == rate)
    base, p = pick("direct"), pick(target)
    return {"p50_ms": round(p["p50_ms"] - base["p50_ms"], 3), "p99_ms": round(p["p99_ms"] - base["p99_ms"], 3)}


def summarize(points: list[dict]) -> dict:
    s: dict = {"added_latency": {}, "max_throughput": {}}
    for target in ("router", "nginx"):
        for payload in ("small", "audio_1s"):
            for rate in RATES:
                s["added_latency"][f"{target}/{payload}/{rate}"] = added(points, target, payload, rate)
            mx = next(p for p in points if p["target"] == target and p["payload"] == payload and not p.get("target_rps"))
            s["max_throughput"][f"{target}/{payload}"] = {"rps": round(mx["throughput_rps"]),
                                                          "requests_per_cpu_s": mx.get("requests_per_cpu_s")}
    for target in ("router+mirror", "nginx+mirror"):
        s["added_latency"][f"{target}/small/200"] = added(points, target, "small", 200)
        mx = next(p for p in points if p["target"] == target and not p.get("target_rps"))
        s["max_throughput"][f"{target}/small"] = {"rps": round(mx["throughput_rps"]),
                                                  "requests_per_cpu_s": mx.get("requests_per_cpu_s")}
    for payload in ("small", "audio_1s"):
        r, n = s["max_throughput"][f"router/{payload}"], s["max_throughput"][f"nginx/{payload}"]
        s[f"ratio_to_nginx/{payload}"] = {"rps": round(r["rps"] / n["rps"], 2),
                                          "requests_per_cpu_s": round(r["requests_per_cpu_s"] / n["requests_per_cpu_s"], 2)}
    return s


def main() -> int:
    tools = build_tools()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-router-") as d:
        tmp = Path(d)
        bodies = write_bodies(tmp)
        try:
            (b1, p1), (b2, p2) = start_backend(tools["echobackend"]), start_backend(tools["echobackend"])
            procs += [b1, b2]
            targets: dict[str, tuple[int, int | None]] = {"direct": (p1, None)}
            for name, mirror in (("router", False), ("router+mirror", True)):
                proc, port = start_router(tools["router"], tmp, p1, p2, mirror)
                procs.append(proc)
                targets[name] = (port, proc.pid)
            for name, mirror in (("nginx", False), ("nginx+mirror", True)):
                proc, port = start_nginx(tmp, p1, p2, mirror)
                procs.append(proc)
                targets[name] = (port, proc.pid)
            points = measure(targets, tools["loadgen"], bodies)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)
    summary = summarize(points)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seconds_per_point": SECONDS, "rounds": ROUNDS, "cpus": os.cpu_count(),
                                   "loadavg_at_end": os.getloadavg(), "summary": summary, "points": points}, indent=2))
    a = summary["added_latency"]
    m = summary["max_throughput"]
    print(f"router: added p50/p99 {a['router/small/200']['p50_ms']:.2f}/{a['router/small/200']['p99_ms']:.2f} ms at "
          f"200 req/s (nginx {a['nginx/small/200']['p50_ms']:.2f}/{a['nginx/small/200']['p99_ms']:.2f}); "
          f"1 core small: {m['router/small']['rps']} req/s, {m['router/small']['requests_per_cpu_s']} req/CPU-s "
          f"(nginx {m['nginx/small']['rps']}, {m['nginx/small']['requests_per_cpu_s']}); ratio to nginx "
          f"{summary['ratio_to_nginx/small']['requests_per_cpu_s']} (per CPU-s), "
          f"{summary['ratio_to_nginx/small']['rps']} (req/s) -> {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
