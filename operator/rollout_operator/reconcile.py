"""One reconcile tick of one ModelRollout: observe → plan_queries → decide → act → write status once.

Status is the only memory. Actions run in the order decide() gave them (each an idempotent
ensure), then the status diff is written with a resourceVersion precondition, then events go out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import metrics as m
from .adapters import Adapters, KubeError, Owner, ServerTemplate, TakeoverRefused
from .domain import (
    Action,
    Decision,
    DeleteVersion,
    EmitEvent,
    EnsurePreviewService,
    EnsureRouter,
    EnsureVersion,
    Measurement,
    Observations,
    QueryRequest,
    RemoveNetworkPolicies,
    RemovePreviewService,
    RolloutSpec,
    RolloutStatus,
    ScaleDownVersion,
    SetTraffic,
    SpecError,
    TrafficSplit,
    compute_metric_observations,
    decide,
    decide_invalid,
    parse_spec,
    plan_queries,
    status_from_dict,
    status_to_dict,
)
from .domain.notifications import Notification, compute_deliveries, compute_event_kind, compute_unknown_receivers
from .settings import Settings

log = logging.getLogger(__name__)
REMOVALS = (ScaleDownVersion, DeleteVersion)


@dataclass(frozen=True)
class TickOutcome:
    """What one tick did, for the caller's logs/metrics and for tests."""

    status: RolloutStatus
    written: bool  # the status diff was persisted
    conflict: bool  # the write was refused because the object changed; next tick retries
    requeue_after: float
    actions: tuple[Action, ...] = ()


@dataclass
class Schedule:
    """When each rollout next needs a full tick. A scheduling hint only, never a decision:
    losing it (restart) just means reconciling at once. Any change to the object resets it."""

    due: dict[str, tuple[str, float]] = field(default_factory=dict)  # uid → (resourceVersion, monotonic)
    # Rollouts whose workloads changed in a way that matters since their last tick started:
    # due at once whatever `due` says (the Deployment watch, handlers/workloads.py).
    woken: set[str] = field(default_factory=set)
    # uid → (resourceVersion our own status write replaced, monotonic deadline). A body still at
    # that version predates the write (kopf's index lags the watch by an event): deciding on it
    # again would only be refused (409) and re-read. The fresh body has another version, so it is
    # due at once; a wake stays pending for it. Bounded in time, in case that body never comes.
    superseded: dict[str, tuple[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def is_due(self, uid: str, resource_version: str, now_mono: float) -> bool:
        with self.lock:
            return self._is_due(uid, resource_version, now_mono)

    def claim(self, uid: str, resource_version: str, now_mono: float) -> bool:
        """is_due(), and if so consumes the wake-up: one that lands while this tick runs (after
        it observed the workloads) keeps the next tick due."""
        with self.lock:
            due = self._is_due(uid, resource_version, now_mono)
            if due:
                self.woken.discard(uid)
        return due

    def _is_due(self, uid: str, resource_version: str, now_mono: float) -> bool:
        old = self.superseded.get(uid)
        if old is not None:
            if old[0] == resource_version and now_mono < old[1]:
                return False
            del self.superseded[uid]
        entry = self.due.get(uid)
        return uid in self.woken or entry is None or entry[0] != resource_version or now_mono >= entry[1]

    def supersede(self, uid: str, resource_version: str, until_mono: float) -> None:
        """Our own status write replaced `resource_version`: ticks on a body still at it wait
        (until `until_mono` at most) for the body the watch delivers next."""
        with self.lock:
            self.superseded[uid] = (resource_version, until_mono)

    def wake(self, uid: str) -> None:
        with self.lock:
            self.woken.add(uid)

    def set(self, uid: str, resource_version: str, at_mono: float) -> None:
        with self.lock:
            self.due[uid] = (resource_version, at_mono)

    def forget(self, uid: str) -> None:
        with self.lock:
            self.due.pop(uid, None)
            self.woken.discard(uid)
            self.superseded.pop(uid, None)


def compute_status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch turning `old` into `new` (None removes a key; lists are replaced)."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if value is None:
            if before is not None:
                patch[key] = None
        elif isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = compute_status_patch(before, value)
            if sub:
                patch[key] = sub
        elif _drop_nones(value) != before:
            patch[key] = _drop_nones(value)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def _drop_nones(value: Any) -> Any:
    """A fresh subtree has no keys to remove; nulls inside it would only be noise."""
    if isinstance(value, Mapping):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def compute_server_template(spec: RolloutSpec, action: EnsureVersion) -> ServerTemplate:
    """The model-server pod inputs: the image and URI exactly as decided (the action), the
    vetted resources/env/args from the parsed spec."""
    return ServerTemplate(
        model_name=spec.model.name,
        model_uri=action.uri,
        image=action.image,
        resources=spec.server.resources,
        env=spec.server.env,
        args=spec.server.args,
    )


def fetch_observations(
    spec: RolloutSpec, status: RolloutStatus, adapters: Adapters, settings: Settings, generation: int, now: datetime
) -> Observations:
    """Workloads (one list call) and exactly the metric queries plan_queries() asks for."""
    workloads = adapters.workloads.fetch_workloads(spec.namespace, spec.name)
    requests = plan_queries(spec, status, now)
    address = (spec.analysis.prometheus_address if spec.analysis else None) or settings.prometheus_url
    if not requests:
        measurements: list[Measurement] = []
    elif not address:
        measurements = [
            Measurement.error(
                "no Prometheus address: set spec.analysis.prometheus.address or the operator's --prometheus-url"
            )
        ] * len(requests)
    else:
        # plan_queries asks only for analysis or monitoring rounds; either's interval bounds it.
        interval = spec.analysis.interval if spec.analysis is not None else None
        if spec.monitoring is not None:
            interval = min(interval or spec.monitoring.interval, spec.monitoring.interval)
        assert interval is not None
        measurements = fetch_round(adapters, address, requests, interval.total_seconds())
    return Observations(
        workloads=workloads,
        measurements=compute_metric_observations(list(zip(requests, measurements, strict=True))),
        generation=generation,
    )


# Queries of one check round in flight at once (each metric's value and sample count count as
# one here: the adapter runs those two together). More than a round of many gates needs, few
# enough that one rollout cannot open a flood of connections to Prometheus.
ROUND_CONCURRENCY = 8


def fetch_round(
    adapters: Adapters, address: str, requests: list[QueryRequest], round_seconds: float
) -> list[Measurement]:
    """One check round's measurements, in the order of `requests`. The queries run at the same
    time under one deadline: a Prometheus that never answers costs the round one query timeout
    (the adapter's, or the analysis interval if shorter: the next round is due then anyway), not
    one per query, so consecutiveErrorLimit rounds take about limit × interval."""
    deadline = time.monotonic() + round_seconds

    def run(request: QueryRequest) -> Measurement:
        return fetch_measurement(adapters, address, request, deadline - time.monotonic())

    if len(requests) == 1:
        return [run(requests[0])]
    workers = min(len(requests), ROUND_CONCURRENCY)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check-round") as pool:
        return list(pool.map(run, requests))


def fetch_measurement(
    adapters: Adapters, address: str, request: QueryRequest, timeout: float | None = None
) -> Measurement:
    """The provider's answer; whatever it raises is an error measurement too, counted against
    consecutiveErrorLimit, so decide() still runs (and the deadline and limits still fire)."""
    try:
        return adapters.metrics.fetch_measurement(address, request, timeout)
    except Exception as err:  # noqa: BLE001 - STYLE §6: failures are measurements
        log.warning("metrics provider raised for %s: %r", request.metric, err)
        return Measurement.error(f"metrics provider failed: {type(err).__name__}: {str(err)[:200]}")


# Where in the ModelRollout a field the API server rejected came from, per action and by
# the prefix of the rejected object's field (the Status body's details.causes[].field).
_CONTAINER = "spec.template.spec.containers[0]."
_REJECTED_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {
    EnsureVersion: (
        (_CONTAINER + "resources", "spec.server.resources"),
        (_CONTAINER + "env", "spec.server.env"),
        (_CONTAINER + "args", "spec.server.args"),
        (_CONTAINER + "image", "spec.server.image"),
        ("spec.replicas", "spec.server.replicas"),
        ("", "spec.server"),
    ),
    EnsureRouter: (("", "spec.trafficRouting.router"),),
    EnsurePreviewService: (("", "spec.strategy.blueGreen"),),
    SetTraffic: (("", "spec.trafficRouting"),),
}
_TAKEOVER_FIELDS: dict[type, str] = {EnsureVersion: "spec.model.version"}


def compute_rejection(action: Action, err: Exception) -> SpecError | None:
    """A SpecError naming the ModelRollout field when the API server refused what `action`
    sent (sending it again cannot succeed) or the object's name belongs to someone else."""
    if isinstance(err, TakeoverRefused):
        return SpecError(_TAKEOVER_FIELDS.get(type(action), "metadata.name"), str(err))
    if not (isinstance(err, KubeError) and err.invalid):
        return None
    cause = err.causes[0] if err.causes else ""
    field = next(
        (ours for prefix, ours in _REJECTED_FIELDS.get(type(action), (("", "spec"),)) if cause.startswith(prefix)),
        "spec",
    )
    return SpecError(field, f"rejected by the API server: {err.message}")


@dataclass(frozen=True)
class _Context:
    owner: Owner
    spec: RolloutSpec  # parsed and vetted; the raw spec never reaches the actions
    adapters: Adapters
    settings: Settings
    persisted: TrafficSplit  # status.traffic as read this tick: what the router routes to now


def execute_action(action: Action, ctx: _Context, new_traffic: TrafficSplit) -> None:
    """Runs one non-event action as an idempotent ensure."""
    w, ns, name = ctx.adapters.workloads, ctx.owner.namespace, ctx.owner.name
    if isinstance(action, REMOVALS) and (
        ctx.persisted.routes_to(action.version) or new_traffic.routes_to(action.version)
    ):
        # Defence in depth: decide() never asks this, but stranding traffic is the one
        # mistake we refuse to make even if it did.
        log.error(
            "refusing %s of %s/%s %s: traffic still routes to it", type(action).__name__, ns, name, action.version
        )
        return
    if isinstance(action, EnsureVersion):
        w.ensure_version(ctx.owner, action.version, action.replicas, compute_server_template(ctx.spec, action))
    elif isinstance(action, EnsureRouter):
        w.ensure_router(ctx.owner, action.image, action.replicas, action.network_policies)
    elif isinstance(action, RemoveNetworkPolicies):
        w.delete_network_policies(ctx.owner)
    elif isinstance(action, SetTraffic):
        split = TrafficSplit(stable=action.stable, candidate=action.candidate, mirror=action.mirror)
        routing = ctx.spec.traffic_routing
        ctx.adapters.traffic_provider(routing.provider).ensure_traffic(ns, name, split, routing.gateway_api)
    elif isinstance(action, EnsurePreviewService):
        w.ensure_preview(ctx.owner, action.version)
    elif isinstance(action, RemovePreviewService):
        w.delete_preview(ns, name)
    elif isinstance(action, ScaleDownVersion):
        w.scale_version(ns, name, action.version, 0)
    elif isinstance(action, DeleteVersion):
        w.delete_version(ns, name, action.version)


def execute_actions(
    decision: Decision, ctx: _Context, persisted: RolloutStatus, generation: int, now: datetime
) -> Decision:
    """Runs the decision's actions in order; the decision to write. An object the API server
    refuses (or that belongs to someone else) ends the tick Invalid naming the field, with
    traffic as persisted; transport errors propagate so the runtime retries the tick."""
    for action in decision.actions:
        if isinstance(action, EmitEvent):
            continue
        try:
            execute_action(action, ctx, decision.status.traffic)
        except (KubeError, TakeoverRefused) as err:
            rejection = compute_rejection(action, err)
            if rejection is None:
                raise
            return decide_invalid(persisted, rejection, generation, now)
    return decision


def compute_decision(
    body: Mapping[str, Any], adapters: Adapters, settings: Settings, now: datetime
) -> tuple[Decision, RolloutSpec | None]:
    """Parses the spec (SpecError → Invalid, no traceback loop), observes, decides."""
    meta = body["metadata"]
    status = status_from_dict(body.get("status"))
    generation = int(meta.get("generation", 0))
    try:
        spec = parse_spec(
            body.get("spec") or {}, name=meta["name"], namespace=meta["namespace"], policy=settings.pod_policy()
        )
    except SpecError as err:
        return decide_invalid(status, err, generation, now), None
    observations = fetch_observations(spec, status, adapters, settings, generation, now)
    return decide(spec, status, observations, now), spec


def reconcile(body: Mapping[str, Any], adapters: Adapters, settings: Settings, now: datetime) -> TickOutcome:
    """One full tick for the ModelRollout `body` as last seen by the watch."""
    started = time.perf_counter()
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    old_dict = dict(body.get("status") or {})
    decision, spec = compute_decision(body, adapters, settings, now)
    if spec is not None:
        old = status_from_dict(old_dict)
        ctx = _Context(owner, spec, adapters, settings, old.traffic)
        decision = execute_actions(decision, ctx, old, int(meta.get("generation", 0)), now)
    patch = compute_status_patch(old_dict, status_to_dict(decision.status))
    written = conflict = False
    if patch:
        written = adapters.status.patch_status(owner.namespace, owner.name, str(meta.get("resourceVersion", "")), patch)
        conflict = not written
        m.STATUS_WRITES.inc() if written else m.RECONCILE_ERRORS.labels("conflict").inc()
    if not conflict:  # events describe a persisted decision; a refused one is decided again
        for event in decision.events:
            adapters.events.emit(owner, event.type, event.reason, event.message)
            m.EVENTS.labels(event.reason).inc()
        if spec is not None:
            notify_decision(owner, spec, body, decision, adapters, settings, now)
    record_snapshot(owner, spec, decision.status)
    m.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    return TickOutcome(decision.status, written, conflict, decision.requeue_seconds, decision.actions)


def notify_decision(
    owner: Owner,
    spec: RolloutSpec,
    body: Mapping[str, Any],
    decision: Decision,
    adapters: Adapters,
    settings: Settings,
    now: datetime,
) -> None:
    """Each decision event, as posted, to the receivers that want it (queued: never waits on
    one). On the first tick of a spec generation, a warning names the receivers it lacks."""
    config, status = settings.notifications, decision.status
    generation = int(body["metadata"].get("generation", 0))
    if status_from_dict(body.get("status")).observed_generation != generation:
        problem = compute_unknown_receivers(spec.notifications, config)
        if problem:
            adapters.events.emit(owner, "Warning", "UnknownNotificationReceiver", problem)
            m.EVENTS.labels("UnknownNotificationReceiver").inc()
    for event in decision.events:
        kind = compute_event_kind(event.type, event.reason, status.phase)
        if kind is None:
            continue
        note = Notification(
            kind=kind,
            rollout=owner.name,
            namespace=owner.namespace,
            type=event.type,
            reason=event.reason,
            message=event.message,
            phase=status.phase.value if status.phase else "",
            stable_version=status.stable_version or "",
            candidate_version=status.candidate_version or "",
            step=status.current_step,
            time=now,
        )
        for receiver, payload in compute_deliveries(config, spec.notifications, note):
            adapters.notifier.notify(receiver, payload, f"{owner.namespace}/{owner.name} {event.reason}")


def record_snapshot(owner: Owner, spec: RolloutSpec | None, status: RolloutStatus) -> None:
    """Refreshes this rollout's gauges: phase, weights, mirror, each gate's value and thresholds."""
    traffic = status.traffic
    weights = {
        (t.version, role): t.weight
        for role, t in (("stable", traffic.stable), ("candidate", traffic.candidate))
        if t is not None
    }
    mirror = (traffic.mirror.version, traffic.mirror.percent) if traffic.mirror else None
    gates: dict[str, m.Gate] = {}
    specs = {metric.name: metric for metric in (spec.metrics if spec else ())}
    for gate in status.analysis.metrics:
        metric = specs.get(gate.name)
        bounds = (
            {}
            if metric is None
            else {
                b: float(v)
                for b, v in (
                    ("min", metric.min),
                    ("max", metric.max),
                    ("maxIncrease", metric.max_increase),
                    ("maxDecrease", metric.max_decrease),
                )
                if v is not None
            }
        )
        gates[gate.name] = m.Gate(gate.value, bounds, gate.verdict.value if gate.verdict else None)
    m.ROLLOUTS.record(
        owner.namespace,
        owner.name,
        m.RolloutSnapshot(
            status.phase.value if status.phase else None,
            weights,
            mirror,
            gates,
            status.monitoring.degraded if status.monitoring.version else None,
        ),
    )
