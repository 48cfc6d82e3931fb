"""Leader election on a Lease (handlers/leadership.py, adapters/kube_lease.py): two electors share an
in-memory Lease with resourceVersion preconditions and a hand-driven monotonic clock.

The properties: at most one leader at any instant (the old one stops before a standby may start),
takeover after one lease duration when the leader dies, at once when it hands the Lease back.
"""

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from rollout_operator import metrics as m
from rollout_operator.adapters.kube import KubeError
from rollout_operator.adapters.kube_lease import LeaseRecord, compute_lease_object, compute_lease_record
from rollout_operator.cli import compute_leader_text, fetch_leader_text
from rollout_operator.handlers.leadership import ElectionTimings, Elector
from rollout_operator.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit

T = ElectionTimings(lease_duration=15, renew_deadline=10, retry_period=2)
NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


class FakeLeases:
    """One Lease object in memory; a write with a stale resourceVersion is refused (409)."""

    def __init__(self) -> None:
        self.obj: dict | None = None
        self.version = 0
        self.broken: set[str] = set()  # identities whose calls fail (a partitioned replica)
        self.writes: list[str | None] = []

    def for_(self, identity: str) -> "_View":
        return _View(self, identity)


class _View:
    def __init__(self, store: FakeLeases, identity: str) -> None:
        self.store, self.identity = store, identity

    def _check(self) -> None:
        if self.identity in self.store.broken:
            raise KubeError(0, "connection refused", method="GET", path="/leases")

    def fetch_lease(self) -> LeaseRecord:
        self._check()
        return compute_lease_record(self.store.obj)

    def apply_lease(self, old, holder, duration_seconds, now):
        self._check()
        current = self.store.obj and self.store.obj["metadata"]["resourceVersion"]
        if old.resource_version != current:
            return None  # 409: someone wrote since `old` was read
        obj = compute_lease_object("ops", "modelrollout-operator", old, holder, duration_seconds, now)
        self.store.version += 1
        obj["metadata"]["resourceVersion"] = str(self.store.version)
        self.store.obj = obj
        self.store.writes.append(holder)
        return compute_lease_record(obj)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def electors(n=2):
    store, clock = FakeLeases(), Clock()
    made = [Elector(store.for_(f"op-{i}"), f"op-{i}", T, monotonic=clock, clock=lambda: NOW) for i in range(n)]
    return store, clock, made


def test_the_first_replica_takes_an_absent_lease_and_the_other_stands_by():
    store, clock, (a, b) = electors()
    assert a.step() is True
    assert b.step() is False and b.leader == "op-0"
    spec = store.obj["spec"]
    assert spec["holderIdentity"] == "op-0" and spec["leaseDurationSeconds"] == 15
    assert store.obj["metadata"]["labels"]["app.kubernetes.io/component"] == "leader-election"


def test_a_renewing_leader_keeps_the_lease_however_long_the_standby_waits():
    store, clock, (a, b) = electors()
    a.step()
    for _ in range(50):
        clock.t += T.retry_period
        assert a.step() is True
        assert b.step() is False
    assert set(store.writes) == {"op-0"}


def test_a_dead_leader_is_replaced_after_one_lease_duration_not_before():
    store, clock, (a, b) = electors()
    a.step()
    b.step()  # b sees the record now
    # a is SIGKILLed: it never steps again. b looks every retry period.
    clock.t += T.lease_duration - 0.5
    assert b.step() is False
    clock.t += 0.5
    assert b.step() is True
    assert store.obj["spec"]["holderIdentity"] == "op-1" and store.obj["spec"]["leaseTransitions"] == 1


def test_the_standby_trusts_its_own_clock_not_the_renew_time_written_by_another_node():
    # The record says it was renewed long ago (a skewed clock); b still waits a whole duration
    # from the moment it first saw that record.
    store, clock, (a, b) = electors()
    a.step()
    store.obj["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z"
    assert b.step() is False
    clock.t += T.lease_duration - 1
    assert b.step() is False


def test_a_partitioned_leader_stops_before_any_standby_may_take_over():
    store, clock, (a, b) = electors()
    a.step()
    b.step()
    store.broken.add("op-0")  # a can no longer reach the API server, but keeps running
    a_stopped_at = b_started_at = None
    for _ in range(40):
        clock.t += 0.5
        if a_stopped_at is None and not a.step():
            a_stopped_at = clock.t
        if b_started_at is None and b.step():
            b_started_at = clock.t
        assert not (a.is_leader and b.is_leader)
    assert a_stopped_at is not None and b_started_at is not None
    assert a_stopped_at < b_started_at
    assert a_stopped_at - 1000.0 <= T.renew_deadline + 0.5 and b_started_at - 1000.0 >= T.lease_duration


def test_two_standbys_racing_for_an_expired_lease_cannot_both_win():
    store, clock, (a, b, c) = electors(3)
    a.step()
    b.step(), c.step()
    clock.t += T.lease_duration
    record = b.leases.fetch_lease()
    # Both read the same expired record; b writes first, c's write carries a stale resourceVersion.
    assert b.leases.apply_lease(record, "op-1", 15, NOW) is not None
    assert c.leases.apply_lease(record, "op-2", 15, NOW) is None
    assert c.step() is False and c.leader == "op-1"


def test_a_released_lease_is_taken_at_the_next_look():
    store, clock, (a, b) = electors()
    a.step()
    b.step()
    a.release()
    assert store.obj["spec"]["holderIdentity"] is None and a.is_leader is False
    clock.t += T.retry_period
    assert b.step() is True


def test_the_lease_object_carries_the_precondition_and_keeps_the_acquire_time_on_renewal():
    first = compute_lease_object("ops", "l", compute_lease_record(None), "op-0", 15, NOW)
    assert "resourceVersion" not in first["metadata"]
    first["metadata"]["resourceVersion"] = "7"
    later = datetime(2026, 12, 2, 14, 0, 5, tzinfo=UTC)
    renewed = compute_lease_object("ops", "l", compute_lease_record(first), "op-0", 15, later)
    assert renewed["metadata"]["resourceVersion"] == "7"
    assert renewed["spec"]["acquireTime"] == "2026-12-02T14:00:00.000000Z"
    assert renewed["spec"]["renewTime"] == "2026-12-02T14:00:05.000000Z"
    assert renewed["spec"]["leaseTransitions"] == 0


def test_run_logs_each_change_sets_the_gauge_and_reports_a_lost_lease(caplog):
    store, clock, (a, b) = electors()
    timings = ElectionTimings(lease_duration=0.3, renew_deadline=0.2, retry_period=0.01)
    a = Elector(store.for_("op-0"), "op-0", timings)

    async def scenario():
        leading, lost, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(a.run(leading, lost, stop))
        await asyncio.wait_for(leading.wait(), 5)
        assert m.LEADER._value.get() == 1
        # Another replica takes the Lease (as if a had been partitioned for longer than a lease).
        store.obj["spec"]["holderIdentity"] = "op-9"
        store.obj["metadata"]["resourceVersion"] = "99"
        await asyncio.wait_for(lost.wait(), 5)
        await asyncio.wait_for(task, 5)
        assert m.LEADER._value.get() == 0

    with caplog.at_level(logging.INFO, logger="rollout_operator.leadership"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert "op-0: became the leader (was: nobody)" in messages
    assert "op-0: lost the leader Lease (now held by op-9); stopping" in messages


class LeaseApi:
    def __init__(self, cluster_wide_allowed=True, items=()):
        self.cluster_wide_allowed, self.items, self.paths = cluster_wide_allowed, list(items), []

    def request(self, method, path, query=None, **_):
        self.paths.append(path)
        if path == "/apis/coordination.k8s.io/v1/leases" and not self.cluster_wide_allowed:
            raise KubeError(403, "forbidden", method=method, path=path)
        return {"items": self.items}


LEASE = {
    "metadata": {"namespace": "modelrollout-system", "name": "modelrollout-operator"},
    "spec": {"holderIdentity": "modelrollout-operator-5d8f-x2k_a1b2c3", "renewTime": "2026-12-02T14:00:05.000000Z"},
}


def test_status_says_which_replica_leads_from_the_lease():
    text = fetch_leader_text(LeaseApi(items=[LEASE]), "ml")
    assert text == (
        "  Operator:  leader modelrollout-operator-5d8f-x2k_a1b2c3, renewed 2026-12-02T14:00:05.000000Z "
        "(Lease modelrollout-system/modelrollout-operator)"
    )


def test_status_falls_back_to_the_rollouts_namespace_when_leases_cannot_be_listed_everywhere():
    api = LeaseApi(cluster_wide_allowed=False, items=[LEASE])
    assert "leader modelrollout-operator-5d8f-x2k_a1b2c3" in fetch_leader_text(api, "ml")
    assert api.paths[-1] == "/apis/coordination.k8s.io/v1/namespaces/ml/leases"
    assert "no leader Lease found" in compute_leader_text([])


def test_settings_refuse_timings_that_let_a_standby_start_before_the_leader_stops():
    with pytest.raises(SettingsError) as err:
        load_settings(
            ["--leader-election=true", "--leader-election-namespace=ops", "--leader-election-renew-deadline=20"],
            environ={},
        )
    assert "must hold: a leader must stop before a standby may take its Lease" in str(err.value)
    with pytest.raises(SettingsError, match="--leader-election-namespace: empty"):
        load_settings(["--leader-election=true"], environ={})
    assert load_settings(["--leader-election=true", "--leader-election-namespace=ops"], environ={}).leader_election


def test_the_process_runs_kopf_only_once_it_leads_and_hands_the_lease_back_on_stop(monkeypatch):
    from rollout_operator import main
    from rollout_operator.settings import Settings

    store = FakeLeases()
    # Someone else holds the Lease, freshly renewed: this replica must stand by.
    other = Elector(store.for_("op-9"), "op-9", ElectionTimings(1, 0.5, 0.1), monotonic=Clock(), clock=lambda: NOW)
    other.step()
    timings = ElectionTimings(lease_duration=0.4, renew_deadline=0.3, retry_period=0.02)
    mine = Elector(store.for_("op-0"), "op-0", timings)
    monkeypatch.setattr(main, "build_elector", lambda settings, client: mine)
    monkeypatch.setattr(main, "load_api_client", lambda: None)
    kopf_runs = []

    async def fake_kopf(settings, runtime, ready, stop_flag):
        assert store.obj is not None, "kopf started before any Lease was written"
        kopf_runs.append(store.obj["spec"]["holderIdentity"])
        await stop_flag.wait()

    monkeypatch.setattr(main, "run_kopf", fake_kopf)

    async def scenario():
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(main.run_elected(Settings(), None, ready, stop))
        await asyncio.wait_for(ready.wait(), 5)  # a standby is Ready
        await asyncio.sleep(0.1)
        assert kopf_runs == [], "kopf started while another replica held a live Lease"
        # op-9 dies (stops renewing): after its lease duration (1 s) this replica takes over.
        for _ in range(250):
            if kopf_runs:
                break
            await asyncio.sleep(0.02)
        assert kopf_runs == ["op-0"]
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert store.obj is not None and store.obj["spec"]["holderIdentity"] is None, (
        "the Lease was not handed back on a clean stop"
    )
    assert store.writes[-1] is None


def test_a_leader_that_cannot_reach_the_api_says_so_instead_of_naming_itself_the_new_holder(caplog):
    store = FakeLeases()
    timings = ElectionTimings(lease_duration=0.3, renew_deadline=0.2, retry_period=0.01)
    a = Elector(store.for_("op-0"), "op-0", timings)

    async def scenario():
        leading, lost, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(a.run(leading, lost, stop))
        await asyncio.wait_for(leading.wait(), 5)
        store.broken.add("op-0")  # the API server goes away; nobody else wrote the Lease
        await asyncio.wait_for(lost.wait(), 5)
        await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.INFO, logger="rollout_operator.leadership"):
        asyncio.run(scenario())
    lost_lines = [r.getMessage() for r in caplog.records if "lost the leader Lease" in r.getMessage()]
    assert len(lost_lines) == 1
    assert "now held by op-0" not in lost_lines[0]
    assert lost_lines[0].startswith(
        "op-0: lost the leader Lease (could not renew it within the renew deadline of 0.2 s"
    )
