"""Chaos on the testbed: the leader operator killed at random instants through canary,
blue-green and shadow rollouts; Prometheus hung or down mid-canary; the API server restarted
mid-canary; a candidate that crash-loops. Each ends where a calm run would (or in the rollback
the fault calls for). docs/operator.md ("Chaos tests") says what each proves.

Seeded and bounded: CHAOS_SEED (default below) picks the kill instants and the API server's
outage; the seed, the instants and the outage timings are printed and named in every failure
message, so a run can be replayed with `CHAOS_SEED=<seed> pytest -m e2e e2e/tests/test_chaos.py`.
No assertion is on wall-clock time; the outage tests print how long traffic took to get back on
stable, and the API server test how long the operator took to resume.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import threading
import time
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from kubernetes import client

from e2e import rollouts, scenario
from e2e.load import LoadRunner
from e2e.testbed import cluster as testbed
from e2e.testbed import paths, procs
from e2e.tests.conftest import front_door
from e2e.tests.support import NAME, ROLLOUT_TIMEOUT, assert_answered_only_by, deploy_first
from tests.support.tcp import relay

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("CHAOS_SEED", "1717"))
KILLS = 3  # SIGKILLs of the leader per rollout
LEASE = scenario.RELEASE  # the chart's Lease name: the release's full name ("modelrollout")
ERROR_LIMIT = 4  # consecutiveErrorLimit (the API default the demo rollouts keep)


def _leader_pod(api: client.ApiClient) -> str | None:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, scenario.OPERATOR_NAMESPACE)
    except client.ApiException:
        return None
    holder = lease.spec.holder_identity or ""
    return holder.rsplit("_", 1)[0] or None


def _sigkill(cluster: scenario.Cluster, pod: str) -> None:
    """A forced delete with no grace period: the kubelet SIGKILLs the process at once."""
    scenario.run_tool(
        cluster,
        cluster.kubectl,
        "delete",
        "pod",
        pod,
        "-n",
        scenario.OPERATOR_NAMESPACE,
        "--grace-period=0",
        "--force",
        "--wait=false",
        check=False,
    )


class LeaderKiller(threading.Thread):
    """Kills whoever holds the Lease at seeded random instants, `kills` times, each once a
    leader (possibly a new one) holds it again."""

    def __init__(self, cluster, api, seed: int | str, kills: int, gap_s: tuple[float, float]) -> None:
        super().__init__(daemon=True, name="leader-killer")
        self.cluster, self.api, self.kills = cluster, api, kills
        self.rng = random.Random(seed)
        self.gaps = [round(self.rng.uniform(*gap_s), 1) for _ in range(kills)]
        self.killed: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.start_t = time.monotonic()

    def run(self) -> None:
        for gap in self.gaps:
            if self.stop.wait(gap):
                return
            pod = None
            while not self.stop.is_set() and pod is None:
                pod = _leader_pod(self.api)
                if pod is None:
                    self.stop.wait(0.5)
            if pod is None:
                return
            _sigkill(self.cluster, pod)
            self.killed.append((round(time.monotonic() - self.start_t, 1), pod))
            # The next kill targets the next leader: wait until the Lease names someone else.
            while not self.stop.is_set() and _leader_pod(self.api) in (pod, None):
                self.stop.wait(0.5)


def _history_of(obj: dict, version: str) -> list[dict]:
    return [h for h in (obj.get("status") or {}).get("history") or [] if h.get("version") == version]


def _through_leader_kills(
    cluster, api, namespace, manifest: dict, seed: int | str, gap_s: tuple[float, float], preview: bool = False
):
    """Applies `manifest` (version v2) under load through the router and kills the leader
    KILLS times at seeded instants until v2 settles; at least two kills must land before it
    settles and the history from before must stay as it was. `preview`: also load the
    blue-green preview Service, as test_rollouts.py's calm run does (the analysis judges the
    candidate on that traffic). Returns (the settled rollout, the load's totals per version,
    the preview load's totals, the replay text for failure messages)."""
    before = scenario.fetch_rollout(api, namespace, NAME)["status"].get("history") or []
    killer = LeaderKiller(cluster, api, seed, KILLS, gap_s=gap_s)
    replay = f"CHAOS_SEED={SEED} (seed {seed!r}) kill gaps {killer.gaps}"
    preview_door = front_door(api, namespace, f"{NAME}-preview") if preview else (lambda: None)
    with (
        LoadRunner(front_door(api, namespace, NAME), rate=10 if preview else 20) as load,
        LoadRunner(preview_door, rate=10) as preview_load,
    ):
        scenario.apply_manifest(cluster, manifest)
        generation = scenario.fetch_rollout(api, namespace, NAME)["metadata"]["generation"]
        killer.start()
        try:
            obj = scenario.wait_for_rollout(
                api,
                namespace,
                NAME,
                scenario.is_settled("v2", generation),
                f"v2 to settle through leader kills ({replay})",
                ROLLOUT_TIMEOUT + KILLS * 30,
            )
            settled_t = round(time.monotonic() - killer.start_t, 1)
        finally:
            killer.stop.set()
            killer.join(timeout=30)
    during = [k for k in killer.killed if k[0] <= settled_t]
    print(f"{replay}: killed {killer.killed}; v2 settled at t={settled_t}s, {len(during)} kills before that")
    assert len(during) >= 2, f"{replay}: the rollout settled after {killer.killed} kills only (t={settled_t}s)"
    assert (obj["status"].get("history") or [])[: len(before)] == before, f"{replay}: earlier history rewritten"
    return obj, load.compute_totals(since=0), preview_load.compute_totals(since=0), replay


def test_sigkill_of_the_leader_at_random_instants_through_a_canary_ends_as_a_calm_run(cluster, api, namespace):
    deploy_first(cluster, api, namespace)
    manifest = rollouts.compute_canary(NAME, "v2", namespace=namespace)
    obj, totals, _, replay = _through_leader_kills(cluster, api, namespace, manifest, SEED, gap_s=(4.0, 14.0))
    status = obj["status"]
    assert status["phase"] == "Healthy" and status["stableVersion"] == "v2", f"{replay}: {status}"
    assert status["traffic"] == {"stable": {"version": "v2", "weight": 100}}, replay
    assert [h["outcome"] for h in _history_of(obj, "v2")] == ["Promoted"], f"{replay}: {status['history']}"
    failed = sum(t["errors"] for t in totals.values())
    assert failed == 0, f"{replay}: {failed} user requests failed: {totals}"


# The calm runs these end like: test_rollouts.py's blue-green (Healthy on v2) and its shadow of
# v2 against v1 (agreement gate at 0.6, then: stop -> Stopped, users only ever on v1).
CALM_SHADOW_GATES = [{**g, "min": 0.6} if g["name"] == "shadow-agreement" else g for g in rollouts.SHADOW_GATES]


@pytest.mark.parametrize("strategy", ["blue-green", "shadow"])
def test_sigkill_of_the_leader_at_random_instants_through_blue_green_and_shadow_ends_as_a_calm_run(
    cluster, api, namespace, strategy
):
    deploy_first(cluster, api, namespace)
    if strategy == "blue-green":
        manifest = rollouts.compute_blue_green(NAME, "v2", namespace=namespace)
    else:
        manifest = rollouts.compute_shadow(NAME, "v2", namespace=namespace, gates=CALM_SHADOW_GATES)
    # Each strategy its own instants, all from CHAOS_SEED.
    obj, totals, preview_totals, replay = _through_leader_kills(
        cluster, api, namespace, manifest, f"{SEED}:{strategy}", gap_s=(4.0, 14.0), preview=strategy == "blue-green"
    )
    status = obj["status"]
    if strategy == "blue-green":
        assert status["phase"] == "Healthy" and status["stableVersion"] == "v2", f"{replay}: {status}"
        assert status["traffic"] == {"stable": {"version": "v2", "weight": 100}}, replay
        assert [h["outcome"] for h in _history_of(obj, "v2")] == ["Promoted"], f"{replay}: {status['history']}"
        assert_answered_only_by(preview_totals, "v2", f"{replay}: preview traffic")
    else:
        assert status["phase"] == "Stopped", f"{replay}: {status}"
        assert status["stableVersion"] == "v1" and status["candidateVersion"] == "v2", f"{replay}: {status}"
        assert status["traffic"]["stable"] == {"version": "v1", "weight": 100}, replay
        assert not status["traffic"].get("mirror") and not status["traffic"].get("candidate"), replay
        assert [h["outcome"] for h in _history_of(obj, "v2")] == ["Stopped"], f"{replay}: {status['history']}"
        answered = {v for v, t in totals.items() if t["requests"] > t["errors"]}
        assert answered == {"v1"}, f"{replay}: users got answers from {answered}: {totals}"
    failed = sum(t["errors"] for t in totals.values())
    assert failed == 0, f"{replay}: {failed} user requests failed: {totals}"


class Poller(threading.Thread):
    """Calls `read()` every 0.5 s and keeps each distinct answer with the time (seconds since
    `start`, time.monotonic()) it was first seen; a failed call (the API server down) is skipped."""

    def __init__(self, read, start: float) -> None:
        super().__init__(daemon=True, name="poller")
        self.read, self.start_t = read, start
        self.seen: list[tuple[float, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                value = self.read()
            except Exception:  # noqa: BLE001 - refused, reset, timed out: the outage being measured
                value = None
            if value is not None and (not self.seen or self.seen[-1][1] != value):
                self.seen.append((round(time.monotonic() - self.start_t, 2), value))
            self.stop.wait(0.5)

    def first_change_after(self, t: float) -> tuple[float, Any] | None:
        before = [v for ts, v in self.seen if ts < t]
        last = before[-1] if before else None
        return next(((ts, v) for ts, v in self.seen if ts >= t and v != last), None)


def _lease_holder_and_version(api: client.ApiClient) -> tuple[str, str]:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, scenario.OPERATOR_NAMESPACE, _request_timeout=3)
    return str(lease.spec.holder_identity or ""), str(lease.metadata.resource_version)


def _rollout_version(api: client.ApiClient, namespace: str) -> str:
    obj = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            scenario.GROUP, scenario.VERSION, namespace, scenario.PLURAL, NAME, _request_timeout=3
        ),
    )
    return str(obj["metadata"]["resourceVersion"])


def _outage_proof(resolve):
    """The front door, remembered: while the API server is down the router's address cannot be
    looked up, but the router (and the users it serves) keeps running."""
    last: list[str | None] = [None]

    def resolve_or_last() -> str | None:
        try:
            last[0] = resolve() or last[0]
        except Exception:  # noqa: BLE001 - the API server is down; the router is not
            pass
        return last[0]

    return resolve_or_last


def _candidate_has_traffic(obj: dict) -> bool:
    return bool((((obj.get("status") or {}).get("traffic") or {}).get("candidate") or {}).get("weight"))


# Without the absolute p99-latency gate: on the testbed the restarted API server, the clients
# relisting against it and the operator replica restarting share the machine's cores with the
# model servers, and in one of four runs (seed 1717, load ~20 on 2 cores) v2's p99 rose to 1.55 s
# (> 1 s) and the gate rolled it back - right for the gate, but a measure of the machine, not of
# the operator's reconnect. Errors, confidence and the unknown rate still gate it.
RESTART_GATES = [g for g in rollouts.CANARY_GATES if g["name"] != "p99-latency"]


def test_api_server_restarted_mid_canary_the_operator_reconnects_and_promotes_once(cluster, api, namespace):
    rng = random.Random(f"{SEED}:apiserver")
    wait_s, down_s = round(rng.uniform(0.0, 8.0), 1), round(rng.uniform(2.0, 12.0), 1)
    replay = f"CHAOS_SEED={SEED} restart {wait_s}s after the canary took traffic, down {down_s}s"
    lay, binaries = paths.default_layout(), paths.find_binaries()
    deploy_first(cluster, api, namespace)
    before = scenario.fetch_rollout(api, namespace, NAME)["status"].get("history") or []
    manifest = rollouts.compute_canary(NAME, "v2", namespace=namespace, gates=RESTART_GATES)
    t0 = time.monotonic()
    leases = Poller(lambda: _lease_holder_and_version(api), t0)
    writes = Poller(lambda: _rollout_version(api, namespace), t0)
    with LoadRunner(_outage_proof(front_door(api, namespace, NAME))) as load:
        scenario.apply_manifest(cluster, manifest)
        generation = scenario.fetch_rollout(api, namespace, NAME)["metadata"]["generation"]
        leases.start()
        writes.start()
        try:
            scenario.wait_for_rollout(
                api, namespace, NAME, _candidate_has_traffic, f"the canary taking traffic ({replay})", ROLLOUT_TIMEOUT
            )
            time.sleep(wait_s)
            restart = testbed.restart_apiserver(binaries, lay, down_s=down_s)
            t_stop, t_gone, t_ready = (t - t0 for t in (restart.stopping_at, restart.stopped_at, restart.ready_at))
            obj = scenario.wait_for_rollout(
                api,
                namespace,
                NAME,
                scenario.is_settled("v2", generation),
                f"v2 to settle after the API server restart ({replay})",
                ROLLOUT_TIMEOUT,
            )
        finally:
            leases.stop.set()
            writes.stop.set()
            leases.join(timeout=10)
            writes.join(timeout=10)
        totals = load.compute_totals(since=0)
    renewed = leases.first_change_after(t_ready)
    written = writes.first_change_after(t_ready)
    holders = [v[0] for _, v in leases.seen]
    print(
        f"{replay}: stop at t={t_stop:.1f}s, old process gone at t={t_gone:.1f}s, /readyz at t={t_ready:.1f}s "
        f"(API out {t_ready - t_stop:.1f}s); first Lease write after that "
        f"{(renewed[0] - t_ready) if renewed else float('nan'):.1f}s later, first rollout write "
        f"{(written[0] - t_ready) if written else float('nan'):.1f}s later; lease holders over the run: "
        f"{list(dict.fromkeys(holders))}"
    )
    assert restart.new_pid != restart.old_pid, replay
    assert procs.read_cmdline(restart.new_pid) == list(restart.argv), f"{replay}: restarted with other flags"
    status = obj["status"]
    assert status["phase"] == "Healthy" and status["stableVersion"] == "v2", f"{replay}: {status}"
    assert status["traffic"] == {"stable": {"version": "v2", "weight": 100}}, replay
    assert (status.get("history") or [])[: len(before)] == before, f"{replay}: earlier history rewritten"
    assert [h["outcome"] for h in _history_of(obj, "v2")] == ["Promoted"], f"{replay}: {status['history']}"
    assert renewed is not None and written is not None, f"{replay}: no Lease or rollout write after the restart"
    failed = sum(t["errors"] for t in totals.values())
    assert failed == 0, f"{replay}: {failed} user requests failed: {totals}"


# A model the server does not ship: it exits at start (on the process node and in a container
# alike), the kubelet (or pod runner) restarts it with back-off: a crash loop.
MISSING_MODEL = "builtin:not-shipped"
CRASH_DEADLINE = "45s"


@dataclasses.dataclass
class CandidateSeen:
    """What the candidate's container statuses showed over the run."""

    restarts: int = 0
    exit_codes: set[int] = dataclasses.field(default_factory=set)
    waiting: set[str] = dataclasses.field(default_factory=set)


def _candidate_containers(api: client.ApiClient, namespace: str) -> list:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    return [c for p in pods if p.metadata.name.startswith(f"{NAME}-v2-") for c in p.status.container_statuses or []]


def test_crash_looping_candidate_is_rolled_back_by_the_progress_deadline_and_users_stay_on_stable(
    cluster, api, namespace
):
    deploy_first(cluster, api, namespace)
    manifest = rollouts.compute_canary(NAME, "v2", namespace=namespace, progress_deadline=CRASH_DEADLINE)
    manifest["spec"]["model"]["uri"] = MISSING_MODEL
    seen = CandidateSeen()

    def watch_candidate(obj: dict) -> bool:
        for c in _candidate_containers(api, namespace):
            seen.restarts = max(seen.restarts, c.restart_count or 0)
            term = c.last_state.terminated if c.last_state else None
            if term is not None:
                seen.exit_codes.add(term.exit_code)
            if c.state and c.state.waiting and c.state.waiting.reason:
                seen.waiting.add(c.state.waiting.reason)
        return scenario.is_settled("v2", generation)(obj)

    with scenario.StatusRecorder(api, namespace, NAME) as rec, LoadRunner(front_door(api, namespace, NAME)) as load:
        scenario.apply_manifest(cluster, manifest)
        generation = scenario.fetch_rollout(api, namespace, NAME)["metadata"]["generation"]
        obj = scenario.wait_for_rollout(
            api, namespace, NAME, watch_candidate, "the crash-looping v2 to settle", ROLLOUT_TIMEOUT
        )
        t_end = rec.elapsed()
        scenario.wait_for_replicas(api, namespace, f"{NAME}-v2", 0)
        totals = load.compute_totals(since=0)
    status = obj["status"]
    print(f"crash loop: v2 settled {status['phase']} at t={t_end:.1f}s, candidate seen: {seen}; load: {totals}")
    assert status["phase"] == "RolledBack" and status["reason"] == "ProgressDeadlineExceeded", status
    assert "not Ready within progressDeadline" in status["message"], status["message"]
    assert status["stableVersion"] == "v1" and status["traffic"] == {"stable": {"version": "v1", "weight": 100}}
    assert [h["outcome"] for h in _history_of(obj, "v2")] == ["RolledBack"], status["history"]
    # It crashed and was restarted (a crash loop, not a slow start), and never got traffic.
    assert seen.restarts >= 1 and seen.exit_codes and 0 not in seen.exit_codes, seen
    assert not [s for s in rec.history() if s.candidate == "v2" and s.candidate_weight > 0], "v2 got traffic"
    assert_answered_only_by(totals, "v1", "while v2 crash-looped")


class FlakyPrometheus:
    """A TCP proxy in front of the testbed's Prometheus, on the same address (so pods reach it).
    mode "pass" forwards, "hang" accepts and never answers, "down" refuses (nothing listens)."""

    def __init__(self, upstream: str) -> None:
        url = urlsplit(upstream)
        self.upstream = (url.hostname, url.port)
        self.host = url.hostname
        probe = socket.create_server((self.host, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.mode = "pass"
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True, name="flaky-prometheus")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> FlakyPrometheus:
        self._listen()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._close_listener()
        self._release_held()

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
            if mode == "down":
                self._close_listener()
            elif self._listener is None:
                self._listen()
            if mode != "hang":
                self._release_held()

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        sock.settimeout(0.1)
        self._listener = sock

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _release_held(self) -> None:
        for conn in self._held:
            conn.close()
        self._held.clear()

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                self._stop.wait(0.1)
                continue
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                if self.mode == "hang":
                    self._held.append(conn)  # read nothing, answer nothing, until released
                    continue
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            conn.close()
            return
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=relay, args=(a, b), daemon=True).start()


def _first(rec: scenario.StatusRecorder, check, after: float = 0.0) -> scenario.Snapshot | None:
    return next((s for s in rec.history() if s.t >= after and check(s)), None)


@pytest.mark.parametrize("failure", ["hang", "down"])
def test_prometheus_gone_longer_than_the_error_limit_rolls_back_with_analysis_error(cluster, api, namespace, failure):
    with FlakyPrometheus(cluster.prometheus_url) as prom:
        deploy_first(cluster, api, namespace)
        manifest = rollouts.compute_canary(NAME, "v2", namespace=namespace, prometheus=prom.url)
        with scenario.StatusRecorder(api, namespace, NAME) as rec, LoadRunner(front_door(api, namespace, NAME)):
            scenario.apply_manifest(cluster, manifest)
            scenario.wait_for_rollout(
                api,
                namespace,
                NAME,
                lambda o: bool(((o.get("status") or {}).get("traffic") or {}).get("candidate")),
                "the canary taking traffic",
                ROLLOUT_TIMEOUT,
            )
            prom.set_mode(failure)
            t_out = rec.elapsed()
            obj = scenario.wait_for_rollout(
                api,
                namespace,
                NAME,
                scenario.is_phase("RolledBack", "Healthy"),
                f"the rollout to end with Prometheus {failure}",
                ROLLOUT_TIMEOUT,
                fail_on=("Healthy",),
            )
            back = _first(rec, lambda s: s.stable == "v1" and s.stable_weight == 100 and not s.candidate, after=t_out)
    status = obj["status"]
    assert status["phase"] == "RolledBack" and status["reason"] == "AnalysisError", status
    assert "Prometheus at" in status["message"] and "unreachable" in status["message"], status["message"]
    assert f"({ERROR_LIMIT}/{ERROR_LIMIT} consecutive errors)" in status["message"], status["message"]
    assert status["traffic"]["stable"] == {"version": "v1", "weight": 100}
    assert [h["outcome"] for h in _history_of(obj, "v2")] == ["RolledBack"]
    assert not [s for s in rec.history() if s.stable == "v2"], "promoted during a Prometheus outage"
    print(
        f"Prometheus {failure} at t={t_out:.1f}s: traffic back on stable at "
        f"t={back.t if back else float('nan'):.1f}s ({(back.t - t_out) if back else float('nan'):.1f}s; "
        f"limit {ERROR_LIMIT} x interval {rollouts.DEMO_ANALYSIS_INTERVAL} + one query timeout)"
    )


def test_prometheus_down_briefly_holds_the_canary_then_it_continues(cluster, api, namespace):
    with FlakyPrometheus(cluster.prometheus_url) as prom:
        deploy_first(cluster, api, namespace)
        manifest = rollouts.compute_canary(NAME, "v2", namespace=namespace, prometheus=prom.url)
        with scenario.StatusRecorder(api, namespace, NAME) as rec, LoadRunner(front_door(api, namespace, NAME)):
            scenario.apply_manifest(cluster, manifest)
            generation = scenario.fetch_rollout(api, namespace, NAME)["metadata"]["generation"]
            scenario.wait_for_rollout(
                api,
                namespace,
                NAME,
                lambda o: bool(((o.get("status") or {}).get("traffic") or {}).get("candidate")),
                "the canary taking traffic",
                ROLLOUT_TIMEOUT,
            )
            prom.set_mode("down")
            t_out = rec.elapsed()
            # One or two failed rounds, below the limit of 4 in a row.
            scenario.wait_for_rollout(
                api,
                namespace,
                NAME,
                lambda o: any(
                    g.get("consecutiveErrors", 0) >= 1
                    for g in ((o.get("status") or {}).get("analysis") or {}).get("metrics") or []
                ),
                "a round counting the outage as an error",
                60,
            )
            prom.set_mode("pass")
            obj = scenario.wait_for_rollout(
                api,
                namespace,
                NAME,
                scenario.is_settled("v2", generation),
                "v2 to settle after the brief outage",
                ROLLOUT_TIMEOUT,
            )
    status = obj["status"]
    assert status["phase"] == "Healthy" and status["stableVersion"] == "v2", status
    assert [h["outcome"] for h in _history_of(obj, "v2")] == ["Promoted"]
    errored = [s for s in rec.history() if s.t >= t_out and any(g.get("verdict") == "Error" for g in s.metrics)]
    assert errored, "no round saw the outage"
    assert max(g.get("consecutiveErrors", 0) for s in errored for g in s.metrics) < ERROR_LIMIT
    # While the outage lasted the canary held its weight: never moved on an erroring round.
    weights = {s.candidate_weight for s in errored if s.candidate == "v2"}
    assert len(weights) <= 1, f"the weight moved during the outage: {weights}"
