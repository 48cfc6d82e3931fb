"""The model server against hostile or careless clients: an allow-listed surface, per-request limits, 4xx for mistakes.

Each test here reproduces a finding from a review of main (issue 12); every one failed before its fix.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from speech_serving.server.app import build_app
from tests.support.speech_fixtures import b64, make_speech_model, v2_body, write_tiny_recognizer

pytestmark = pytest.mark.unit
VERSION = "hostile-v1"
V1 = "/v1/models/speech-commands:predict"
V2 = "/v2/models/speech-commands/infer"
MAX_BYTES = 400_000
# Small limits so the bounds are cheap to reach: 3 clips, 2 s per clip, 3 s per request, 400 kB per body.
LIMITS = dict(max_clip_seconds=2.0, max_clips_per_request=3, max_request_audio_seconds=3.0, max_request_bytes=MAX_BYTES)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_recognizer(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def app(model_path):
    return build_app(make_speech_model(model_path, model_version=VERSION, **LIMITS))


def binary_request(tensor: dict, raw: bytes, trailing: bytes = b"") -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{**tensor, "name": "audio", "parameters": {"binary_data_size": len(raw)}}]})
    return header.encode() + raw + trailing, {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def count(protocol: str, outcome: str, version: str = VERSION) -> float:
    labels = {"model": "speech-commands", "version": version, "protocol": protocol, "outcome": outcome, "slice": "none"}
    return REGISTRY.get_sample_value("speech_requests_total", labels) or 0.0


async def call_asgi(app, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]):
    """One request straight through the ASGI app (raw header bytes, a chunked body); returns status, body, reads."""
    reads, sent = [0], []

    async def receive():
        reads[0] += 1
        index = reads[0] - 1
        if index >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), reads[0]


# --- the surface: inference, health, metadata and metrics only -------------------------------------------------

NOT_SERVED = [
    ("POST", "/v2/repository/models/speech-commands/unload"),  # answered 200 and took the model out of service
    ("POST", "/v2/repository/models/speech-commands/load"),
    ("POST", "/v2/repository/index"),
    ("POST", "/v1/models/speech-commands:explain"),  # 501
    ("POST", "/v2/models/speech-commands/versions/v2/infer"),  # 501, counted as server_error
    ("GET", "/v2/models/speech-commands/versions/v2/ready"),  # 501
    ("GET", "/v2/models/speech-commands/versions/v2"),  # 501
    ("GET", "/v1/models"),
    ("GET", "/v2/models"),
    ("GET", "/"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/openai/v1/completions"),
    ("POST", V2 + "/"),
    ("GET", "/metrics/"),
]


@pytest.mark.parametrize(("method", "path"), NOT_SERVED, ids=[f"{m} {p}" for m, p in NOT_SERVED])
async def test_paths_outside_the_allow_list_get_404_naming_what_is_served(client, method, path):
    resp = await client.request(method, path)
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert f"path {path!r} is not served" in error and "POST /v2/models/<name>/infer" in error
    assert resp.headers["x-model-version"] == VERSION


async def test_unload_is_refused_and_the_model_keeps_serving_and_stays_ready(client, word):
    before = count("v2", "server_error")
    assert (await client.post("/v2/repository/models/speech-commands/unload")).status_code == 404
    assert (await client.post("/v2/models/speech-commands/versions/v2/infer", json={})).status_code == 404
    for _ in range(3):  # before: 500, 500, then a hang (wait_for turns it into a failure; no latency bound)
        resp = await asyncio.wait_for(client.post(V2, json=v2_body("INT16", [len(word)], word.tolist())), 60)
        assert resp.status_code == 200, resp.text
    assert (await client.get("/v2/health/ready")).status_code == 200
    assert count("v2", "server_error") == before


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", V2, "POST"),
        ("PUT", V1, "POST"),
        ("POST", "/metrics", "GET"),
        ("DELETE", "/v2/health/ready", "GET"),
        ("GET", "/v1/models/speech-commands:predict", "POST"),
    ],
)
async def test_a_wrong_method_on_a_served_path_gets_405_and_allow(client, method, path, allow):
    resp = await client.request(method, path)
    assert resp.status_code == 405 and resp.headers["allow"] == allow
    assert resp.json()["error"] == f"method {method} is not allowed on {path!r}; use {allow}"


@pytest.mark.parametrize("fast_path", [True, False])
def test_the_fastapi_app_holds_exactly_the_allow_listed_routes(app, model_path, fast_path):
    from speech_serving.server.routes import ROUTES

    if not fast_path:
        app = build_app(make_speech_model(model_path, model_version="routes-v1"), fast_path=False)
    served = {(method, route.path) for route in app.app.routes for method in route.methods}
    shown = {tuple(r.shown.replace("<name>", "{model_name}").split(" ")) for r in ROUTES}
    # The gate answers /metrics (classic text format, see app.py) and, on the fast path, inference itself.
    by_gate = {("GET", "/metrics")} | (
        {("POST", "/v2/models/{model_name}/infer"), ("POST", "/v1/models/{model_name}:predict")} if fast_path else set()
    )
    assert served == shown - by_gate and by_gate <= shown


async def test_a_stopped_model_fails_readiness_and_liveness_and_inference_gets_503_not_a_hang(model_path, word):
    model = make_speech_model(model_path, model_version="stopped-v1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(model)), base_url="http://s") as c:
        assert (await c.get("/v2/health/ready")).status_code == 200
        model.stop()
        for path in (
            "/v2/health/ready",
            "/v2/health/live",
            "/v2/models/speech-commands/ready",
            "/v1/models/speech-commands",
        ):
            resp = await c.get(path)
            assert resp.status_code == 503, path
            assert (
                resp.json()["error"] == "model 'speech-commands' cannot serve: the model is not loaded (or was stopped)"
            )
        for _ in range(3):  # the wait_for only turns a hang into a failure; it is not a latency bound
            resp = await asyncio.wait_for(c.post(V1, json={"instances": [{"audio_b64": b64(word.tobytes())}]}), 60)
            assert resp.status_code == 503 and "cannot serve" in resp.json()["error"]
    assert count("v1", "server_error", "stopped-v1") == 3  # the server's fault, and the gate sees it


async def test_a_closed_batcher_fails_every_request_instead_of_queueing_them_forever():
    from speech_serving.server.batching import AdaptiveBatcher, BatcherClosed

    class Pipeline:
        def run_batch(self, clips):
            raise AssertionError("no batch may run after close()")

    batcher = AdaptiveBatcher(Pipeline(), max_batch=4, threads=2)
    batcher.close()
    for _ in range(3):  # before: RuntimeError twice (each leaking a worker slot), then a future never resolved
        with pytest.raises(BatcherClosed):
            await asyncio.wait_for(batcher.submit([np.zeros(10, np.float32)]), 60)


async def test_requests_queued_when_the_batcher_closes_fail_with_batcher_closed():
    import threading

    from speech_serving.server.batching import AdaptiveBatcher, BatcherClosed

    release = threading.Event()

    class Pipeline:
        def run_batch(self, clips):
            release.wait(timeout=30)
            return [], None

    batcher = AdaptiveBatcher(Pipeline(), max_batch=1, threads=1)
    running = asyncio.ensure_future(batcher.submit([np.zeros(10, np.float32)]))
    queued = asyncio.ensure_future(batcher.submit([np.zeros(10, np.float32)]))
    await asyncio.sleep(0)
    batcher.close()
    with pytest.raises(BatcherClosed):
        await asyncio.wait_for(queued, 60)
    release.set()
    await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 60)


# --- per-request limits, tested at the bound ---------------------------------------------------------------------


async def test_clips_per_request_at_the_limit_pass_and_one_more_is_refused_naming_the_limit(client, word):
    clip = word[:8000].tolist()
    ok = await client.post(V2, json=v2_body("INT16", [3, 8000], clip * 3))
    assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [3]
    over = await client.post(V2, json=v2_body("INT16", [4, 8000], clip * 4))
    assert over.status_code == 400
    assert over.json()["error"] == (
        "inputs['audio']: 4 clips in one request, limit is 3 (--max-clips-per-request); "
        "split them over several requests"
    )
    pcm = b64(word[:8000].tobytes())
    assert (await client.post(V1, json={"instances": [{"audio_b64": pcm}] * 3})).status_code == 200
    over = await client.post(V1, json={"instances": [{"audio_b64": pcm}] * 4})
    assert over.status_code == 400 and over.json()["error"].startswith("instances: 4 clips in one request, limit is 3")
    assert (await client.post(V2, json=v2_body("BYTES", [3], [pcm] * 3))).status_code == 200
    over = await client.post(V2, json=v2_body("BYTES", [4], [pcm] * 4))
    assert over.status_code == 400 and "4 clips in one request, limit is 3" in over.json()["error"]


async def test_binary_bytes_elements_beyond_the_clip_limit_are_refused_before_decoding(client, word):
    element = len(word[:8000].tobytes()).to_bytes(4, "little") + word[:8000].tobytes()
    body, headers = binary_request({"datatype": "BYTES", "shape": [3]}, element * 3)
    assert (await client.post(V2, content=body, headers=headers)).status_code == 200
    body, headers = binary_request({"datatype": "BYTES", "shape": [3]}, element * 4)
    resp = await client.post(V2, content=body, headers=headers)
    assert resp.status_code == 400
    assert "more than 3 elements; limit is 3 clips per request (--max-clips-per-request)" in resp.json()["error"]


async def test_request_audio_seconds_at_the_limit_pass_and_one_sample_more_is_refused(client):
    rng = np.random.default_rng(3)
    noise = rng.integers(-3000, 3000, 32000).astype(np.int16)  # 2 s: one clip at --max-clip-seconds
    at_limit = np.concatenate([noise, noise[:16000]])  # 3 s in total = --max-request-audio-seconds
    ok = await client.post(V2, json=v2_body("INT16", [2, 24000], at_limit.tolist()))
    assert ok.status_code == 200, ok.text
    over = np.concatenate([at_limit, noise[:2]])
    resp = await client.post(V2, json=v2_body("INT16", [2, 24001], over.tolist()))
    assert resp.status_code == 400
    assert resp.json()["error"] == (
        "request audio: 3.00 s in total, limit is 3 s per request "
        "(--max-request-audio-seconds); split the clips over several requests"
    )
    v1_ok = {"instances": [{"audio_b64": b64(noise.tobytes())}, {"audio_b64": b64(noise[:16000].tobytes())}]}
    assert (await client.post(V1, json=v1_ok)).status_code == 200
    v1_over = {"instances": [{"audio_b64": b64(noise.tobytes())}, {"audio_b64": b64(noise[:16002].tobytes())}]}
    resp = await client.post(V1, json=v1_over)
    assert resp.status_code == 400 and "(--max-request-audio-seconds)" in resp.json()["error"]


async def test_body_of_exactly_the_limit_is_read_and_one_byte_more_gets_413(client, word):
    body = json.dumps({"instances": [{"audio_b64": b64(word[:8000].tobytes())}]}).encode()
    exact = body[:-1] + b" " * (MAX_BYTES - len(body)) + b"}"  # JSON whitespace up to the limit
    assert len(exact) == MAX_BYTES
    resp = await client.post(V1, content=exact, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    resp = await client.post(V1, content=exact[:-1] + b" }", headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"].startswith(
        f"request body larger than the limit of {MAX_BYTES} bytes (--max-request-bytes)"
    )


async def test_body_limit_is_enforced_before_the_body_is_read(app):
    before = count("v2", "client_error")
    declared = [(b"content-type", b"application/json"), (b"content-length", str(MAX_BYTES + 1).encode())]
    status, body, reads = await call_asgi(app, "POST", V2, declared, [b"x" * (MAX_BYTES + 1)])
    assert (status, reads) == (413, 0)  # refused on the declared length alone: nothing read
    chunk = b" " * 160_000  # no content-length (chunked): reading stops at the chunk that crosses the limit
    status, body, reads = await call_asgi(app, "POST", V2, [(b"content-type", b"application/json")], [chunk] * 10)
    assert (status, reads) == (413, 3)
    assert "--max-request-bytes" in body["error"]
    assert count("v2", "client_error") == before + 2


async def test_twenty_thousand_one_sample_clips_are_refused_cheaply(model_path):
    """The review's attack: 120 kB of JSON, shape [20000, 1]; before, 29 s and 2 GB in the server (2 GB kept)."""
    app = build_app(make_speech_model(model_path, model_version="defaults-v1"))  # default limits
    data = np.random.default_rng(1).integers(-3000, 3000, 20000).tolist()
    body = json.dumps(v2_body("INT16", [20000, 1], data)).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        tracemalloc.start()
        try:
            resp = await c.post(V2, content=body, headers={"content-type": "application/json"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(
        "inputs['audio']: 20000 clips in one request, limit is 64 (--max-clips-per-request)"
    )
    assert peak < 20 * len(body)  # the parsed JSON and nothing per clip (each clip was a 1 s window before)
    assert count("v2", "client_error", "defaults-v1") == 1


# --- client mistakes are 4xx naming the field, counted as client_error --------------------------------------------

FOUR_BYTES = (4).to_bytes(4, "little")
MISTAKES = [
    # (name, body or (body, headers), status, message) - the first four are the review's findings (500/501 before)
    (
        "null BYTES element",
        v2_body("BYTES", [1], [None]),
        400,
        "inputs['audio'][0]: expected a base64 string of a WAV file or PCM16LE audio, got null",
    ),
    (
        "binary length prefix lies",
        binary_request({"datatype": "BYTES", "shape": [1]}, (10**6).to_bytes(4, "little") + b"\0" * 96),
        400,
        "inputs[0] (binary BYTES): element 0: length prefix says 1000000 bytes, only 96 follow",
    ),
    (
        "binary length prefix cut short",
        binary_request({"datatype": "BYTES", "shape": [1]}, b"\1\0"),
        400,
        "element 0: 2 bytes left, expected a 4-byte length prefix",
    ),
    # bytes(10**9) once allocated a gigabyte of zeros and decoded it as audio
    ("number as BYTES element", v2_body("BYTES", [1], [1_000_000_000]), 400, "got a number"),
    ("object as BYTES element", v2_body("BYTES", [1], [{"a": 1}]), 400, "got an object"),  # 500 before
    (
        "BYTES data longer than shape",
        v2_body("BYTES", [1], ["AAAA", "AAAA"]),
        400,
        "inputs['audio'].data: holds 2 elements, shape [1] needs 1",
    ),
    (
        "fractions as INT16",
        v2_body("INT16", [2], [0.5, 1.5]),
        400,  # silently truncated before
        "inputs['audio'].data: INT16 data must be integers -32768..32767, got numbers that are not integers",
    ),
    ("huge JSON integer", v2_body("INT16", [1], [10**30]), 400, "INT16 data must be integers -32768..32767"),
    (
        "true/false as FP32",
        v2_body("FP32", [2], [True, False]),
        400,  # read as 1.0 and 0.0 before
        "inputs['audio'].data: FP32 data must be numbers, got true/false",
    ),
    ("strings as FP32", v2_body("FP32", [2], ["0.1", "0.2"]), 400, "FP32 data must be numbers, got strings"),
    ("nulls as FP32", v2_body("FP32", [2], [None, None]), 400, "FP32 data must be numbers, got null"),
    ("FP32 beyond float32", v2_body("FP32", [2], [1e308, 0.0]), 400, "audio contains NaN or Inf samples"),
    ("bool in shape", v2_body("INT16", [True], [1]), 400, "inputs['audio'].shape: wrong shape [True]"),
    ("negative shape", v2_body("INT16", [-1], [1]), 400, "dimensions must be non-negative integers"),
    ("huge shape", v2_body("INT16", [10**9, 10**9], [1]), 400, "1000000000 clips in one request, limit is 3"),
    (
        "parameters not an object",
        v2_body("INT16", [1], [1], parameters=5),
        400,  # ignored before
        "parameters: expected an object, got int",
    ),
    ("id not a string", v2_body("INT16", [1], [1], id=7), 400, "id: expected a string, got int"),
    (
        "bytes after the binary tensors",
        binary_request({"datatype": "INT16", "shape": [2]}, b"\0\0\0\0", b"junk"),
        400,
        "binary data: 4 bytes after the last binary tensor",
    ),  # ignored before
    ("empty body", (b"", {"content-type": "application/json"}), 400, "request body: not valid JSON"),
    (
        "deeply nested JSON",
        (b'{"inputs":' + b"[" * 10_000 + b"]" * 10_000 + b"}", {"content-type": "application/json"}),
        400,
        "depth limit exceeded",
    ),
    (
        "NaN is not JSON",
        (
            b'{"inputs":[{"name":"audio","datatype":"FP32","shape":[1],"data":[NaN]}]}',
            {"content-type": "application/json"},
        ),
        400,
        "request body: not valid JSON",
    ),
    ("wrong content type, not JSON", (b"<xml/>", {"content-type": "application/xml"}), 400, "not valid JSON"),
]


@pytest.mark.parametrize(("name", "request_", "status", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
async def test_client_mistakes_are_4xx_naming_the_field_and_counted_as_client_error(
    client, name, request_, status, message
):
    before = count("v2", "client_error"), count("v2", "server_error")
    body, headers = (
        request_
        if isinstance(request_, tuple)
        else (json.dumps(request_).encode(), {"content-type": "application/json"})
    )
    resp = await client.post(V2, content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]
    assert (count("v2", "client_error"), count("v2", "server_error")) == (before[0] + 1, before[1])


@pytest.mark.parametrize("value", ["\u0661\u0662".encode(), b"\xb2", b"3\xb2", b"-1", b"1e3", b" 12"])
async def test_a_non_ascii_digit_in_the_binary_header_length_is_a_400(app, value):
    # '²'.isdigit() is true and int('²') raises: before, a 500 counted as server_error
    before = count("v2", "client_error"), count("v2", "server_error")
    body, _ = binary_request({"datatype": "INT16", "shape": [1]}, b"\0\0")
    headers = [(b"content-type", b"application/octet-stream"), (b"inference-header-content-length", value)]
    status, answer, _ = await call_asgi(app, "POST", V2, headers, [body])
    assert status == 400
    assert answer["error"].startswith(
        "inference-header-content-length: expected the JSON header's byte length as ASCII digits"
    )
    assert (count("v2", "client_error"), count("v2", "server_error")) == (before[0] + 1, before[1])


async def test_unknown_model_and_unicode_names_are_404_naming_the_served_model(client):
    for name in ("speech-nope", "späch", "\u202e", "a:b"):
        resp = await client.post(f"/v2/models/{name}/infer", json=v2_body("INT16", [1], [0]))
        assert resp.status_code == 404
        assert resp.json()["error"] == f"model {name!r} is not served here; this server serves 'speech-commands'"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-clips-per-request", "0"], "--max-clips-per-request=0 is invalid; expected an integer 1..10000"),
        (
            ["--max-request-audio-seconds", "10"],
            "--max-request-audio-seconds=10.0 is invalid; expected at least --max-clip-seconds (30), so one clip",
        ),
        (["--max-request-bytes", "12"], "--max-request-bytes=12 is invalid; expected at least 1024"),
    ],
)
def test_limit_settings_are_validated_naming_the_flag(argv, message):
    from speech_serving.server.config import parse_settings

    with pytest.raises(SystemExit) as err:
        parse_settings(argv, environ={})
    assert message in str(err.value)


def test_limit_defaults_and_environment_variables():
    from speech_serving.server.config import parse_settings

    defaults = parse_settings([], environ={})
    assert (
        defaults.max_clips_per_request,
        defaults.max_request_audio_seconds,
        defaults.max_request_bytes,
        defaults.max_clip_seconds,
    ) == (64, 120.0, 8 * 1024 * 1024, 30.0)
    env = {"SPEECH_SERVER_MAX_CLIPS_PER_REQUEST": "8", "SPEECH_SERVER_MAX_REQUEST_AUDIO_SECONDS": "45"}
    settings = parse_settings([], environ=env)
    assert (settings.max_clips_per_request, settings.max_request_audio_seconds) == (8, 45.0)


def test_the_kserve_endpoint_classes_routes_py_builds_on_keep_their_shape():
    """routes.py's KServe reference inference (the fast path off) uses KServe's endpoint classes (not underscored,
    not documented): pyproject pins kserve <0.22, and this fails first when an upgrade changes what it relies on."""
    import importlib.metadata
    import inspect

    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.v1_endpoints import V1Endpoints
    from kserve.protocol.rest.v2_endpoints import V2Endpoints

    def params(fn):
        return list(inspect.signature(fn).parameters)

    assert importlib.metadata.version("kserve").startswith("0.21.")
    assert params(DataPlane.__init__)[:2] == ["self", "model_registry"]
    assert params(V1Endpoints.__init__)[:2] == params(V2Endpoints.__init__)[:2] == ["self", "dataplane"]
    assert params(V1Endpoints.predict) == ["self", "model_name", "request"]
    assert params(V2Endpoints.infer)[:5] == ["self", "raw_request", "raw_response", "model_name", "request_body"]


def test_the_server_keeps_idle_connections_open_longer_than_the_router_keeps_them(model_path):
    """The router closes idle backend connections after 60 s (docs/router.md, --upstream-idle-timeout) so the
    server never closes one under a request being sent on it; uvicorn's own default, 5 s, did (a reset, a 502)."""
    from speech_serving.server.app import build_uvicorn_server

    server = build_uvicorn_server(make_speech_model(model_path, model_version="keepalive-v1"))
    assert server.config.timeout_keep_alive == 65 > 60
