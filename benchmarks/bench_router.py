"""Router benchmark: direct call vs our Go router vs nginx (split_clients + mirror), same machine,
same Go backends, one run. Prints one summary line per figure and writes benchmarks/results/router.json.

Each proxy runs pinned to one core (router: GOMAXPROCS=1; nginx: one worker) while the load
generator and backends share the other core. On a shared 2-core box the proxy may not be the only
bottleneck, so beside observed req/s we report requests per CPU-second the proxy consumed
(from /proc), which is the single-core capacity independent of what else limits the run.
Added latency comes from one open loop that interleaves direct and proxied requests, so both see
the same machine noise; every figure is the median over several rounds. Instructions per request
(user space, from valgrind's callgrind over a fixed number of requests) are the figure that stays
stable on a busy machine. BENCH_ROUTER_BASELINE=<router binary> adds that build ("router-before")
beside the current one in every measurement, for before/after figures from the same run.
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
BASELINE = os.environ.get("BENCH_ROUTER_BASELINE", "")  # an older router binary to measure beside
COUNTED = int(os.environ.get("BENCH_ROUTER_COUNTED_REQUESTS", "1000"))  # per instruction count
SHADOW_DELAY = "2s"  # the slow shadow version answers after this


def build_tools() -> dict[str, Path]:
    router = Path(
        subprocess.run([str(ROUTER_DIR / "build.sh")], check=True, capture_output=True, text=True).stdout.split()[-1]
    )
    out = CACHE / "bin" / "router-bench"
    out.mkdir(parents=True, exist_ok=True)
    tools = {"router": router}
    if BASELINE:
        tools["router-before"] = Path(BASELINE)
    for name in ("echobackend", "loadgen"):
        subprocess.run(["go", "build", "-o", str(out / name), f"./tools/{name}"], cwd=ROUTER_DIR, check=True)
        tools[name] = out / name
    return tools


def write_bodies(tmp: Path) -> dict[str, Path]:
    """Small: a tiny v1 request. Audio: 1 s of 16 kHz PCM16 (32,000 bytes) base64 in v1 JSON."""
    pcm = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / 16000)).to_bytes(2, "little", signed=True) for i in range(16000)
    )
    bodies = {
        "small": b'{"instances": [{"audio_b64": "AAAAAA=="}]}',
        "audio_1s": json.dumps({"instances": [{"audio_b64": base64.b64encode(pcm).decode()}]}).encode(),
    }
    paths = {}
    for name, data in bodies.items():
        paths[name] = tmp / f"{name}.json"
        paths[name].write_bytes(data)
    return paths


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


def start_backend(binary: Path, *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(pinned(LOAD_CPU, [str(binary), *args]), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # PIPE just above
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


def router_traffic(mirror: bool) -> dict:
    if mirror:
        return {"stable": {"version": "v1", "weight": 100}, "mirror": {"version": "v2", "percent": 100}}
    return {"stable": {"version": "v1", "weight": 90}, "candidate": {"version": "v2", "weight": 10}}


def start_router(
    binary: Path,
    tmp: Path,
    stable: int,
    candidate: int,
    mirror: bool,
    wrap: list[str] | None = None,
    ready_timeout: float = 10,
) -> tuple[subprocess.Popen, int]:
    """The router with a static split (90/10, or 100 % to v1 mirrored to v2); `wrap` runs it
    under a profiler."""
    port = free_port()
    cfg = tmp / f"router-{port}.json"
    cfg.write_text(
        json.dumps(
            {
                "traffic": router_traffic(mirror),
                "endpoints": {"v1": [f"127.0.0.1:{stable}"], "v2": [f"127.0.0.1:{candidate}"]},
            }
        )
    )
    env = {**os.environ, "GOMAXPROCS": "1"}
    if wrap:
        env["GODEBUG"] = "asyncpreemptoff=1"  # callgrind cannot follow Go's preemption signals
    proc = subprocess.Popen(
        pinned(
            PROXY_CPU,
            [
                *(wrap or []),
                str(binary),
                "--rollout=bench",
                f"--port={port}",
                f"--static-config={cfg}",
                "--max-concurrency=4096",
            ],
        ),
        env=env,
        stderr=subprocess.DEVNULL,
    )
    wait_http(port, "/readyz", ready_timeout)
    return proc, port


NGINX_CONF = """
worker_processes 1;
master_process {master};
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


def start_nginx(
    tmp: Path, stable: int, candidate: int, mirror: bool, wrap: list[str] | None = None, ready_timeout: float = 10
) -> tuple[subprocess.Popen, int]:
    """nginx with one worker; under a profiler (`wrap`) without a master, so one process does it all."""
    port = free_port()
    split = "100% v1;" if mirror else "10% v2; * v1;"
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp,
            stable=stable,
            candidate=candidate,
            port=port,
            split=split,
            master="off" if wrap else "on",
            mirror="mirror /_mirror; mirror_request_body on;" if mirror else "",
        )
    )
    proc = subprocess.Popen(
        pinned(PROXY_CPU, [*(wrap or []), "nginx", "-c", str(conf), "-p", str(tmp)]), stderr=subprocess.DEVNULL
    )
    wait_http(port, "/", ready_timeout)
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


def run_loadgen(loadgen: Path, urls: list[str], body: Path, rate: int, count: int = 0) -> list[dict]:
    args = [
        str(loadgen),
        *(f"--url={u}" for u in urls),
        f"--body-file={body}",
        f"--duration={SECONDS}s",
        "--warmup=1s",
        f"--rate={rate}",
        f"--connections={256 if rate else 32}",
    ]
    if count:  # exactly `count` requests on 4 connections, no warm-up (the caller warms up)
        args = [
            str(loadgen),
            f"--url={urls[0]}",
            f"--body-file={body}",
            "--warmup=0",
            f"--requests={count}",
            "--connections=4",
        ]
    out = subprocess.run(pinned(LOAD_CPU, args), check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def measure_latency(targets: dict, loadgen: Path, bodies: dict[str, Path]) -> dict[str, dict]:
    """Added latency: direct and the proxies interleaved request by request in one open loop
    (each at the nominal rate), so machine noise hits them alike; added = proxy − direct of the
    same run, median over rounds."""
    before = ("router-before",) if "router-before" in targets else ()
    groups = [(("router", *before, "nginx"), pl, r, "") for pl in ("small", "audio_1s") for r in RATES]
    groups.append((("router+mirror", *(f"{b}+mirror" for b in before), "nginx+mirror"), "small", 200, ""))
    # A shadow answering in 2 s, and one refusing connections, beside the same router unmirrored.
    groups.append((("router", "router+slow-shadow", "router+dead-shadow"), "small", 200, "/shadow-loop"))
    per_key: dict[str, list[dict]] = {}
    for rnd in range(ROUNDS):
        for names, payload, rate, tag in groups:
            res = run_loadgen(
                loadgen, [url(targets["direct"][0])] + [url(targets[n][0]) for n in names], bodies[payload], rate
            )
            direct = res[0]
            for name, r in zip(names, res[1:], strict=True):
                per_key.setdefault(f"{name}/{payload}/{rate}{tag}", []).append(
                    {
                        "p50_ms": r["p50_ms"],
                        "p99_ms": r["p99_ms"],
                        "direct_p50_ms": direct["p50_ms"],
                        "direct_p99_ms": direct["p99_ms"],
                        "errors": r["errors"] + direct["errors"],
                        "added_p50_ms": r["p50_ms"] - direct["p50_ms"],
                        "added_p99_ms": r["p99_ms"] - direct["p99_ms"],
                    }
                )
                print(
                    f"  [{rnd + 1}/{ROUNDS}] {name:13s} {payload:8s} {rate:5d} req/s  p50 {r['p50_ms']:.2f} ms "
                    f"(direct {direct['p50_ms']:.2f})  p99 {r['p99_ms']:.2f} ms (direct {direct['p99_ms']:.2f})",
                    file=sys.stderr,
                    flush=True,
                )
    return {
        k: {f: round(statistics.median(x[f] for x in v), 3) for f in v[0]} | {"rounds": v} for k, v in per_key.items()
    }


def measure_throughput(targets: dict, loadgen: Path, bodies: dict[str, Path]) -> dict[str, dict]:
    """Closed loop, 32 connections, per target; requests per CPU-second from /proc."""
    before = ("router-before",) if "router-before" in targets else ()
    plan = [(t, pl) for t in ("direct", "router", *before, "nginx") for pl in ("small", "audio_1s")]
    plan += [(f"{t}+mirror", "small") for t in ("router", *before, "nginx")]
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
            print(
                f"  [{rnd + 1}/{ROUNDS}] {name:13s} {payload:8s} max  {r['throughput_rps']:.0f} req/s  "
                f"{point.get('requests_per_cpu_s', 0):.0f} req/CPU-s",
                file=sys.stderr,
                flush=True,
            )
    return {
        k: {f: round(statistics.median(x[f] for x in v), 1) for f in v[0]} | {"rounds": v} for k, v in per_key.items()
    }


def callgrind_total(outfile_glob: list[Path]) -> int:
    """The instruction total of the newest callgrind dump."""
    newest = max(outfile_glob, key=lambda p: p.stat().st_mtime)
    for line in newest.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals line in {newest}")


def measure_instructions(tools: dict, tmp: Path, bodies: dict[str, Path], stable: int, candidate: int) -> dict:
    """User-space instructions per request under callgrind: start the proxy under valgrind,
    warm it up, zero the counters, send exactly COUNTED requests, dump. Counted per proxy alone
    (its background work during those requests included), so the figure does not depend on
    what else runs on the machine. Skipped (empty) without valgrind."""
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("  valgrind not installed: no instruction counts", file=sys.stderr)
        return {}
    routers = [n for n in ("router", "router-before") if n in tools]
    plan = [
        (f"{n}{m}", pl)
        for n in (*routers, "nginx")
        for m, pls in (("", ("small", "audio_1s")), ("+mirror", ("small",)))
        for pl in pls
    ]
    out: dict[str, int] = {}
    for name, payload in plan:
        base, mirror = name.split("+")[0], name.endswith("+mirror")
        prefix = tmp / f"cg-{name}-{payload}.out"
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}", "--dump-instr=no"]
        if base == "nginx":
            proc, port = start_nginx(tmp, stable, candidate, mirror, wrap=wrap, ready_timeout=120)
        else:
            proc, port = start_router(tools[base], tmp, stable, candidate, mirror, wrap=wrap, ready_timeout=120)
        try:
            run_loadgen(tools["loadgen"], [url(port)], bodies[payload], 0, count=200)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            r = run_loadgen(tools["loadgen"], [url(port)], bodies[payload], 0, count=COUNTED)[0]
            time.sleep(0.5)  # let the last shadow copies finish: they are part of a mirrored request's cost
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            total = callgrind_total(list(tmp.glob(f"{prefix.name}.*")))
        finally:
            proc.terminate()
            proc.wait(30)
        out[f"{name}/{payload}"] = round(total / COUNTED)
        print(
            f"  instructions {name:20s} {payload:8s} {out[f'{name}/{payload}']:,} per request "
            f"({r['errors']} errors in {COUNTED})",
            file=sys.stderr,
            flush=True,
        )
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summarize(latency: dict, throughput: dict, instructions: dict) -> dict:
    s: dict = {
        "added_latency_ms": {k: {"p50": v["added_p50_ms"], "p99": v["added_p99_ms"]} for k, v in latency.items()},
        "max_throughput": {
            k: {"rps": v["rps"], "requests_per_cpu_s": v.get("requests_per_cpu_s")} for k, v in throughput.items()
        },
        "instructions_per_request": instructions,
    }
    routers = [n for n in ("router", "router-before") if f"{n}/small" in throughput]
    for name in routers:
        key = "" if name == "router" else f"{name}:"
        for payload in ("small", "audio_1s"):
            r, n = throughput[f"{name}/{payload}"], throughput[f"nginx/{payload}"]
            s[f"{key}ratio_to_nginx/{payload}"] = {
                "rps": ratio(r["rps"], n["rps"]),
                "requests_per_cpu_s": ratio(r["requests_per_cpu_s"], n["requests_per_cpu_s"]),
                "instructions": ratio(instructions.get(f"{name}/{payload}"), instructions.get(f"nginx/{payload}")),
            }
        r, n = throughput[f"{name}+mirror/small"], throughput["nginx+mirror/small"]
        s[f"{key}ratio_to_nginx/mirror_small"] = {
            "rps": ratio(r["rps"], n["rps"]),
            "requests_per_cpu_s": ratio(r["requests_per_cpu_s"], n["requests_per_cpu_s"]),
        }
    # What mirroring 100 % of traffic costs per request, relative to the same proxy unmirrored.
    s["mirror_cost_ratio"] = {
        name: {
            "cpu": ratio(
                throughput[f"{name}/small"]["requests_per_cpu_s"],
                throughput[f"{name}+mirror/small"]["requests_per_cpu_s"],
            ),
            "instructions": ratio(instructions.get(f"{name}+mirror/small"), instructions.get(f"{name}/small")),
        }
        for name in (*routers, "nginx")
    }
    s["shadow_p99_ms"] = {
        k.split("/")[0]: {"p99": latency[k]["p99_ms"], "added_p99": latency[k]["added_p99_ms"]}
        for k in latency
        if k.endswith("/shadow-loop")
    }
    return s


def report(summary: dict) -> None:
    """One line per figure the issue asks for."""
    a, m, ins = summary["added_latency_ms"], summary["max_throughput"], summary["instructions_per_request"]
    for pl in ("small", "audio_1s"):
        r = summary[f"ratio_to_nginx/{pl}"]
        b = summary.get(f"router-before:ratio_to_nginx/{pl}")
        print(
            f"router {pl}: {m[f'router/{pl}']['requests_per_cpu_s']:.0f} req per CPU-s "
            f"(nginx {m[f'nginx/{pl}']['requests_per_cpu_s']:.0f}), ratio {r['requests_per_cpu_s']} per CPU-s, "
            f"{r['rps']} req/s, {r['instructions']} instructions"
            + (f" (before: {b['requests_per_cpu_s']}, {b['rps']}, {b['instructions']})" if b else "")
        )
    mc = summary["mirror_cost_ratio"]
    print(
        "mirror 100 % cost per request vs plain: "
        + ", ".join(f"{n} {v['cpu']}x CPU / {v['instructions']}x instructions" for n, v in mc.items())
    )
    for pl in ("small", "audio_1s"):
        print(
            f"added at 1,000 req/s {pl}: router p50/p99 {a[f'router/{pl}/1000']['p50']:.2f}/"
            f"{a[f'router/{pl}/1000']['p99']:.2f} ms (nginx {a[f'nginx/{pl}/1000']['p50']:.2f}/"
            f"{a[f'nginx/{pl}/1000']['p99']:.2f})"
        )
    sp = summary["shadow_p99_ms"]
    if sp:
        print(
            f"p99 at 200 req/s, shadow answering in {SHADOW_DELAY} / refusing: "
            + ", ".join(f"{n} {v['p99']:.2f} ms (added {v['added_p99']:.2f})" for n, v in sp.items())
        )
    if ins:
        print("instructions per request: " + ", ".join(f"{k} {v:,}" for k, v in ins.items()))


def main() -> int:
    tools = build_tools()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-router-") as d:
        tmp = Path(d)
        bodies = write_bodies(tmp)
        try:
            (b1, p1), (b2, p2) = start_backend(tools["echobackend"]), start_backend(tools["echobackend"])
            slow, p_slow = start_backend(tools["echobackend"], f"--delay={SHADOW_DELAY}")
            procs += [b1, b2, slow]
            targets: dict[str, tuple[int, int | None]] = {"direct": (p1, None)}
            for router in [n for n in ("router", "router-before") if n in tools]:
                for suffix, mirror in (("", False), ("+mirror", True)):
                    proc, port = start_router(tools[router], tmp, p1, p2, mirror)
                    procs.append(proc)
                    targets[f"{router}{suffix}"] = (port, proc.pid)
            for name, shadow in (("router+slow-shadow", p_slow), ("router+dead-shadow", free_port())):
                proc, port = start_router(tools["router"], tmp, p1, shadow, True)
                procs.append(proc)
                targets[name] = (port, proc.pid)
            for name, mirror in (("nginx", False), ("nginx+mirror", True)):
                proc, port = start_nginx(tmp, p1, p2, mirror)
                procs.append(proc)
                targets[name] = (port, proc.pid)
            latency = measure_latency(targets, tools["loadgen"], bodies)
            throughput = measure_throughput(targets, tools["loadgen"], bodies)
            for p in procs[3:]:  # the proxies: the instruction counts run each alone
                p.terminate()
                p.wait(10)
            instructions = measure_instructions(tools, tmp, bodies, p1, p2)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)
    summary = summarize(latency, throughput, instructions)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "seconds_per_point": SECONDS,
                "rounds": ROUNDS,
                "cpus": os.cpu_count(),
                "counted_requests": COUNTED,
                "baseline": BASELINE or None,
                "loadavg_at_end": os.getloadavg(),
                "summary": summary,
                "latency": latency,
                "throughput": throughput,
            },
            indent=2,
        )
    )
    report(summary)
    print(f"-> {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
