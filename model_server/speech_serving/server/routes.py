"""The server's HTTP surface as an allow-list: inference, health, metadata and /metrics, nothing else.

KServe's RESTServer registers its whole REST surface (model-repository load/unload, explain, model lists,
versioned paths, OpenAI): one `POST /v2/repository/models/<name>/unload` took a pod out of service while
readiness still said 200. Here every served route is listed once; the gate answers 404/405 to the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelRepository
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v1_endpoints import V1Endpoints
from kserve.protocol.rest.v2_endpoints import V2Endpoints

_MODEL = r"(?P<model>[^/]+)"
_V1_MODEL = r"(?P<model>[^/:]+)"  # so GET /v1/models/<name>:predict is a wrong method, not a model name


@dataclass(frozen=True)
class Route:
    """One served method and path; `model` in the pattern is the model name the path addresses."""

    method: str
    pattern: re.Pattern
    shown: str  # how the route is named in error messages and docs


ROUTES: tuple[Route, ...] = (
    Route("POST", re.compile(rf"/v2/models/{_MODEL}/infer"), "POST /v2/models/<name>/infer"),
    Route("POST", re.compile(rf"/v1/models/{_MODEL}:predict"), "POST /v1/models/<name>:predict"),
    Route("GET", re.compile(r"/v2/health/live"), "GET /v2/health/live"),
    Route("GET", re.compile(r"/v2/health/ready"), "GET /v2/health/ready"),
    Route("GET", re.compile(rf"/v2/models/{_MODEL}/ready"), "GET /v2/models/<name>/ready"),
    Route("GET", re.compile(rf"/v2/models/{_MODEL}"), "GET /v2/models/<name>"),
    Route("GET", re.compile(rf"/v1/models/{_V1_MODEL}"), "GET /v1/models/<name>"),
    Route("GET", re.compile(r"/metrics"), "GET /metrics"),
)
SERVED = ", ".join(r.shown for r in ROUTES)


@dataclass(frozen=True)
class RouteMatch:
    """What the allow-list says about a request: its route (None = not served) and the model it names."""

    route: Route | None
    model: str | None = None
    allowed: tuple[str, ...] = ()  # methods the path is served with, when the method was wrong


def match_route(method: str, path: str) -> RouteMatch:
    allowed = []
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found is None:
            continue
        if route.method == method:
            return RouteMatch(route, found.groupdict().get("model"))
        allowed.append(route.method)
    return RouteMatch(None, None, tuple(dict.fromkeys(allowed)))


def compute_not_served(method: str, path: str, match: RouteMatch) -> tuple[int, str]:
    """The status and message for a request the allow-list refuses."""
    if match.allowed:
        return 405, f"method {method} is not allowed on {path!r}; use {' or '.join(match.allowed)}"
    return 404, f"path {path!r} is not served; this server answers {SERVED} (nothing else)"


def build_fastapi_app(model, kserve_inference: bool = False) -> FastAPI:
    """Health and metadata for the allow-listed routes, from the public `kserve.Model` API only.

    Inference is answered by the fast path (fastpath.py). With `kserve_inference` (the fast path off, a
    test option) it goes through KServe's own REST endpoints instead, so tests can compare the two.

    Health is answered here, not by KServe: KServe's readiness is "every model in the registry is ready",
    which is true of an empty registry, so it stayed 200 after the model was unloaded.
    """
    app = FastAPI(title="speech-server", docs_url=None, redoc_url=None, openapi_url=None)

    def health(answer: dict):
        async def endpoint(model_name: str | None = None):
            problem = model.serving_problem()
            if problem is not None:
                return JSONResponse(status_code=503, content={"error": f"model {model.name!r} cannot serve: {problem}"})
            return answer

        return endpoint

    async def model_metadata(model_name: str):
        return JSONResponse(compute_model_metadata(model))

    app.add_api_route("/v2/health/live", health({"live": True}), methods=["GET"])
    app.add_api_route("/v2/health/ready", health({"ready": True}), methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/ready", health({"name": model.name, "ready": True}), methods=["GET"])
    app.add_api_route("/v1/models/{model_name}", health({"name": model.name, "ready": True}), methods=["GET"])
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    if kserve_inference:
        add_kserve_inference_routes(app, model)
    for exc_type, status in (
        (InvalidInput, 400),
        (RequestValidationError, 400),
        (ModelNotFound, 404),
        (ModelNotReady, 503),
    ):
        app.add_exception_handler(exc_type, _error_handler(status))
    return app


def compute_model_metadata(model) -> dict:
    """The v2 model metadata answer: the fields and order KServe's own endpoint gives (it leaves `versions`
    null and `platform` empty; a test compares this with KServe's answer)."""
    return {
        "name": model.name,
        "versions": None,
        "platform": "",
        "inputs": model.get_input_types(),
        "outputs": model.get_output_types(),
    }


def add_kserve_inference_routes(app: FastAPI, model) -> None:
    """KServe's reference inference endpoints for the two inference routes (the fast path's yardstick).

    The one use of KServe internals: DataPlane and V1Endpoints/V2Endpoints are not underscored but not
    documented either, and KServe's only public way to serve them (ModelServer) registers its whole REST
    surface. pyproject pins kserve to 0.21.x, and test_server_hostile.py checks the shape used here.
    """
    repository = ModelRepository()
    repository.update(model)
    dataplane = DataPlane(model_registry=repository)
    v1, v2 = V1Endpoints(dataplane), V2Endpoints(dataplane)
    app.add_api_route("/v2/models/{model_name}/infer", v2.infer, methods=["POST"], response_model=None)
    app.add_api_route("/v1/models/{model_name}:predict", v1.predict, methods=["POST"], response_model=None)


def _error_handler(status: int):
    async def handler(_, exc):
        # KServe's own handlers log a traceback at ERROR for every bad request; a client error is not ours.
        return JSONResponse(status_code=status, content={"error": str(exc)})

    return handler
