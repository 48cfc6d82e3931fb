"""Chaos on the testbed: the leader operator killed at random instants, Prometheus hung or down
mid-canary. Each ends where a calm run would (or in the rollback the outage calls for).

Seeded and bounded: CHAOS_SEED (default below) picks the kill instants; the seed, the instants and
the outage timings are printed and named in every failure message, so a run can be replayed with
`CHAOS_SEED=<seed> pytest -m e2e e2e/tests/test_chaos.py`. No assertion is on wall-clock time; the
outage tests print how long traffic took to get back on stable.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from kubernetes import client

from e2e import rollouts, scenario
from e2e.load import LoadRunner
from e2e.tests.conftest import front_door
from e2e.tests.support import NAME, ROLLOUT_TIMEOUT, deploy_first
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

    def __init__(self, cluster, api, seed: int, kills: int, gap_s: tuple[float, float]) -> None:
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


def test_sigkill_of_the_leader_at_random_instants_through_a_canary_ends_as_a_calm_run(cluster, api, namespace):
    deploy_first(cluster, api, namespace)
    manifest = rollouts.compute_canary(NAME, "v2", namespace=namespace)
    killer = LeaderKiller(cluster, api, SEED, KILLS, gap_s=(4.0, 14.0))
    replay = f"CHAOS_SEED={SEED} kill gaps {killer.gaps}"
    with LoadRunner(front_door(api, namespace, NAME)) as load:
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
        finally:
            killer.stop.set()
            killer.join(timeout=30)
    print(f"{replay}: killed {killer.killed}")
    status = obj["status"]
    assert status["phase"] == "Healthy" and status["stableVersion"] == "v2", f"{replay}: {status}"
    assert status["traffic"] == {"stable": {"version": "v2", "weight": 100}}, replay
    assert [h["outcome"] for h in _history_of(obj, "v2")] == ["Promoted"], f"{replay}: {status['history']}"
    assert len(killer.killed) >= 2, f"{replay}: the rollout settled after {killer.killed} kills only"
    totals = load.compute_totals(since=0)
    failed = sum(t["errors"] for t in totals.values())
    assert failed == 0, f"{replay}: {failed} user requests failed: {totals}"


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
