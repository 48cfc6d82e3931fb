"""Operator benchmark on the testbed: N concurrent ModelRollouts on one process, at several N, and
breach-to-stable latency with all N rolling back at once.

Run: `python -m benchmarks.bench_operator [--rollouts 200 1000] [--time-limit 3000]` with the testbed
up. Model-server and router pods use unmapped images, so kwok simulates them Ready (no processes):
this measures the operator, not the data plane. Each scale gets its own namespace and a fresh
operator process: all N reach Healthy on v1 and sit idle for a while; then all N move to a
per-rollout candidate that the stub Prometheus reports as breaching from the moment its canary
weight shows up (the time from there to traffic back on stable is one sample per rollout), and
last all N move to v2 together through the canary steps (CPU and API calls per step). Writes benchmarks/results/operator.json, prints one summary line per scale
and a ratio line (largest scale against the smallest). A run that outlives --time-limit stops,
cleans up, prints a line that says so and where it was, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from e2e.testbed import paths
from rollout_operator.adapters.kube import MODEL_ROLLOUTS, KubeApi
from tests.support.operator_harness import CRD, OperatorProcess, connect_testbed, kubectl
from tests.support.stub_prometheus import StubPrometheus, vector
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "results" / "operator.json"
STEPS = [{"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}]
STEPS_PER_ROLLOUT = len(STEPS) + 1  # the canary steps plus the promotion
VERSION_RE = re.compile(r'version="([^"]+)"')
ANALYSIS_INTERVAL_S = 5.0
IDLE_WINDOW_S = 30.0  # all Healthy, nothing to do: what the timers alone cost
TARGET = "RSS < 300 MiB at 1000; breach->stable p99 <= analysis interval + 2 s; API calls per step flat in N"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTED = time.monotonic()


class TimeLimitHit(Exception):
    """The whole run outlived --time-limit."""


class Gates:
    """Healthy everywhere except versions in `breach`, from the moment they are added."""

    def __init__(self) -> None:
        self.breach: dict[str, float] = {}  # version -> time the breach became visible
        self.lock = threading.Lock()
        self.queries = 0

    def answer(self, query: str):
        with self.lock:
            self.queries += 1
        if query.startswith("sum(increase("):
            return vector(1000)
        found = VERSION_RE.search(query)
        with self.lock:
            bad = found is not None and found.group(1) in self.breach
        return vector(0.5 if bad else 0.001)


def manifest(name: str, ns: str, version: str, interval: str = "2s", failure_limit: int = 2) -> dict:
    return {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "model": {"name": "speech-commands", "version": version},
            "server": {"replicas": 1, "image": "bench/simulated-model-server:1"},
            "strategy": {"canary": {"steps": STEPS}},
            "analysis": {
                "interval": interval,
                "minSamples": 10,
                "failureLimit": failure_limit,
                "metrics": [{"name": "error-rate", "template": "error-rate", "max": 0.05}],
            },
            "trafficRouting": {"router": {"image": "bench/simulated-router:1"}},
            "progressDeadline": "10m",
        },
    }


def fetch_metric_samples(port: int, name: str) -> dict[str, float]:
    """Each sample of one metric family from the operator's /metrics, keyed by its label text."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            samples[key[len(name) :]] = float(value)
    return samples


class ProcessProbe:
    """RSS, peak RSS, CPU seconds and threads of one process, from /proc; a sampler thread keeps
    the peak thread count (the kernel keeps the peak RSS itself, VmHWM)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss_mib(self) -> float:
        return self.status("VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        return self.status("VmHWM") / 1024

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.max_threads = max(self.max_threads, self.status("Threads"))
            except (OSError, KeyError):
                return

    def close(self) -> None:
        self._stop.set()


class RolloutWatch:
    """The namespace's ModelRollouts as a watch delivers them (the benchmark's own reads stay off
    the operator's API server budget), plus the breach bookkeeping of the last phase."""

    def __init__(self, api_client: Any, ns: str, gates: Gates) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.ns, self.gates = ns, gates
        self.status: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.candidates: dict[str, str] = {}  # rollout -> candidate version that breaches once on
        self.breached: dict[str, float] = {}  # rollout -> monotonic time its breach became visible
        self.back: dict[str, float] = {}  # rollout -> monotonic time traffic was all on stable again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        args = ("modelrollout.dev", "v1alpha1", self.ns, "modelrollouts")
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    listed: dict[str, Any] = self.api.list_namespaced_custom_object(*args)  # type: ignore[assignment]
                    for obj in listed["items"]:
                        self._seen(obj)
                    version = listed["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    self.api.list_namespaced_custom_object, *args, resource_version=version, timeout_seconds=60
                )
                for event in stream:
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = ""  # 410 Gone: list again
                        break
                    version = obj["metadata"]["resourceVersion"]
                    self._seen(obj)
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - a dropped watch is listed again
                version = ""
                time.sleep(1)

    def _seen(self, obj: dict) -> None:
        now = time.monotonic()
        name, status = obj["metadata"]["name"], obj.get("status") or {}
        candidate = (status.get("traffic") or {}).get("candidate") or {}
        with self.lock:
            self.status[name] = status
            bad = self.candidates.get(name)
            if bad is None:
                return
            if name not in self.breached and candidate.get("version") == bad and candidate.get("weight", 0) > 0:
                self.breached[name] = now
                with self.gates.lock:
                    self.gates.breach[bad] = now
            elif name in self.breached and name not in self.back and not candidate:
                self.back[name] = now

    def count(self, phase: str, stable: str | None = None) -> int:
        with self.lock:
            return sum(
                1
                for s in self.status.values()
                if s.get("phase") == phase and (stable is None or s.get("stableVersion") == stable)
            )

    def count_promoted_bad(self) -> int:
        """Rollouts that made their breaching candidate stable: must stay 0."""
        with self.lock:
            return sum(
                1
                for name, s in self.status.items()
                if s.get("phase") == "Healthy" and s.get("stableVersion") == self.candidates.get(name)
            )

    def close(self) -> None:
        self._stop.set()


APPLY_THREADS = 8  # kubectl applies a List one object at a time: 1,000 took over 300 s on a loaded testbed


def apply_all(api: KubeApi, docs: list[dict]) -> None:
    """Server-side apply of every ModelRollout, a few at a time, as the benchmark's own field manager."""
    with ThreadPoolExecutor(max_workers=APPLY_THREADS, thread_name_prefix="bench-apply") as pool:
        list(pool.map(lambda doc: api.apply(MODEL_ROLLOUTS, doc), docs))


def compute_quantile(values: list[float], q: float) -> float | None:
    """The q-quantile (0 < q < 1), interpolated between the closest ranks; None without values."""
    if len(values) < 2:
        return values[0] if values else None
    return round(statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1], 2)


class Phase:
    """Names what the run is doing, so a time-limit line can say where it stopped."""

    current = "starting"

    @classmethod
    def enter(cls, n: int, what: str) -> None:
        cls.current = f"{n} rollouts: {what}"
        print(f"[{datetime.now(UTC):%H:%M:%S}] {cls.current}", flush=True)


def run_scale(cluster, api_client: Any, api: KubeApi, n: int, tmp: Path, r: dict) -> None:
    """Fills `r` phase by phase, so a run stopped by the time limit keeps what it measured."""
    ns = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", ns)
    gates = Gates()
    names = [f"r{i:04d}" for i in range(n)]
    steps = n * STEPS_PER_ROLLOUT
    r.update(rollouts=n, steps_per_rollout=STEPS_PER_ROLLOUT, analysis_interval_s=ANALYSIS_INTERVAL_S)
    with StubPrometheus() as prom:
        prom.responder = gates.answer
        op = OperatorProcess(cluster, ns, prom.url, tmp, tick=1.0)
        # The harness logs at debug for tests; at scale kopf's per-tick debug lines would be most of the CPU.
        op.args = [a if not a.startswith("--log-level=") else "--log-level=info" for a in op.args]
        op.start()
        proc = op.proc
        assert proc is not None  # start() made it
        probe = ProcessProbe(proc.pid)
        rollouts = RolloutWatch(api_client, ns, gates)

        def exited() -> str | None:
            return (
                f"the operator exited ({proc.returncode}); log: {op.log_tail(5)}" if proc.poll() is not None else None
            )

        def wait_count(what: str, phase: str, stable: str) -> None:
            wait_for(lambda: rollouts.count(phase, stable) == n, what, timeout=24 * 3600, every=1.0, gone=exited)

        def api_calls() -> Counter:
            return Counter(fetch_metric_samples(op.port, "modelrollout_api_calls_total"))

        def peaks() -> None:
            r.update(rss_mib_peak=round(probe.peak_rss_mib(), 1), threads_peak=probe.max_threads)

        try:
            Phase.enter(n, "operator starting")
            wait_for(lambda: is_operator_ready(op.port), "operator /readyz", timeout=60, gone=exited)
            rss_idle, cpu0, calls0 = probe.rss_mib(), probe.cpu_s(), api_calls()
            r.update(rss_mib_idle=round(rss_idle, 1))
            Phase.enter(n, "creating (v1)")
            started = time.monotonic()
            apply_all(api, [manifest(name, ns, "v1") for name in names])
            wait_count(f"{n} rollouts Healthy on v1", "Healthy", "v1")
            cpu1, calls1 = probe.cpu_s(), api_calls()
            r.update(
                time_to_all_healthy_s=round(time.monotonic() - started, 1),
                rss_mib_all_healthy=round(probe.rss_mib(), 1),
                cpu_s_creating=round(cpu1 - cpu0, 1),
                cpu_s_per_rollout_created=round((cpu1 - cpu0) / n, 4),
                api_calls_creating=int(sum((calls1 - calls0).values())),
            )
            peaks()
            Phase.enter(n, f"idle for {IDLE_WINDOW_S:g} s")
            time.sleep(IDLE_WINDOW_S)
            cpu2, calls2 = probe.cpu_s(), api_calls()
            r.update(
                cpu_s_per_s_idle=round((cpu2 - cpu1) / IDLE_WINDOW_S, 3),
                api_calls_idle_per_rollout_minute=round(sum((calls2 - calls1).values()) / n / (IDLE_WINDOW_S / 60), 3),
            )
            Phase.enter(n, "breach: every candidate fails its analysis")
            with rollouts.lock:
                rollouts.candidates = {name: f"bad-{name[1:]}" for name in names}
            interval = f"{ANALYSIS_INTERVAL_S:g}s"
            started = time.monotonic()
            apply_all(api, [manifest(name, ns, rollouts.candidates[name], interval, 1) for name in names])
            wait_for(
                lambda: rollouts.count("RolledBack", "v1") + rollouts.count_promoted_bad() == n,
                f"{n} rollouts rolled back to v1 (or promoted despite the breach)",
                timeout=24 * 3600,
                every=1.0,
                gone=exited,
            )
            r.update(
                time_to_all_rolled_back_s=round(time.monotonic() - started, 1),
                cpu_s_rollback_phase=round(probe.cpu_s() - cpu2, 1),
                rss_mib_after_rollbacks=round(probe.rss_mib(), 1),
            )
            peaks()
            cpu3, calls3 = probe.cpu_s(), api_calls()
            Phase.enter(n, "canary v1 -> v2")
            started = time.monotonic()
            apply_all(api, [manifest(name, ns, "v2") for name in names])
            wait_count(f"{n} rollouts promoted to v2", "Healthy", "v2")
            cpu4, calls4 = probe.cpu_s(), api_calls()
            rollout_calls = calls4 - calls3
            r.update(
                time_to_all_promoted_s=round(time.monotonic() - started, 1),
                rss_mib_after_rollouts=round(probe.rss_mib(), 1),
                cpu_s_rollout=round(cpu4 - cpu3, 1),
                cpu_s_per_rollout_step=round((cpu4 - cpu3) / steps, 4),
                api_calls_during_rollout=int(sum(rollout_calls.values())),
                api_calls_per_rollout_step=round(sum(rollout_calls.values()) / steps, 2),
                api_calls_per_rollout_step_by_call={
                    k: round(v / steps, 3) for k, v in sorted(rollout_calls.items(), key=lambda kv: -kv[1])
                },
            )
            peaks()
        finally:
            with rollouts.lock:  # also what a stopped breach phase saw so far
                latencies = sorted(rollouts.back[k] - rollouts.breached[k] for k in rollouts.back)
                if rollouts.candidates:
                    r.update(
                        breach_samples=len(latencies),
                        breach_not_seen_back_on_stable=n - len(rollouts.back),
                        breach_to_stable_p50_s=compute_quantile(latencies, 0.5),
                        breach_to_stable_p99_s=compute_quantile(latencies, 0.99),
                        breach_to_stable_max_s=round(latencies[-1], 2) if latencies else None,
                    )
            r["promoted_despite_breach"] = rollouts.count_promoted_bad()
            r["prometheus_queries"] = gates.queries
            if proc.poll() is None:
                peaks()
            Phase.enter(n, "cleaning up")
            rollouts.close()
            probe.close()
            remove_rollouts(cluster, api, ns, running=proc.poll() is None)
            op.stop()
            kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)


def remove_rollouts(cluster, api: KubeApi, ns: str, running: bool, wait_s: float = 300.0) -> None:
    """Deletes every ModelRollout; the operator (if running) releases its finalizers, and any left
    after `wait_s` are stripped through the API (one kubectl per object is minutes at 1,000)."""
    kubectl(cluster, "delete", "modelrollouts", "--all", "-n", ns, "--wait=false", check=False)
    deadline = time.monotonic() + (wait_s if running else 0)
    while True:
        left = api.request("GET", MODEL_ROLLOUTS.path(ns))["items"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(2)
    for obj in left:
        api.patch(MODEL_ROLLOUTS, ns, obj["metadata"]["name"], {"metadata": {"finalizers": None}})


def is_operator_ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False


def compute_ratios(small: dict, large: dict) -> dict:
    """Growth from the smallest scale to the largest, per figure that should stay flat or bounded."""
    keys = (
        "rss_mib_peak",
        "threads_peak",
        "cpu_s_per_rollout_step",
        "cpu_s_per_s_idle",
        "api_calls_per_rollout_step",
        "breach_to_stable_p50_s",
        "breach_to_stable_p99_s",
    )
    return {
        "of": f"{large['rollouts']} vs {small['rollouts']} rollouts",
        **{k: round(large[k] / small[k], 2) if small.get(k) and large.get(k) is not None else None for k in keys},
    }


def describe(r: dict) -> str:
    """One summary line; a figure the run did not get to is n/a."""
    g = {k: r.get(k, "n/a") for k in DESCRIBED}
    return (
        f"operator: {g['rollouts']} rollouts, RSS peak {g['rss_mib_peak']} MiB, {g['threads_peak']} threads, "
        f"{g['cpu_s_per_rollout_step']} CPU-s and {g['api_calls_per_rollout_step']} API calls per rollout step, "
        f"idle {g['cpu_s_per_s_idle']} CPU-s/s, breach->stable p50 {g['breach_to_stable_p50_s']} s "
        f"p99 {g['breach_to_stable_p99_s']} s over {g['breach_samples']} (interval {ANALYSIS_INTERVAL_S:g} s)"
    )


DESCRIBED = (
    "rollouts",
    "rss_mib_peak",
    "threads_peak",
    "cpu_s_per_rollout_step",
    "api_calls_per_rollout_step",
    "cpu_s_per_s_idle",
    "breach_to_stable_p50_s",
    "breach_to_stable_p99_s",
    "breach_samples",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, nargs="+", default=[200, 1000], help="scales, run in this order")
    parser.add_argument("--time-limit", type=float, default=3000.0, help="seconds for the whole run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tmp = paths.default_layout().state_dir / "bench-operator"  # operator logs, beside the testbed's own
    tmp.mkdir(parents=True, exist_ok=True)
    cluster = connect_testbed()  # never (re)starts a testbed someone else may be using
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api = KubeApi(api_client, field_manager="bench-operator")  # one per client: it hooks the client's pool

    def hit(*_: Any) -> None:
        raise TimeLimitHit(Phase.current)

    signal.signal(signal.SIGALRM, hit)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    started, results = STARTED, list[dict[str, Any]]()
    result: dict[str, Any] = {
        "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "load_average_at_start": os.getloadavg(),
    }
    try:
        for n in args.rollouts:
            results.append({})
            try:
                run_scale(cluster, api_client, api, n, tmp, results[-1])
            finally:
                write_results(args.output, result, results)  # a crash or the time limit keeps what was measured
            print(describe(results[-1]), flush=True)
    except TimeLimitHit as stop:
        results[-1]["stopped_by_time_limit_during"] = str(stop)
        print(describe(results[-1]) + " (stopped by the time limit)", flush=True)
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(
            f"operator: TIME LIMIT {args.time_limit:g} s hit after {time.monotonic() - started:.0f} s, "
            f"during '{stop}'; cleaned up; {len(results) - 1} of {len(args.rollouts)} scales finished "
            f"(the last one's figures so far are in the JSON)",
            flush=True,
        )
        result["time_limit_hit"] = {"limit_s": args.time_limit, "during": str(stop)}
    signal.setitimer(signal.ITIMER_REAL, 0)
    write_results(args.output, result, results)
    if len(results) > 1:
        ratio = result["ratio"]
        print("operator ratio " + ", ".join(f"{k} {v}" for k, v in ratio.items() if k != "of") + f" ({ratio['of']})")
    return 2 if "time_limit_hit" in result else 0


def write_results(path: Path, result: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    result.update(
        wall_s=round(time.monotonic() - STARTED), load_average_at_end=os.getloadavg(), target=TARGET, runs=runs
    )
    if len(runs) > 1:
        result["ratio"] = compute_ratios(runs[0], runs[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
