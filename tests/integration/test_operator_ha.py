"""Two operator processes with leader election against the testbed's API server: only the Lease
holder reconciles; SIGKILL it mid-canary and the standby finishes the rollout from status.

Exactly one history entry per attempt (no double promotion, no missed rollback), the leader gauge
is 1 on exactly one replica, and the Lease names the replica that leads.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout_operator.adapters.kube import EVENTS
from rollout_operator.adapters.kube_lease import LEASES
from tests.integration.test_operator_restarts import STEPS, Sampler, _status
from tests.support.operator_harness import OperatorProcess, apply, delete_rollouts, rollout_manifest
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

LEASE = "mro-ha"
# Short timings so a takeover after a SIGKILL takes seconds: lease 4 s, renew 3 s, look every 0.5 s.
ELECTION = [
    "--leader-election=true",
    f"--leader-election-lease={LEASE}",
    "--leader-election-lease-duration=4",
    "--leader-election-renew-deadline=3",
    "--leader-election-retry-period=0.5",
]


class Replica(OperatorProcess):
    def __init__(self, cluster, namespace, prometheus_url, log_dir: Path, identity: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(cluster, namespace, prometheus_url, log_dir)
        self.identity = identity
        self.args += [*ELECTION, f"--leader-election-namespace={namespace}", f"--leader-election-identity={identity}"]

    def leader_gauge(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("modelrollout_operator_leader "):
                return float(line.split()[1])
        return None


@pytest.fixture
def replicas(tb, ns, prom, tmp_path) -> Iterator[dict[str, Replica]]:
    pair = {i: Replica(tb, ns, prom.url, tmp_path / i, i).start() for i in ("op-a", "op-b")}
    yield pair
    running = [r for r in pair.values() if r.proc is not None and r.proc.poll() is None]
    delete_rollouts(tb, ns, operator_running=bool(running))
    for r in pair.values():
        r.stop()


def _holder(api, ns) -> str | None:
    lease = api.get(LEASES, ns, LEASE) or {}
    return (lease.get("spec") or {}).get("holderIdentity")


def _leader(api, ns, replicas) -> Replica | None:
    holder = _holder(api, ns) or ""
    return next((r for i, r in replicas.items() if holder.startswith(i + "_")), None)


def _reasons(api, ns, name) -> list[str]:
    events = api.request("GET", EVENTS.path(ns), query={"fieldSelector": f"involvedObject.name={name}"})["items"]
    return [e["reason"] for e in events]


def _logs(replicas) -> str:
    return "\n".join(f"--- {i}\n{r.log_tail(25)}" for i, r in replicas.items())


def _one_leader_by_gauge(replicas) -> Replica | None:
    gauges = {i: r.leader_gauge() for i, r in replicas.items()}
    leaders = [replicas[i] for i, g in gauges.items() if g == 1]
    return leaders[0] if len(leaders) == 1 and all(g is not None for g in gauges.values()) else None


@pytest.mark.parametrize("outcome", ["Promoted", "RolledBack"])
def test_killing_the_leader_mid_canary_lets_the_standby_finish_with_one_history_entry(
    tb, api, ns, gates, replicas, outcome
):
    name = "speech"
    apply(tb, rollout_manifest(name, ns, "v1", steps=STEPS))
    wait_for(
        lambda: _status(api, ns, name).get("phase") == "Healthy",
        "v1 Healthy",
        timeout=180,
        describe=lambda: _logs(replicas),
    )
    first = wait_for(
        lambda: _one_leader_by_gauge(replicas),
        "exactly one replica with the leader gauge at 1",
        timeout=30,
        describe=lambda: _logs(replicas),
    )
    assert first is not None  # wait_for returns only a truthy value
    assert _leader(api, ns, replicas) is first, f"the Lease names {_holder(api, ns)}, the gauge {first.identity}"
    if outcome == "RolledBack":
        gates.error_rate["v2"] = 0.5  # every check of v2 fails; failureLimit 2 rolls back
    promotions_before = _reasons(api, ns, name).count("Promoted")
    sampler = Sampler(api, ns, name)
    sampler.start()
    apply(tb, rollout_manifest(name, ns, "v2", steps=STEPS))

    def at_the_kill_point() -> bool:
        s = _status(api, ns, name)
        if s.get("candidateVersion") != "v2":
            return False
        if outcome == "RolledBack":  # one failed check counted, the rollback not yet decided
            return any(g.get("failures") == 1 for g in (s.get("analysis") or {}).get("metrics") or [])
        return s.get("currentStepIndex") == 1 and s.get("phase") in ("Progressing", "Paused")

    wait_for(
        at_the_kill_point,
        f"the canary at the kill point ({outcome})",
        timeout=180,
        every=0.05,
        describe=lambda: _logs(replicas),
    )
    first.kill()
    standby = next(r for r in replicas.values() if r is not first)
    wait_for(
        lambda: _leader(api, ns, replicas) is standby,
        "the standby holding the Lease",
        timeout=60,
        describe=lambda: _logs(replicas),
    )
    final = "Healthy" if outcome == "Promoted" else "RolledBack"
    wait_for(
        lambda: _status(api, ns, name).get("phase") == final,
        f"{final} after the takeover",
        timeout=180,
        describe=lambda: _logs(replicas),
    )
    sampler.stop.set()
    sampler.join()

    status = _status(api, ns, name)
    attempts = [h for h in status.get("history") or [] if h["version"] == "v2"]
    assert [h["outcome"] for h in attempts] == [outcome], status.get("history")
    promotions = _reasons(api, ns, name).count("Promoted") - promotions_before
    if outcome == "Promoted":
        assert promotions == 1 and status["stableVersion"] == "v2"
        assert status["traffic"] == {"stable": {"version": "v2", "weight": 100}}
        assert sampler.weights == sorted(sampler.weights), f"weight went backwards: {sampler.weights}"
    else:
        assert promotions == 0 and status["stableVersion"] == "v1"
        assert status["traffic"]["stable"] == {"version": "v1", "weight": 100}
        assert status["reason"] == "AnalysisFailed"
    assert standby.leader_gauge() == 1
