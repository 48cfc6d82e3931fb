"""The HTTP application: KServe's v1/v2 endpoints for a SpeechModel, behind a small ASGI gate.

The gate sets x-model-version on every response, bounds request bodies and counts outcomes per protocol.
"""

from __future__ import annotations

import logging
import time

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, disable_created_metrics, generate_latest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput, ModelNotFound
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from speech_serving.metrics import ServerMetrics
from speech_serving.server.fastpath import FastInference
from speech_serving.server.model import SpeechModel

log = logging.getLogger("speech_serving.server")
VERSION_HEADER = b"x-model-version"


def compute_protocol(method: str, path: str) -> str | None:
    """Which inference protocol a request path uses (None for health, metadata, /metrics)."""
    if method != "POST":
        return None
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return "v1"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2"
    return None


def compute_outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


class InferenceGate:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a queue per request)."""

    def __init__(self, app, metrics: ServerMetrics, version: str, max_request_bytes: int,
                 fast: FastInference | None = None):
        self.app = app
        self.fast = fast
        self.metrics = metrics
        self.version_header = (VERSION_HEADER, version.encode())
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        protocol = compute_protocol(scope["method"], scope["path"])
        status = [500]

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [self.version_header]
            await send(message)

        if scope["path"] == "/metrics" and scope["method"] == "GET":
            return await _send_metrics(send_with_version)
        if protocol is None:
            return await self.app(scope, receive, send_with_version)
        start = time.perf_counter()
        try:
            body = await self._read_body(scope, receive)
            if body is None:
                await self._reject_too_large(send_with_version)
            elif self.fast is not None and self.fast.is_handled(scope):
                await self.fast.handle(scope, body, send_with_version)
            else:
                await self.app(scope, _replay(body), send_with_version)
        finally:
            self.metrics.count_request(protocol, compute_outcome(status[0]))
            self.metrics.observe_stage("total", time.perf_counter() - start)

    async def _read_body(self, scope, receive) -> bytes | None:
        """The whole body, or None when it is larger than allowed (checked before reading when declared)."""
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_request_bytes:
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _reject_too_large(self, send) -> None:
        body = orjson.dumps({"error": f"request body larger than the limit of {self.max_request_bytes} bytes "
                                      "(--max-request-bytes); send shorter clips or fewer per request"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def _send_metrics(send) -> None:
    # Always the classic text format, even when a scraper asks for OpenMetrics: OpenMetrics forbids the
    # negative `_sum` of speech_input_level_dbfs (dBFS levels are negative), and strict parsers then
    # drop the whole scrape. The classic format allows it, and Prometheus falls back to it.
    body = generate_latest(REGISTRY)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes):
    sent = [False]

    async def receive():
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _client_error(_, exc):
    # KServe's own handler logs a full traceback at ERROR for every bad request; a client error is not ours.
    log.info("rejected request: %s", exc)
    status = 404 if isinstance(exc, ModelNotFound) else 400
    return JSONResponse(status_code=status, content={"error": str(exc)})


def build_app(model: SpeechModel, fast_path: bool = True) -> InferenceGate:
    """KServe's REST endpoints (v1, v2, health, metadata, /metrics) for one loaded model, wrapped in the gate."""
    if not model.ready:
        model.load()
    # *_created series double every counter/histogram on /metrics and no rollout query reads them.
    disable_created_metrics()
    repository = ModelRepository()
    repository.update(model)
    dataplane = DataPlane(model_registry=repository)
    extension = ModelRepositoryExtension(model_registry=repository)
    app = FastAPI(title="speech-server", docs_url=None, redoc_url=None)
    # RESTServer only builds a uvicorn config here; we reuse its endpoint and error wiring, not its server,
    # because it always binds 0.0.0.0 and we must bind --host.
    rest = RESTServer("speech_serving", dataplane, extension, http_port=model.settings.port)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    app.add_exception_handler(InvalidInput, _client_error)
    app.add_exception_handler(ModelNotFound, _client_error)
    fast = FastInference(model) if fast_path else None
    return InferenceGate(app, model.metrics, model.version, model.settings.max_request_bytes, fast)


def build_uvicorn_server(model: SpeechModel) -> uvicorn.Server:
    s = model.settings
    config = uvicorn.Config(
        build_app(model), host=s.host, port=s.port, log_config=None, access_log=False,
        log_level=s.log_level, timeout_graceful_shutdown=10, lifespan="off",
    )
    return uvicorn.Server(config)
