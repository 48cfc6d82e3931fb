"""`modelrollout-operator`: validates settings, serves /healthz, /readyz and /metrics, runs kopf.

One HTTP server on --host/--port answers the probes and Prometheus; kopf runs our handlers
(standalone, no kopf peering) over the namespaces in --namespaces, or cluster-wide; with
--leader-election only on the replica that holds the Lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .adapters.kube import load_api_client
from .handlers import register
from .handlers.leadership import build_elector
from .metrics import LEADER, REGISTRY
from .runtime import Runtime
from .settings import Settings, SettingsError, load_settings

log = logging.getLogger("rollout_operator")
LOST_LEADERSHIP_EXIT_CODE = 3


def build_http_app(ready: asyncio.Event) -> web.Application:
    """Liveness: the event loop answers. Readiness: kopf has started watching."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready.is_set():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="starting: kopf is not watching yet\n")

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)])
    return app


async def run_operator(
    settings: Settings, *, runtime: Runtime | None = None, stop_flag: asyncio.Event | None = None
) -> None:
    """Runs until stopped (SIGTERM/SIGINT via kopf, or `stop_flag`). With --leader-election, kopf
    starts only once this replica holds the Lease (handlers/leadership.py)."""
    ready = asyncio.Event()
    runner = web.AppRunner(build_http_app(ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("serving /healthz /readyz /metrics on %s:%d", settings.host, settings.port)
    try:
        if settings.leader_election:
            await run_elected(settings, runtime, ready, stop_flag or asyncio.Event())
        else:
            LEADER.set(1)  # alone: the only replica reconciles
            await run_kopf(settings, runtime, ready, stop_flag)
    finally:
        await runner.cleanup()


async def run_kopf(
    settings: Settings, runtime: Runtime | None, ready: asyncio.Event, stop_flag: asyncio.Event | None
) -> None:
    registry = kopf.OperatorRegistry()
    register(registry, settings, runtime)
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        ready_flag=ready,
        stop_flag=stop_flag,
    )


async def run_elected(settings: Settings, runtime: Runtime | None, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """Stands by until this replica holds the Lease, then runs kopf until stopped (and hands the
    Lease back) or until the Lease is lost: then the process ends at once, without waiting for
    kopf to wind down, so it never reconciles next to the new leader (Kubernetes restarts it)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # kopf installs its own once it runs
        loop.add_signal_handler(signum, stop.set)
    elector = build_elector(settings, load_api_client())
    leading, lost = asyncio.Event(), asyncio.Event()
    # A standby is ready: it can take over; rolling updates wait for it before stopping the leader.
    election = asyncio.create_task(elector.run(leading, lost, stop, looked=ready))
    lost_watch = asyncio.create_task(_exit_when(lost, elector.identity))
    try:
        await _first_of(leading, stop)
        if leading.is_set() and not stop.is_set():
            await run_kopf(settings, runtime, asyncio.Event(), stop)
    finally:
        stop.set()
        await election
        lost_watch.cancel()
        await elector.hand_back()


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def _exit_when(lost: asyncio.Event, identity: str) -> None:
    await lost.wait()
    log.critical("%s: exiting: another replica may already lead, and two must never reconcile at once", identity)
    logging.shutdown()
    os._exit(LOST_LEADERSHIP_EXIT_CODE)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as err:
        print(f"modelrollout-operator: {err}", file=sys.stderr)
        return 2
    kopf.configure(debug=settings.log_level == "debug", quiet=settings.log_level in ("warning", "error"))
    logging.getLogger().setLevel(settings.log_level.upper())
    if settings.log_level != "debug":
        # kopf logs "Timer 'tick' succeeded." per rollout per tick at INFO; our own logs say more.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        asyncio.run(run_operator(settings))
    except OSError as err:  # e.g. the port is taken: say which, not a traceback
        print(f"modelrollout-operator: cannot serve on {settings.host}:{settings.port}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
