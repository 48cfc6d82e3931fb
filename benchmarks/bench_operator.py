"""Operator benchmark on the testbed: N concurrent ModelRollouts on one process, and breach-to-rollback latency.

Run: `python -m benchmarks.bench_operator [--rollouts 200]` with the testbed up. Model-server and
router pods use unmapped images, so kwok simulates them Ready (no processes): this measures the
operator, not the data plane. Writes benchmarks/results/operator.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from kubernetes import config

from rollout_operator.adapters.kube import MODEL_ROLLOUTS, KubeApi
from tests.support.operator_harness import CRD, OperatorProcess, connect_testbed, delete_rollouts, kubectl
from tests.support.stub_prometheus import StubPrometheus, vector
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "results" / "operator.json"
STEPS = [{"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}]
VERSION_RE = re.compile(r'version="([^"]+)"')


class Gates:
    """Healthy everywhere except versions in `breach`, from the moment they are added."""

    def __init__(self) -> None:
        self.breach: dict[str, float] = {}  # version -> time the breach became visible
        self.lock = threading.Lock()

    def answer(self, query: str):
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


def fetch_metric_sum(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def fetch_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_phase(api: KubeApi, ns: str, phase: str, version: str) -> int:
    items = api.request("GET", MODEL_ROLLOUTS.path(ns))["items"]
    return sum(
        1
        for o in items
        if (o.get("status") or {}).get("phase") == phase and (o.get("status") or {}).get("stableVersion") == version
    )


def apply_all(cluster, ns: str, n: int, version: str) -> None:
    docs = [json.dumps(manifest(f"r{i:03d}", ns, version)) for i in range(n)]
    kubectl(cluster, "apply", "-f", "-", stdin='{"apiVersion":"v1","kind":"List","items":[' + ",".join(docs) + "]}")


def fetch_status(api: KubeApi, ns: str, name: str) -> dict:
    """The ModelRollout's status ({} until the operator writes one); the rollout must exist."""
    obj = api.get(MODEL_ROLLOUTS, ns, name)
    if obj is None:
        raise RuntimeError(f"ModelRollout {ns}/{name} not found (deleted while the benchmark waited on it?)")
    return obj.get("status") or {}


def measure_rollback(cluster, api: KubeApi, ns: str, gates: Gates, name: str, interval_s: float) -> float:
    """Seconds from the breach becoming visible to status.traffic being all on stable."""
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(manifest(name, ns, "v1", f"{interval_s:g}s", 1)))
    wait_for(lambda: fetch_status(api, ns, name).get("phase") == "Healthy", f"{name} healthy", timeout=300)
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(manifest(name, ns, "v9", f"{interval_s:g}s", 1)))
    wait_for(
        lambda: (fetch_status(api, ns, name).get("traffic") or {}).get("candidate", {}).get("weight", 0) > 0,
        f"{name} canary on",
        timeout=300,
        every=0.05,
    )
    with gates.lock:
        gates.breach["v9"] = t0 = time.monotonic()
    wait_for(
        lambda: not (fetch_status(api, ns, name).get("traffic") or {}).get("candidate"),
        f"{name} back on stable",
        timeout=300,
        every=0.02,
    )
    latency = time.monotonic() - t0
    with gates.lock:
        gates.breach.pop("v9")
    return latency


def run(n: int, tmp: Path) -> dict:
    cluster = connect_testbed()  # never (re)starts a testbed someone else may be using
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    api = KubeApi(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", ns)
    gates = Gates()
    with StubPrometheus() as prom:
        prom.responder = gates.answer
        op = OperatorProcess(cluster, ns, prom.url, tmp, tick=1.0).start()
        proc = op.proc
        assert proc is not None  # start() made it
        try:
            wait_for(lambda: is_operator_ready(op.port), "operator /readyz", timeout=60)
            rss_idle = fetch_rss_mib(proc.pid)
            started = time.monotonic()
            apply_all(cluster, ns, n, "v1")
            wait_for(
                lambda: count_phase(api, ns, "Healthy", "v1") == n, f"{n} rollouts Healthy", timeout=900, every=1.0
            )
            settle_s = time.monotonic() - started
            calls0 = fetch_metric_sum(op.port, "modelrollout_api_calls_total")
            started = time.monotonic()
            apply_all(cluster, ns, n, "v2")
            wait_for(
                lambda: count_phase(api, ns, "Healthy", "v2") == n, f"{n} rollouts promoted", timeout=1800, every=1.0
            )
            rollout_s = time.monotonic() - started
            calls = fetch_metric_sum(op.port, "modelrollout_api_calls_total") - calls0
            rss_busy = fetch_rss_mib(proc.pid)
            latencies = [measure_rollback(cluster, api, ns, gates, f"breach-{i}", 5.0) for i in range(3)]
        finally:
            delete_rollouts(cluster, ns, operator_running=proc.poll() is None)
            op.stop()
            kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)
    steps = len(STEPS) + 1  # the canary steps plus the promotion
    return {
        "rollouts": n,
        "steps_per_rollout": steps,
        "rss_mib_idle": round(rss_idle, 1),
        "rss_mib_after_rollouts": round(rss_busy, 1),
        "time_to_all_healthy_s": round(settle_s, 1),
        "time_to_all_promoted_s": round(rollout_s, 1),
        "api_calls_during_rollout": int(calls),
        "api_calls_per_rollout_step": round(calls / (n * steps), 2),
        "analysis_interval_s": 5.0,
        "breach_to_rollback_s": [round(x, 2) for x in latencies],
        "breach_to_rollback_median_s": round(statistics.median(latencies), 2),
        "target": "breach to traffic on stable <= analysis interval + 2 s; bounded RSS",
    }


def is_operator_ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The testbed's Service range is a /24: each rollout holds 3 ClusterIPs mid-rollout (router, two
    # versions), so about 80 rollouts fit there; a real cluster's range takes the design target of 200.
    parser.add_argument("--rollouts", type=int, default=200)
    args = parser.parse_args(argv)
    tmp = REPO / ".cluster" / "bench-operator"
    tmp.mkdir(parents=True, exist_ok=True)
    result = run(args.rollouts, tmp)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"operator: {result['rollouts']} rollouts, RSS {result['rss_mib_after_rollouts']} MiB, "
        f"{result['api_calls_per_rollout_step']} API calls per rollout step, breach->rollback median "
        f"{result['breach_to_rollback_median_s']} s (interval {result['analysis_interval_s']:g} s + 2 s target)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
