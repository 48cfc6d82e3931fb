"""The HTTP application: the allow-listed routes (routes.py) for one SpeechModel, behind a small ASGI gate.

The gate refuses paths outside the allow-list, bounds request bodies, sets x-model-version on every
response, decides each inference request's slice (and echoes a valid x-request-id) and counts outcomes.
"""

from __future__ import annotations

import logging
import time

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, disable_created_metrics, generate_latest

from speech_serving.metrics import ServerMetrics
from speech_serving.server.fastpath import FastInference
from speech_serving.server.model import SpeechModel
from speech_serving.server.routes import build_fastapi_app, compute_not_served, match_route
from speech_serving.server.slices import REQUEST_ID_HEADER, SlicePolicy

log = logging.getLogger("speech_serving.server")
VERSION_HEADER = b"x-model-version"
SLICE_HEADER = b"x-slice"  # the answer's header naming the request's slice, whatever --slice-header is
# Idle keep-alive connections stay open this long (KServe's own server uses 65 s, uvicorn's default is 5 s). The
# router closes idle backend connections after 60 s (--upstream-idle-timeout) so that it, not the server, ends
# them: with uvicorn's 5 s a POST sent on a connection the server was closing got a reset and a 502 (never retried).
KEEP_ALIVE_SECONDS = 65


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

    def __init__(
        self,
        app,
        metrics: ServerMetrics,
        model_name: str,
        version: str,
        max_request_bytes: int,
        fast: FastInference | None,
        slices: SlicePolicy,
    ):
        self.app = app
        self.fast = fast
        self.metrics = metrics
        self.model_name = model_name
        self.version_header = (VERSION_HEADER, version.encode())
        self.max_request_bytes = max_request_bytes
        self.slices = slices

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        protocol = compute_protocol(method, path)
        status = [500]
        added = [self.version_header]
        slice_ = ""
        if protocol is not None:
            slice_, request_id = self.slices.compute_request_labels(scope["headers"])
            scope = {**scope, "headers": self.slices.compute_normalized_headers(scope["headers"], slice_)}
            added.append((SLICE_HEADER, slice_.encode()))
            if request_id is not None:
                added.append((REQUEST_ID_HEADER, request_id))

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + added
            await send(message)

        start = time.perf_counter()
        try:
            await self._dispatch(scope, receive, send_with_version, method, path, protocol)
        finally:
            if protocol is not None:
                self.metrics.count_request(protocol, compute_outcome(status[0]), slice_)
                self.metrics.observe_stage("total", time.perf_counter() - start)

    async def _dispatch(self, scope, receive, send, method: str, path: str, protocol: str | None) -> None:
        match = match_route(method, path)
        if match.route is None:
            code, message = compute_not_served(method, path, match)
            headers = [(b"allow", ", ".join(match.allowed).encode())] if code == 405 else []
            return await send_error(send, code, message, headers)
        if match.model is not None and match.model != self.model_name:
            return await send_error(
                send, 404, f"model {match.model!r} is not served here; this server serves {self.model_name!r}"
            )
        if path == "/metrics":
            return await _send_metrics(send)
        if protocol is None:
            return await self.app(scope, receive, send)
        body = await self._read_body(scope, receive)
        if body is None:
            await send_error(
                send,
                413,
                f"request body larger than the limit of {self.max_request_bytes} bytes "
                "(--max-request-bytes); send shorter clips or fewer per request",
            )
        elif self.fast is not None:
            await self.fast.handle(scope, body, send)
        else:
            await self.app(scope, _replay(body), send)

    async def _read_body(self, scope, receive) -> bytes | None:
        """The whole body, or None as soon as it is larger than allowed (before reading it when declared)."""
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


async def send_error(send, status: int, message: str, headers: list | None = None) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_metrics(send) -> None:
    # Always the classic text format, even when a scraper asks for OpenMetrics: OpenMetrics forbids the
    # negative `_sum` of speech_input_level_dbfs (dBFS levels are negative), and strict parsers then
    # drop the whole scrape. The classic format allows it, and Prometheus falls back to it.
    body = generate_latest(REGISTRY)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes):
    sent = [False]

    async def receive():
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def build_app(model: SpeechModel, fast_path: bool = True) -> InferenceGate:
    """The allow-listed endpoints (routes.py) for one loaded model, wrapped in the gate."""
    if not model.ready:
        model.load()
    if model.metrics is None:
        raise RuntimeError(f"model {model.name!r} is ready without metrics; SpeechModel.load() makes them")
    # *_created series double every counter/histogram on /metrics and no rollout query reads them.
    disable_created_metrics()
    app = build_fastapi_app(model, kserve_inference=not fast_path)
    fast = FastInference(model) if fast_path else None
    return InferenceGate(
        app, model.metrics, model.name, model.version, model.settings.max_request_bytes, fast, model.slices
    )


def build_uvicorn_server(model: SpeechModel) -> uvicorn.Server:
    s = model.settings
    config = uvicorn.Config(
        build_app(model),
        host=s.host,
        port=s.port,
        log_config=None,
        access_log=False,
        log_level=s.log_level,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        lifespan="off",
    )
    return uvicorn.Server(config)
