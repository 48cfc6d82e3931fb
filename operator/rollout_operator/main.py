"""`modelrollout-operator`: validates settings, serves /healthz, /readyz and /metrics, runs kopf.

One HTTP server on --host/--port answers the probes and Prometheus; kopf runs our handlers
(standalone, no peering) over the namespaces in --namespaces, or cluster-wide.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Sequence

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .handlers import register
from .metrics import REGISTRY
from .runtime import Runtime
from .settings import Settings, SettingsError, load_settings

log = logging.getLogger("rollout_operator")


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


async def run_operator(settings: Settings, *, runtime: Runtime | None = None,
                       stop_flag: asyncio.Event | None = None) -> None:
    """Runs until stopped (SIGTERM/SIGINT via kopf, or `stop_flag`)."""
    ready = asyncio.Event()
    runner = web.AppRunner(build_http_app(ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("serving /healthz /readyz /metrics on %s:%d", settings.host, settings.port)
    registry = kopf.OperatorRegistry()
    register(registry, settings, runtime)
    try:
        await kopf.operator(registry=registry, standalone=True, clusterwide=not settings.namespaces,
                            namespaces=list(settings.namespaces), ready_flag=ready, stop_flag=stop_flag)
    finally:
        await runner.cleanup()


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
        print(f"modelrollout-operator: cannot serve on {settings.host}:{settings.port}: {err}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
