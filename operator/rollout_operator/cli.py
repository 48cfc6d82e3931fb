"""`kubectl-modelrollout` (the kubectl plugin): status, history and user intents for a ModelRollout.

Every intent is only a patch on the ModelRollout (spec.paused, or a bump of a spec.requests counter
plus `by`); the operator acts on it once. Nothing here talks to the operator process.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .adapters.kube import EVENTS, MODEL_ROLLOUTS, KubeApi, KubeError

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
COUNTERS = {"promote": "promote", "promote-full": "promoteFull", "abort": "abort", "retry": "retry"}
CONFLICT_RETRIES = 5


class CliError(RuntimeError):
    """A problem the user can fix; printed without a traceback, exit code 1."""


@dataclass(frozen=True)
class Identity:
    namespace: str
    user: str  # recorded as spec.requests.by


def compute_intent_patch(obj: Mapping[str, Any], intent: str, by: str) -> dict[str, Any]:
    """The merge patch for one intent, built from the object as read (counters bump by one).

    The object's resourceVersion rides along, so two people bumping at once cannot both read N
    and both write N+1: the API server refuses the second, which re-reads and retries.
    """
    rv = obj["metadata"]["resourceVersion"]
    spec = obj.get("spec") or {}
    if intent in ("pause", "resume"):
        return {"metadata": {"resourceVersion": rv}, "spec": {"paused": intent == "pause", "requests": {"by": by}}}
    if intent not in COUNTERS:
        raise CliError(f"unknown intent {intent!r}; expected one of pause, resume, {', '.join(COUNTERS)}")
    key = COUNTERS[intent]
    current = (spec.get("requests") or {}).get(key, 0)
    if not isinstance(current, int) or isinstance(current, bool) or current < 0:
        raise CliError(
            f"spec.requests.{key} is {current!r}; expected a non-negative integer (fix the manifest, then retry)"
        )
    return {"metadata": {"resourceVersion": rv}, "spec": {"requests": {key: current + 1, "by": by}}}


def fetch_rollout(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    obj = api.get(MODEL_ROLLOUTS, namespace, name)
    if obj is None:
        raise CliError(
            f'modelrollout "{name}" not found in namespace "{namespace}" '
            f"(list them with: kubectl get modelrollouts -n {namespace})"
        )
    return obj


def patch_intent(api: KubeApi, namespace: str, name: str, intent: str, by: str) -> dict[str, Any]:
    """Reads, builds the patch, writes it; re-reads on a conflict."""
    for _ in range(CONFLICT_RETRIES):
        obj = fetch_rollout(api, namespace, name)
        try:
            return api.patch(MODEL_ROLLOUTS, namespace, name, compute_intent_patch(obj, intent, by))
        except KubeError as err:
            if not err.conflict:
                raise CliError(f"could not patch modelrollout {namespace}/{name}: {err.message}") from err
    raise CliError(f"modelrollout {namespace}/{name} kept changing; try again")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def compute_traffic_text(traffic: Mapping[str, Any]) -> str:
    parts = []
    for role in ("stable", "candidate"):
        entry = traffic.get(role)
        if entry:
            parts.append(f"{role} {entry.get('version')} {entry.get('weight')}%")
    mirror = traffic.get("mirror")
    if mirror:
        parts.append(f"mirror {mirror.get('version')} {mirror.get('percent')}% (copies)")
    return ", ".join(parts) or "none yet"


def compute_status_text(obj: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str:
    """What `status` prints: phase, step, weights, each gate's value vs threshold, recent events."""
    meta, status = obj["metadata"], obj.get("status") or {}
    lines = [
        f"ModelRollout {meta['namespace']}/{meta['name']}",
        f"  Phase:     {status.get('phase') or 'Pending (not reconciled yet)'}"
        + (f"  ({status['reason']})" if status.get("reason") else ""),
        f"  Message:   {status.get('message') or '-'}",
        f"  Strategy:  {status.get('strategy') or '-'}   Step: {status.get('currentStep') or '-'}",
        f"  Stable:    {status.get('stableVersion') or '-'}   Candidate: {status.get('candidateVersion') or '-'}",
        f"  Traffic:   {compute_traffic_text(status.get('traffic') or {})}",
    ]
    if status.get("pausedBy"):
        lines.append(f"  Waiting for: {status['pausedBy']}")
    analysis = status.get("analysis") or {}
    gates = analysis.get("metrics") or []
    if gates:
        lines.append(
            f"  Analysis:  last verdict {analysis.get('lastVerdict') or '-'}, "
            f"next check {status.get('nextCheckAt') or '-'}"
        )
        lines.append(f"    {'GATE':<20} {'VALUE':>10} {'STABLE':>10} {'THRESHOLD':<22} {'SAMPLES':>7}  VERDICT")
        for g in gates:
            lines.append(
                f"    {g.get('name', ''):<20} {_fmt(g.get('value')):>10} {_fmt(g.get('stableValue')):>10} "
                f"{g.get('threshold') or '-':<22} {_fmt(g.get('samples')):>7}  {g.get('verdict') or '-'}"
            )
            lines.extend(compute_slice_lines(g))
        lines.extend(compute_evidence_lines(gates))
    lines.extend(compute_monitoring_lines(status))
    if events:
        lines.append("  Recent events:")
        for e in events:
            lines.append(
                f"    {e.get('lastTimestamp') or e.get('eventTime') or '':<20} {e.get('type', ''):<7} "
                f"{e.get('reason', ''):<18} {e.get('message', '')}"
            )
    return "\n".join(lines)


def compute_monitoring_lines(status: Mapping[str, Any]) -> list[str]:
    """spec.monitoring's Degraded condition and its gates on stable (nothing without it)."""
    monitoring = status.get("monitoring") or {}
    if not monitoring.get("version"):
        return []
    flag = monitoring.get("degraded")
    degraded = "Unknown" if not isinstance(flag, bool) else str(flag)
    lines = [
        f"  Degraded:  {degraded} ({monitoring.get('reason') or '-'}) {monitoring.get('message') or ''}".rstrip(),
        f"    {'MONITOR':<20} {'VALUE':>10} {'THRESHOLD':<22} {'SAMPLES':>7}  VERDICT  FAILING",
    ]
    for g in monitoring.get("metrics") or []:
        lines.append(
            f"    {g.get('name', ''):<20} {_fmt(g.get('value')):>10} {g.get('threshold') or '-':<22} "
            f"{_fmt(g.get('samples')):>7}  {g.get('verdict') or '-':<7}  {_fmt(g.get('failures'))}"
        )
    return lines


def compute_slice_lines(gate: Mapping[str, Any]) -> list[str]:
    """A per-slice gate: one row per slice under the gate (value, stable's, samples, verdict), the
    message of each slice that is not a pass."""
    slices = [s for s in gate.get("slices") or [] if isinstance(s, Mapping)]
    lines = []
    for s in slices:
        name = f"  [{s.get('name', '')}]"
        verdict = s.get("verdict") or "-"
        why = f"  {s.get('message')}" if verdict != "Pass" and s.get("message") else ""
        lines.append(
            f"    {name:<20} {_fmt(s.get('value')):>10} {_fmt(s.get('stableValue')):>10} "
            f"{'':<22} {_fmt(s.get('samples')):>7}  {verdict}{why}"
        )
    return lines


def compute_evidence_lines(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sequential mode: each gate's interval, and the samples and time a verdict still needs."""
    rows = [g for g in gates if g.get("lower") is not None or g.get("samplesNeeded") is not None]
    if not rows:
        return []
    lines = [f"    {'GATE':<20} {'INTERVAL':<23} {'STABLE N':>8} {'MORE NEEDED':>11}  TIME TO VERDICT"]
    for g in rows:
        interval = f"[{_fmt(g.get('lower'))}, {_fmt(g.get('upper'))}]" if g.get("lower") is not None else "-"
        needed = g.get("samplesNeeded")
        more = "decided" if needed == 0 else ("unknown" if needed is None else str(needed))
        lines.append(
            f"    {g.get('name', ''):<20} {interval:<23} {_fmt(g.get('stableSamples')):>8} "
            f"{more:>11}  {compute_wait_text(g.get('secondsToVerdict'), needed)}"
        )
    return lines


def compute_wait_text(seconds: Any, needed: Any) -> str:
    """ "~4m at the current request rate", "now", or "unknown" (no traffic or on the threshold)."""
    if needed == 0:
        return "now"
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "unknown"
    minutes = seconds / 60
    text = f"~{seconds:.0f}s" if seconds < 120 else (f"~{minutes:.0f}m" if minutes < 120 else f"~{minutes / 60:.1f}h")
    return f"{text} at the current request rate"


def compute_history_text(obj: Mapping[str, Any]) -> str:
    history = (obj.get("status") or {}).get("history") or []
    if not history:
        return "no finished rollouts yet"
    lines = [f"{'VERSION':<12} {'OUTCOME':<11} {'REASON':<20} {'FINISHED':<21} {'BY':<16} MESSAGE"]
    for h in reversed(history):  # newest first
        lines.append(
            f"{h.get('version', ''):<12} {h.get('outcome', ''):<11} {h.get('reason', ''):<20} "
            f"{h.get('finishedAt') or '-':<21} {h.get('by') or '-':<16} {h.get('message', '')}"
        )
    return "\n".join(lines)


def fetch_events(api: KubeApi, namespace: str, name: str, limit: int = 8) -> list[dict[str, Any]]:
    items = api.request(
        "GET",
        EVENTS.path(namespace),
        query={"fieldSelector": f"involvedObject.kind=ModelRollout,involvedObject.name={name}"},
    )["items"]
    items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return items[-limit:]


# The operator's leader election Lease carries these labels (adapters/kube_lease.py).
LEADER_LEASE_SELECTOR = "app.kubernetes.io/name=modelrollout-operator,app.kubernetes.io/component=leader-election"


class _Requests(Protocol):
    """The part of KubeApi that reading the Lease needs (tests pass a fake with just this)."""

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None) -> dict: ...


def fetch_leader_text(api: _Requests, namespace: str) -> str:
    """Which operator replica leads, from its Lease: looked up cluster-wide, or in the rollout's
    namespace when the user may not list Leases everywhere."""
    items: list[dict[str, Any]] = []
    for path in ("/apis/coordination.k8s.io/v1/leases", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"):
        try:
            items = api.request("GET", path, query={"labelSelector": LEADER_LEASE_SELECTOR})["items"]
            break
        except KubeError as err:
            if err.status != 403:
                return f"  Operator:  leader unknown (reading its Lease failed: {err.message})"
    return compute_leader_text(items)


def compute_leader_text(leases: Sequence[Mapping[str, Any]]) -> str:
    if not leases:
        return "  Operator:  no leader Lease found (one replica without leader election, or no access)"
    parts = []
    for lease in leases:
        meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
        holder = spec.get("holderIdentity") or "nobody (released; a standby takes it)"
        parts.append(
            f"leader {holder}, renewed {spec.get('renewTime') or '-'} "
            f"(Lease {meta.get('namespace')}/{meta.get('name')})"
        )
    return "  Operator:  " + "; ".join(parts)


def _add_connection_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-n", "--namespace", default=default, help="namespace (default: the kubeconfig context's)")
    parser.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", default=default, help="kubeconfig context to use")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl modelrollout",
        description="Inspect and steer ModelRollouts. Intents are patches on the ModelRollout; "
        "the operator acts on each once and records who asked.",
    )
    _add_connection_flags(parser, default=None)
    # kubectl users write `-n ns` after the subcommand too; SUPPRESS keeps an earlier value.
    connection = argparse.ArgumentParser(add_help=False)
    _add_connection_flags(connection, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "status": "phase, step, weights, gates vs thresholds, recent events",
        "promote": "advance past the current pause/gate (--full: straight to 100%%)",
        "abort": "roll back to stable now (ends RolledBack, reason Aborted)",
        "retry": "start the last rolled-back version again",
        "pause": "hold the rollout where it is",
        "resume": "continue a paused rollout",
        "history": "past rollouts and their outcomes",
    }
    for command, text in helps.items():
        p = sub.add_parser(command, help=text, description=text, parents=[connection])
        p.add_argument("name", metavar="NAME", help="the ModelRollout's name")
        if command == "status":
            p.add_argument("-w", "--watch", action="store_true", help="redraw every --interval seconds")
            p.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
        if command == "promote":
            p.add_argument("--full", action="store_true", help="skip remaining steps: all traffic to the candidate")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not NAME_RE.match(args.name):
        build_parser().error(
            f"NAME {args.name!r} is not a valid object name "
            "(lowercase letters, digits, '-' and '.', starting and ending alphanumeric)"
        )
    if args.namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", args.namespace):
        build_parser().error(f"--namespace {args.namespace!r} is not a valid namespace name")
    if getattr(args, "interval", 2.0) <= 0:
        build_parser().error("--interval must be > 0 seconds")
    return args


def connect(args: argparse.Namespace) -> tuple[KubeApi, Identity]:
    """An API client and who we are, from the kubeconfig (or the in-cluster service account)."""
    from kubernetes import client, config

    # Read $KUBECONFIG now: the client library captures it at import time.
    path = args.kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        config.load_kube_config(config_file=path, context=args.context)
        contexts, active = config.list_kube_config_contexts(config_file=path)
        chosen = next((c for c in contexts if c["name"] == args.context), active) if args.context else active
        ctx = (chosen or {}).get("context", {})
        identity = Identity(
            args.namespace or ctx.get("namespace") or "default", ctx.get("user") or os.environ.get("USER", "unknown")
        )
    except config.ConfigException as err:
        if args.kubeconfig or args.context:
            raise CliError(f"cannot use kubeconfig: {err}") from err
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise CliError(f"no usable kubeconfig ({err}); set KUBECONFIG or pass --kubeconfig") from err
        identity = Identity(args.namespace or "default", "in-cluster:" + os.environ.get("HOSTNAME", "pod"))
    return KubeApi(client.ApiClient(), field_manager="kubectl-modelrollout"), identity


def run(
    args: argparse.Namespace,
    api: KubeApi,
    who: Identity,
    out: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    ns, name = who.namespace, args.name
    if args.command == "status":
        while True:
            obj = fetch_rollout(api, ns, name)
            out(compute_status_text(obj, fetch_events(api, ns, name)) + "\n" + fetch_leader_text(api, ns))
            if not args.watch:
                return 0
            sleep(args.interval)
            out(f"--- {datetime.now(UTC).strftime('%H:%M:%S')} ---")
    if args.command == "history":
        out(compute_history_text(fetch_rollout(api, ns, name)))
        return 0
    intent = "promote-full" if args.command == "promote" and args.full else args.command
    patch_intent(api, ns, name, intent, who.user)
    out(
        f"modelrollout.modelrollout.dev/{name} {intent} requested by {who.user} "
        "(the operator acts on it; follow with: kubectl modelrollout status -w " + name + ")"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        api, who = connect(args)
        return run(args, api, who, print)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KubeError as err:
        print(f"error: the API server said: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
