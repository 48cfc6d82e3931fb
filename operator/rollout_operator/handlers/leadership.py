"""Leader election on a coordination.k8s.io Lease: only the replica holding the Lease runs kopf.

Reading order: `Elector.step` (one attempt: read the Lease, take or renew it when allowed), then
`Elector.run` (the loop, the log lines and the leader gauge). docs/operator.md says why a Lease
and not kopf peering, and which timings make takeover both fast and safe.

Safety comes from two clocks that never meet: a standby takes the Lease only after it has seen
the same record unchanged for a whole leaseDuration on ITS OWN monotonic clock (no trust in the
other node's wall clock), and a leader that could not renew within renewDeadline (< leaseDuration)
since its last successful renewal stops at once. Writes carry a resourceVersion precondition, so
two standbys racing for an expired Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .. import metrics as m
from ..adapters.kube_lease import LeaseRecord
from ..settings import Settings

log = logging.getLogger("rollout_operator.leadership")


class Leases(Protocol):
    def fetch_lease(self) -> LeaseRecord: ...

    def apply_lease(
        self, old: LeaseRecord, holder: str | None, duration_seconds: int, now: datetime
    ) -> LeaseRecord | None: ...


@dataclass(frozen=True)
class ElectionTimings:
    """Seconds. renew_deadline < lease_duration leaves the old leader time to stop before any
    standby may start; retry_period is how often both sides look."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class Elector:
    """One replica's view of the election. `step()` is synchronous (it makes the API calls) and
    takes its clocks as parameters' defaults so tests can drive it; `run()` loops it."""

    def __init__(
        self,
        leases: Leases,
        identity: str,
        timings: ElectionTimings = ElectionTimings(),
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.leases, self.identity, self.timings = leases, identity, timings
        self._monotonic, self._clock = monotonic, clock
        self.is_leader = False
        self.leader: str | None = None  # who holds the Lease as last read
        self._observed: tuple[tuple[str | None, str | None, str | None], float] | None = None
        self._renewed_at = 0.0  # monotonic start of our last successful write
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leader-election")

    def step(self) -> bool:
        """One attempt; True when this replica leads afterwards. API errors are a failed attempt
        (the caller logs them); a leader whose attempts fail past renew_deadline has lost."""
        started = self._monotonic()
        try:
            record = self.leases.fetch_lease()
            if self._observed is None or self._observed[0] != record.key:
                self._observed = (record.key, started)  # a change seen now: the holder is alive
            self.leader = record.holder
            if self.is_allowed_to_write(record, started):
                written = self.leases.apply_lease(
                    record, self.identity, int(self.timings.lease_duration), self._clock()
                )
                if written is not None:
                    self._observed = (written.key, started)
                    self._renewed_at, self.leader = started, self.identity
                    self.is_leader = True
                    return True
        except Exception:
            if not self.is_leader:
                raise
            log.warning("renewing the leader Lease failed", exc_info=True)
        if self.is_leader and (
            self.leader != self.identity or self._monotonic() - self._renewed_at > self.timings.renew_deadline
        ):
            self.is_leader = False
        return self.is_leader

    def is_allowed_to_write(self, record: LeaseRecord, now_mono: float) -> bool:
        """Ours, released, absent, or unchanged for a whole lease duration as we watched it.
        Identities are unique per process (settings.py), so "ours" means this very process."""
        if not record.holder or record.holder == self.identity:
            return True
        return self._has_expired(record, now_mono)

    def _has_expired(self, record: LeaseRecord, now_mono: float) -> bool:
        assert self._observed is not None
        duration = record.duration_seconds or self.timings.lease_duration
        return now_mono - self._observed[1] >= duration

    def release(self) -> None:
        """Hands the Lease back on a clean shutdown, so a standby takes over at its next look
        instead of after a whole lease duration. Best effort: a failure only costs that wait."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            record = self.leases.fetch_lease()
            if record.holder == self.identity:
                self.leases.apply_lease(record, None, 1, self._clock())
                log.info("released the leader Lease")
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.warning("could not release the leader Lease; a standby takes over when it expires", exc_info=True)

    async def hand_back(self) -> None:
        """release() on the elector's own thread (kopf may have shut its executor down)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.release)

    async def run(
        self, leading: asyncio.Event, lost: asyncio.Event, stop: asyncio.Event, looked: asyncio.Event | None = None
    ) -> None:
        """Loops step() every retry period until `stop`: sets `looked` after the first read that
        worked, `leading` on becoming leader and `lost` (then returns) when leadership ends; logs
        each change and keeps the gauge."""
        m.LEADER.set(0)
        log.info("%s: standing by for the leader Lease", self.identity)
        while not stop.is_set():
            was_leader, was_holder = self.is_leader, self.leader
            try:
                # Its own thread: kopf's workers may all be busy with reconciles (a hung
                # Prometheus holds each for a round), and a renewal queued behind them would
                # cost this replica its leadership.
                leads = await asyncio.get_running_loop().run_in_executor(self._executor, self.step)
            except Exception as err:  # noqa: BLE001 - a standby just looks again
                log.warning("reading the leader Lease failed: %s", err)
                leads = False
            else:
                if looked is not None:
                    looked.set()
            if leads and not was_leader:
                m.LEADER.set(1)
                log.info("%s: became the leader (was: %s)", self.identity, was_holder or "nobody")
                leading.set()
            elif was_leader and not leads:
                m.LEADER.set(0)
                if self.leader in (None, self.identity):
                    # Nobody else wrote it as far as we saw: the API could not be reached in time.
                    why = f"could not renew it within the renew deadline of {self.timings.renew_deadline:g} s"
                else:
                    why = f"now held by {self.leader}"
                log.error("%s: lost the leader Lease (%s); stopping", self.identity, why)
                lost.set()
                return
            elif not leads and self.leader != was_holder:
                log.info("%s: standing by; the leader is %s", self.identity, self.leader or "nobody")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.timings.retry_period)
            except TimeoutError:
                pass


def build_elector(settings: Settings, api_client: Any) -> Elector:
    """The elector for the Lease the settings name, with a process-unique identity."""
    from ..adapters.kube import KubeApi
    from ..adapters.kube_lease import KubeLeases

    # A Lease call must end well within the renew deadline, or one slow call costs leadership.
    api = KubeApi(
        api_client,
        timeout=min(settings.kube_timeout, settings.leader_election_renew_deadline / 2),
        on_call=m.record_api_call,
        field_manager=settings.field_manager,
    )
    leases = KubeLeases(api, settings.leader_election_namespace, settings.leader_election_lease)
    identity = f"{settings.leader_election_identity or socket.gethostname()}_{secrets.token_hex(3)}"
    timings = ElectionTimings(
        settings.leader_election_lease_duration,
        settings.leader_election_renew_deadline,
        settings.leader_election_retry_period,
    )
    return Elector(leases, identity, timings)
