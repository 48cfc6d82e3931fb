"""`make demo` (python -m e2e.demo): the whole story on the local testbed - install the operator
with helm, deploy v1, canary v2 (promoted), v3 (rolled back), shadow v4 (fails on agreement).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from e2e import rollouts, scenario
from e2e.load import DEMO_MIX, LoadRunner
from e2e.timeline import compute_threshold, write_timeline_png

NAME = "speech"
NS = rollouts.DEMO_NAMESPACE
OUT = scenario.REPO / "demo-output"
TERMINAL_FAIL = ("Failed", "Invalid")


@dataclasses.dataclass
class Stage:
    """One act of the demo: what was applied, what it should end in, and what happened."""

    title: str
    manifest: dict[str, Any]
    expect: tuple[str, ...]
    t0: float = 0.0
    t1: float = 0.0
    outcome: str = ""
    message: str = ""
    weights: list[str] = dataclasses.field(default_factory=list)
    gates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    accuracy: dict[str, Any] = dataclasses.field(default_factory=dict)


def log(msg: str) -> None:
    print(msg, flush=True)


def format_gate(m: dict[str, Any]) -> str:
    value = "no data" if m.get("value") is None else f"{m['value']:.3f}"
    return f"{m['name']} {value} ({m.get('threshold') or '?'}) {m.get('verdict') or '-'}"


def format_snapshot(s: scenario.Snapshot) -> str:
    traffic = f"{s.stable or '-'} {s.stable_weight}%"
    if s.candidate:
        traffic += f" / {s.candidate} {s.candidate_weight}%"
    if s.mirror:
        traffic += f" (mirror {s.mirror_percent}% -> {s.mirror})"
    gates = "; ".join(format_gate(m) for m in s.metrics if m.get("verdict"))
    return f"  [{s.t:6.1f}s] {s.phase:<12} {s.step or '':<26} {traffic}" + (f"\n{'':12}gates: {gates}" if gates else "")


def compute_stages() -> list[Stage]:
    return [
        Stage(
            "v2: canary 20% -> 50% -> promote (better on young voices and noise)",
            rollouts.compute_canary(NAME, "v2"),
            ("Healthy",),
        ),
        Stage(
            "v3: canary of a broken training run (should roll back on its own)",
            rollouts.compute_canary(NAME, "v3"),
            ("RolledBack",),
        ),
        Stage(
            "v4: shadow against v2 - confident but wrong (only agreement catches it)",
            rollouts.compute_shadow(NAME, "v4"),
            ("RolledBack", "Stopped"),
        ),
    ]


def run_stage(
    cluster: scenario.Cluster, api, stage: Stage, rec: scenario.StatusRecorder, load: LoadRunner, timeout_s: float
) -> None:
    log(f"\n== {stage.title}")
    stage.t0, load_t0 = rec.elapsed(), load.elapsed()
    scenario.apply_manifest(cluster, stage.manifest)
    generation = scenario.fetch_rollout(api, NS, NAME)["metadata"]["generation"]
    version = stage.manifest["spec"]["model"]["version"]
    obj = scenario.wait_for_rollout(
        api,
        NS,
        NAME,
        scenario.is_settled(version, generation),
        f"the end of '{stage.title}'",
        timeout_s,
        fail_on=TERMINAL_FAIL,
    )
    stage.t1 = rec.elapsed()
    status = obj["status"]
    stage.outcome, stage.message = status.get("phase", ""), status.get("message", "")
    stage.gates = list((status.get("analysis") or {}).get("metrics") or [])
    seen = [s for s in rec.history() if stage.t0 <= s.t <= stage.t1 + 1]
    stage.weights = _distinct([_weights_label(s) for s in seen])
    stage.accuracy = load.compute_totals(since=load_t0, until=load.elapsed() + 1)
    mark = "as expected" if stage.outcome in stage.expect else f"EXPECTED {'/'.join(stage.expect)}"
    log(f"-> {stage.outcome} after {stage.t1 - stage.t0:.0f}s ({mark}): {stage.message}")


def _weights_label(s: scenario.Snapshot) -> str:
    if s.mirror:
        return f"{s.stable} {s.stable_weight}% + mirror {s.mirror_percent}% -> {s.mirror}"
    if s.candidate:
        return f"{s.stable} {s.stable_weight}% / {s.candidate} {s.candidate_weight}%"
    return f"{s.stable} {s.stable_weight}%"


def _distinct(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


def print_summary(stages: list[Stage], load: LoadRunner, png: Path) -> None:
    log(
        "\n================ summary (demo intervals: analysis every "
        f"{rollouts.DEMO_ANALYSIS_INTERVAL}, window {rollouts.DEMO_ANALYSIS_WINDOW}) ================"
    )
    for st in stages:
        log(f"\n{st.title}\n  outcome: {st.outcome} in {st.t1 - st.t0:.0f}s - {st.message}")
        log("  traffic: " + "  ->  ".join(st.weights))
        for m in st.gates:
            bound = compute_threshold(m)
            bound_txt = "" if bound is None else f" (bound {bound:.3f})"
            log(f"  gate {format_gate(m)}{bound_txt}, samples {m.get('samples')}")
        for version, t in sorted(st.accuracy.items()):
            if version == "unknown":  # the load generator's bucket for requests nobody answered
                log(f"  FAILED (no answer): {t['errors']} requests")
                continue
            acc = "-" if t["accuracy"] is None else f"{t['accuracy'] * 100:.1f}%"
            log(f"  answered by {version}: {t['requests']} requests, {t['errors']} errors, accuracy {acc}")
    log("\naccuracy per version over the whole demo (load generator ground truth):")
    for version, t in sorted(load.compute_totals().items()):
        acc = "-" if t["accuracy"] is None else f"{t['accuracy'] * 100:.1f}%"
        log(f"  {version}: {acc} of {t['requests'] - t['errors']} answered requests")
    log(f"\ntimeline: {png}")


def print_next_steps(cluster: scenario.Cluster) -> None:
    kc = f"KUBECONFIG={cluster.kubeconfig}"
    log(f"""
The cluster is still running. Inspect it with:
  export {kc} PATH={cluster.kubectl.parent}:{scenario.REPO / ".venv/bin"}:$PATH
  kubectl get mro -n {NS}
  kubectl describe modelrollout {NAME} -n {NS}
  kubectl modelrollout -n {NS} status {NAME}
  Prometheus: {cluster.prometheus_url}
Stop it with: make cluster-down""")


def write_outputs(stages: list[Stage], rec: scenario.StatusRecorder, load: LoadRunner) -> Path:
    OUT.mkdir(exist_ok=True)
    snaps = rec.history()
    (OUT / "snapshots.json").write_text(json.dumps([dataclasses.asdict(s) for s in snaps], indent=1))
    summary = {
        "stages": [{k: v for k, v in dataclasses.asdict(s).items() if k != "manifest"} for s in stages],
        "accuracy": load.compute_totals(),
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return write_timeline_png(snaps, OUT / "timeline.png")


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    cluster = scenario.ensure_testbed(start=True, log=log)
    log(f"installing the operator with helm ({scenario.CHART.relative_to(scenario.REPO)}) ...")
    # Namespaced, as the chart installs by default: the operator's rules exist only in NS (which
    # must exist first: the chart puts a Role there).
    scenario.ensure_namespace(cluster, NS)
    scenario.ensure_operator(
        cluster, {"operator": {"prometheusUrl": cluster.prometheus_url, "tickInterval": 0.5, "watchNamespaces": [NS]}}
    )
    api = cluster.api()
    delete_previous_run(cluster, api)
    log(f"\n== v1: first version of {rollouts.MODEL_NAME} (trained on male voices, clean audio)")
    scenario.apply_manifest(cluster, rollouts.compute_canary(NAME, "v1"))
    scenario.wait_for_rollout(
        api, NS, NAME, scenario.is_phase("Healthy"), "v1 Healthy", args.timeout, fail_on=TERMINAL_FAIL
    )
    log(f"-> v1 Healthy, serving 100%; starting the load generator ({args.rate:g} req/s, slice weights {DEMO_MIX})")
    stages = compute_stages()[: 3 if args.shadow else 2]
    resolver = _front_door(api)
    with (
        scenario.StatusRecorder(api, NS, NAME, on_change=_printer()) as rec,
        LoadRunner(resolver, rate=args.rate) as load,
    ):
        time.sleep(args.warmup)
        for stage in stages:
            run_stage(cluster, api, stage, rec, load, args.timeout)
    png = write_outputs(stages, rec, load)
    print_summary(stages, load, png)
    log(f"\ndemo finished in {time.monotonic() - started:.0f}s")
    print_next_steps(cluster)
    return 0 if all(s.outcome in s.expect for s in stages) else 1


def delete_previous_run(cluster: scenario.Cluster, api) -> None:
    """A rerun starts from scratch: remove the last run's ModelRollout and wait for its workloads
    (owned by it) to be garbage-collected."""
    proc = scenario.run_tool(
        cluster,
        cluster.kubectl,
        "delete",
        "modelrollout",
        NAME,
        "-n",
        NS,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    )
    if proc.stdout.strip():
        log(f"removed the previous demo run ({proc.stdout.strip()}); waiting for its pods to go")
    deadline = time.monotonic() + 120
    while scenario.fetch_ready_addresses(api, NS, NAME) or _has_workloads(api):
        if time.monotonic() > deadline:
            raise scenario.ScenarioError(f"the previous demo's workloads in {NS} did not go away")
        time.sleep(1)


def _has_workloads(api) -> bool:
    return bool(
        client.AppsV1Api(api).list_namespaced_deployment(NS, label_selector=f"modelrollout.dev/rollout={NAME}").items
    )


def _front_door(api) -> Callable[[], str | None]:
    def resolve() -> str | None:
        addresses = scenario.fetch_ready_addresses(api, NS, NAME)
        return f"http://{addresses[0]}" if addresses else None

    return resolve


def _printer() -> Callable[[scenario.Snapshot], None]:
    return lambda snap: log(format_snapshot(snap))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="load generator requests/second")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds allowed per stage")
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds of v1-only traffic before v2 (gives relative gates a baseline)",
    )
    parser.add_argument("--no-shadow", dest="shadow", action="store_false", help="skip the shadow v4 stage")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 200:
        parser.error(f"--rate: expected 0 < req/s <= 200, got {args.rate:g}")
    try:
        return run_demo(args)
    except scenario.ScenarioError as exc:
        log(f"\ndemo stopped: {exc}\nThe cluster is left running for inspection; stop it with make cluster-down.")
        return 1


if __name__ == "__main__":
    sys.exit(main())
