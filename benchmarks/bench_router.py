"""Router benchmark: direct call vs our Go router vs nginx (split_clients + mirror), same machine,
same Go backends, one run. Prints one summary line and writes benchmarks/results/router.json.

Each proxy runs pinned to one core (router: GOMAXPROCS=1; nginx: one worker) while the load
generator and backends share the other core. On a shared 2-core box the proxy may not be the only
bottleneck, so beside observed req/s we report requests per CPU-second the proxy consumed
(from /proc), which is the single-core capacity independent of what else limits the run.
Added latency comes from one open loop that interleaves direct and proxied requests, so both see
the same machine noise; every figure is the median over several rounds.
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


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/models/m:predict"


def run_loadgen(loadgen: Path, urls: list[str], body: Path, rate: int) -> list[dict]:
    args = [str(loadgen), *(f"--url={u}" for u in urls), f"--body-file={body}", f"--duration={SECONDS}s",
            "--warmup=1s", f"--rate={rate}", f"--connections={256 if rate else 32}"]
    out = subprocess.run(pinned(LOAD_CPU, args), check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def measure_latency(targets: dict, loadgen: Path, bodies: dict[str, Path]) -> dict[str, dict]:
    """Added latency: direct and the proxies interleaved request by request in one open loop
    (each at the nominal rate), so machine noise hits them alike; added = proxy − direct of the
    same run, median over rounds."""
    groups = [(("router", "nginx"), pl, r) for pl in ("small", "audio_1s") for r in RATES]
    groups.append((("router+mirror", "nginx+mirror"), "small", 200))
    per_key: dict[str, list[dict]] = {}
    for rnd in range(ROUNDS):
        for names, payload, rate in groups:
            res = run_loadgen(loadgen, [url(targets["direct"][0])] + [url(targets[n][0]) for n in names],
                              bodies[payload], rate)
            direct = res[0]
            for name, r in zip(names, res[1:]):
                per_key.setdefault(f"{name}/{payload}/{rate}", []).append({
                    "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "direct_p50_ms": direct["p50_ms"],
                    "direct_p99_ms": direct["p99_ms"], "errors": r["errors"] + direct["errors"],
                    "added_p50_ms": r["p50_ms"] - direct["p50_ms"], "added_p99_ms": r["p99_ms"] - direct["p99_ms"]})
                print(f"  [{rnd + 1}/{ROUNDS}] {name:13s} {payload:8s} {rate:5d} req/s  p50 {r['p50_ms']:.2f} ms "
                      f"(direct {direct['p50_ms']:.2f})  p99 {r['p99_ms']:.2f} ms (direct {direct['p99_ms']:.2f})",
                      file=sys.stderr, flush=True)
    return {k: {f: round(statistics.median(x[f] for x in v), 3) for f in v[0]} | {"rounds": v}
            for k, v in per_key.items()}


def measure_throughput(targets: dict, loadgen: Path, bodies: dict[str, Path]) -> dict[str, dict]:
    """Closed loop, 32 connections, per target; requests per CPU-second from /proc."""
    plan = [(t, pl) for t in ("direct", "router", "nginx") for pl in ("small", "audio_1s")]
    plan += [("router+mirror", "small"), ("nginx+mirror", "small")]
    per_key: dict[str, list[dict]] = {}
    for rnd in range(ROUNDS):
        for name, payload in plan:
            port, pid = targets[name]
            cpu0 = cpu_seconds(pid) if pid else 0.0
            r = run_loadgen(loadgen, [url(port)], bodies[payload], 0)[0]
            point = {"rps": r["throughput_rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": r["errors"]}
            if pid:
                # the 1 s warm-up also burns proxy CPU: count its requests at the measured rate
                used = cpu_seconds(pid) - cpu0
                point["requests_per_cpu_s"] = r["requests"] * (SECONDS + 1) / SECONDS / used
            per_key.setdefault(f"{name}/{payload}", []).append(point)
            print(f"  [{rnd + 1}/{ROUNDS}] {name:13s} {payload:8s} max  {r['throughput_rps']:.0f} req/s  "
                  f"{point.get('requests_per_cpu_s', 0):.0f} req/CPU-s", file=sys.stderr, flush=True)
    return {k: {f: round(statistics.median(x[f] for x in v), 1) for f in v[0]} | {"rounds": v}
            for k, v in per_key.items()}


def summarize(latency: dict, throughput: dict) -> dict:
    s: dict = {"added_latency_ms": {k: {"p50": v["added_p50_ms"], "p99": v["added_p99_ms"]} for k, v in latency.items()},
               "max_throughput": {k: {"rps": v["rps"], "requests_per_cpu_s": v.get("requests_per_cpu_s")}
                                  for k, v in throughput.items()}}
    for payload in ("small", "audio_1s"):
        r, n = throughput[f"router/{payload}"], throughput[f"nginx/{payload}"]
        s[f"ratio_to_nginx/{payload}"] = {"rps": round(r["rps"] / n["rps"], 2),
                                          "requests_per_cpu_s": round(r["requests_per_cpu_s"] / n["requests_per_cpu_s"], 2)}
    r, n = throughput["router+mirror/small"], throughput["nginx+mirror/small"]
    s["ratio_to_nginx/mirror_small"] = {"rps": round(r["rps"] / n["rps"], 2),
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
            latency = measure_latency(targets, tools["loadgen"], bodies)
            throughput = measure_throughput(targets, tools["loadgen"], bodies)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)
    summary = summarize(latency, throughput)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seconds_per_point": SECONDS, "rounds": ROUNDS, "cpus": os.cpu_count(),
                                   "loadavg_at_end": os.getloadavg(), "summary": summary, "latency": latency,
                                   "throughput": throughput}, indent=2))
    a, m = summary["added_latency_ms"], summary["max_throughput"]
    print(f"router: added p50/p99 {a['router/small/200']['p50']:.2f}/{a['router/small/200']['p99']:.2f} ms at "
          f"200 req/s (nginx {a['nginx/small/200']['p50']:.2f}/{a['nginx/small/200']['p99']:.2f}); "
          f"1 core small: {m['router/small']['rps']:.0f} req/s, {m['router/small']['requests_per_cpu_s']:.0f} req/CPU-s "
          f"(nginx {m['nginx/small']['rps']:.0f}, {m['nginx/small']['requests_per_cpu_s']:.0f}); ratio to nginx "
          f"{summary['ratio_to_nginx/small']['rps']} req/s, {summary['ratio_to_nginx/small']['requests_per_cpu_s']} "
          f"per CPU-s; with mirror {summary['ratio_to_nginx/mirror_small']['rps']} -> {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
