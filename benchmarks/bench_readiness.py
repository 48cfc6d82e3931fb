"""Readiness benchmark on the testbed: seconds from the candidate Deployment turning Ready to the first traffic step.

Run: `python -m benchmarks.bench_readiness [--runs 6] [--label after]` with a testbed up (taken from
the environment, as bench_operator does). Per run: a ModelRollout becomes Healthy on v1, then moves
to v2; this script's own watches note when the v2 Deployment is first Ready (readyReplicas equal
to spec.replicas, observedGeneration current) and when status.traffic first gives v2 a weight
above 0. By default pods use unmapped images (kwok simulates them Ready within about a second);
`--pods real` runs the testbed's model-server and router processes (the builtin model), whose
readiness takes longer than the operator's follow-up ticks.
Merges its figures under `--label` into benchmarks/results/readiness.json; prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from kubernetes import client, config, watch

from benchmarks.bench_operator import is_operator_ready
from tests.support.operator_harness import CRD, OperatorProcess, connect_testbed, delete_rollouts, kubectl
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "results" / "readiness.json"
GROUP, VERSION, PLURAL = "modelrollout.dev", "v1alpha1", "modelrollouts"
STEPS = [{"setWeight": 10}, {"pause": {"duration": "1h"}}]  # only the first step is measured
RUN_TIMEOUT_S = 120.0  # per phase of one run
WATCH_WINDOW_S = 30  # each watch request; re-listed after (first sightings are kept)


def manifest(name: str, ns: str, version: str, real_pods: bool) -> dict:
    spec = {
        "model": {"name": "speech-commands", "version": version},
        "server": {"replicas": 1, "image": "bench/simulated-model-server:1"},
        "strategy": {"canary": {"steps": STEPS}},
        "trafficRouting": {"router": {"image": "bench/simulated-router:1"}},
        "progressDeadline": "10m",
    }
    if real_pods:  # the operator's default images, which the testbed maps to local processes
        spec.update(
            model={"name": "speech-commands", "version": version, "uri": "builtin:v1"},
            server={"replicas": 1},
            trafficRouting={"router": {}},
        )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def is_deployment_ready(dep) -> bool:
    """Ready as the brief of this benchmark defines it: every desired replica Ready, current generation."""
    status = dep.status
    return (
        status is not None
        and (status.observed_generation or 0) >= (dep.metadata.generation or 0)
        and (status.ready_replicas or 0) == (dep.spec.replicas or 0) > 0
    )


class Observer:
    """Two watches on the namespace; first monotonic time each fact was seen, keyed by rollout."""

    def __init__(self, api_client: client.ApiClient, ns: str) -> None:
        self.apps, self.custom = client.AppsV1Api(api_client), client.CustomObjectsApi(api_client)
        self.ns = ns
        self.ready_at: dict[tuple[str, str], float] = {}  # (rollout, version) -> first seen Ready
        self.step_at: dict[tuple[str, str], float] = {}  # (rollout, candidate version) -> weight > 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(f,), daemon=True)
            for f in (self._watch_deployments, self._watch_rollouts)
        ]

    def start(self) -> Observer:
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=WATCH_WINDOW_S + 5)

    def _loop(self, body) -> None:
        while not self.stop.is_set():
            try:
                body()
            except Exception as err:  # noqa: BLE001 - a dropped watch is re-listed, firsts are kept
                print(f"readiness: watch restarted after {type(err).__name__}: {err}", file=sys.stderr)
                time.sleep(0.5)

    def _note(self, table: dict, key: tuple[str, str]) -> None:
        now = time.monotonic()
        with self.lock:
            table.setdefault(key, now)

    def _watch_deployments(self) -> None:
        for event in watch.Watch().stream(
            self.apps.list_namespaced_deployment,
            self.ns,
            label_selector="app.kubernetes.io/name=model-server",
            timeout_seconds=WATCH_WINDOW_S,
        ):
            dep = event["object"]
            labels = dep.metadata.labels or {}
            if is_deployment_ready(dep):
                self._note(
                    self.ready_at,
                    (labels.get("modelrollout.dev/rollout", ""), labels.get("modelrollout.dev/version", "")),
                )
            if self.stop.is_set():
                return

    def _watch_rollouts(self) -> None:
        for event in watch.Watch().stream(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, PLURAL, timeout_seconds=WATCH_WINDOW_S
        ):
            obj = event["object"]
            candidate = ((obj.get("status") or {}).get("traffic") or {}).get("candidate") or {}
            if candidate.get("weight", 0) > 0:
                self._note(self.step_at, (obj["metadata"]["name"], candidate.get("version", "")))
            if self.stop.is_set():
                return

    def wait(self, table: dict, key: tuple[str, str], what: str) -> float:
        seen = wait_for(lambda: self._get(table, key), what, timeout=RUN_TIMEOUT_S, every=0.05)
        assert seen is not None  # wait_for returns only a truthy value
        return seen

    def _get(self, table: dict, key: tuple[str, str]) -> float | None:
        with self.lock:
            return table.get(key)


def fetch_phase(custom: client.CustomObjectsApi, ns: str, name: str) -> tuple[str | None, str | None]:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    if not isinstance(obj, dict):
        raise RuntimeError(f"ModelRollout {ns}/{name}: expected a JSON object, got {type(obj).__name__}")
    status = obj.get("status") or {}
    return status.get("phase"), status.get("stableVersion")


def measure_once(cluster, observer: Observer, ns: str, name: str, real_pods: bool) -> dict:
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(manifest(name, ns, "v1", real_pods)))
    wait_for(
        lambda: fetch_phase(observer.custom, ns, name) == ("Healthy", "v1"),
        f"{name} Healthy on v1",
        timeout=RUN_TIMEOUT_S,
    )
    applied = time.monotonic()
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(manifest(name, ns, "v2", real_pods)))
    step = observer.wait(observer.step_at, (name, "v2"), f"{name}: v2 gets traffic")
    ready = observer.wait(observer.ready_at, (name, "v2"), f"{name}: v2 Deployment Ready")
    return {
        "ready_to_step_s": round(step - ready, 3),
        "apply_to_ready_s": round(ready - applied, 3),
        "apply_to_step_s": round(step - applied, 3),
    }


def run(runs: int, tick: float, tmp: Path, budget_s: float, real_pods: bool) -> dict:
    cluster = connect_testbed()  # never (re)starts a testbed someone else may be using
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    ns = f"bench-ready-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", ns)
    # No analysis in these rollouts: Prometheus is never asked; the address only has to be valid.
    op = OperatorProcess(cluster, ns, "http://127.0.0.1:9", tmp, tick=tick)
    op.args = [a for a in op.args if a != "--log-level=debug"] + ["--log-level=info"]
    observer = Observer(api_client, ns).start()
    samples: list[dict] = []
    calls: dict[str, int] = {}
    started = time.monotonic()
    try:
        op.start()
        wait_for(lambda: is_operator_ready(op.port), "operator /readyz", timeout=60)
        for i in range(runs):
            if time.monotonic() - started > budget_s:
                print(f"readiness: time budget {budget_s:.0f}s spent after {i} runs", file=sys.stderr)
                break
            samples.append(measure_once(cluster, observer, ns, f"ready-{i}", real_pods))
        calls = fetch_api_calls(op.port)  # the whole session: every run's v1 and v2
    finally:
        observer.close()
        delete_rollouts(cluster, ns, operator_running=op.proc is not None and op.proc.poll() is None)
        op.stop()
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)
    latencies = [s["ready_to_step_s"] for s in samples]
    return {
        "runs": len(samples),
        "tick_interval_s": tick,
        "pods": "real" if real_pods else "simulated",
        "ready_to_step_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "ready_to_step_max_s": max(latencies) if latencies else None,
        "api_calls_by_verb": calls,
        "samples": samples,
    }


def fetch_api_calls(port: int) -> dict[str, int]:
    """The operator's own Kubernetes API calls so far, by verb (modelrollout_api_calls_total)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    calls: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("modelrollout_api_calls_total{"):
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            calls[verb] = calls.get(verb, 0) + int(float(line.rsplit(" ", 1)[1]))
    return dict(sorted(calls.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--tick", type=float, default=1.0, help="--tick-interval of the operator (its default)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds; no new run starts after this")
    parser.add_argument("--pods", choices=("simulated", "real"), default="simulated")
    parser.add_argument("--label", default="current", help="key of these figures in the results JSON")
    parser.add_argument(
        "--operator-src",
        type=Path,
        default=None,
        help="run the operator from this source root (e.g. an exported older tree's operator/)",
    )
    parser.add_argument("--note", default="", help="free text stored with the figures (e.g. the commit)")
    args = parser.parse_args(argv)
    if args.operator_src is not None:
        os.environ["PYTHONPATH"] = str(args.operator_src.resolve())  # ahead of the editable install
    tmp = Path(os.environ.get("MODELROLLOUT_TESTBED_DIR", REPO / ".cluster")) / "bench-readiness"
    tmp.mkdir(parents=True, exist_ok=True)
    result = run(args.runs, args.tick, tmp, args.budget, args.pods == "real") | (
        {"note": args.note} if args.note else {}
    )
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged[args.label] = result
    merged["measures"] = (
        "seconds from the candidate Deployment first seen Ready (watch) to status.traffic "
        "first giving the candidate weight > 0 (watch), canary, one replica per version"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    print(
        f"readiness ({args.label}): candidate Ready -> first traffic step median "
        f"{result['ready_to_step_median_s']} s, max {result['ready_to_step_max_s']} s over "
        f"{result['runs']} runs ({args.pods} pods, tick interval {args.tick:g} s)"
    )
    return 0 if result["runs"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
