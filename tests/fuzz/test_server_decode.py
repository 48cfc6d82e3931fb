"""Fuzz tier, model server: property-based fuzzing (Hypothesis) of the decode path through the real HTTP app.

Requests go through the whole ASGI application (gate, allow-list, fast path, KServe model, pipeline) with
a tiny recognizer: v2 JSON tensors, binary-extension bodies, v1 instances, WAV/PCM payloads, byte-level
mutations of the seed corpus (tests/fuzz/corpus/server, replayed every run), hostile paths, methods and
headers. Properties, for every input:
  - never a 5xx, and never counted as outcome="server_error";
  - a 4xx is a JSON object {"error": "<non-empty message>"};
  - bounded work: the clips and audio seconds a request gets answered stay within the per-request limits,
    and no request raises the process's peak memory by more than a fixed bound.
Bounded by example counts (MODELROLLOUT_FUZZ_SERVER_EXAMPLES); a failing input is saved to the corpus.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import resource
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from speech_serving.server.app import build_app
from tests.support.speech_fixtures import make_speech_model, write_tiny_recognizer

pytestmark = pytest.mark.fuzz

CORPUS_DIR = Path(__file__).resolve().parent / "corpus" / "server"
SEEDS = sorted(CORPUS_DIR.glob("*.json"))
# ~1000 requests take 60-90 s on the shared 2-core machine (each accepted one runs the real VAD)
FUZZ_EXAMPLES = int(os.environ.get("MODELROLLOUT_FUZZ_SERVER_EXAMPLES", "1000"))
VERSION = "fuzz-v1"
V1, V2 = "/v1/models/speech-commands:predict", "/v2/models/speech-commands/infer"
MAX_BYTES = 256 * 1024
LIMITS = dict(max_clip_seconds=2.0, max_clips_per_request=4, max_request_audio_seconds=3.0, max_request_bytes=MAX_BYTES)
# How far one request may raise the process's peak memory (ru_maxrss): the parsed JSON of a body under
# MAX_BYTES and the arrays made from it, never anything per clip beyond the limits ([20000, 1] took 2 GB).
MAX_PEAK_GROWTH_KB = 64 * 1024
OUTCOMES: Counter[str] = Counter()
FAILED: list[dict] = []


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = make_speech_model(
        write_tiny_recognizer(tmp_path_factory.mktemp("m") / "tiny.onnx"), model_version=VERSION, **LIMITS
    )
    loop = asyncio.new_event_loop()
    yield build_app(model), loop
    loop.close()


def fuzz_summary() -> str:
    """Saves the last failing input as a seed, then counts the requests (printed by tests/fuzz/conftest.py)."""
    if FAILED:  # Hypothesis replays the shrunk failing example last: that one becomes a regression seed
        doc = FAILED[-1]
        name = "found-" + hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12] + ".json"
        (CORPUS_DIR / name).write_text(json.dumps(doc, ensure_ascii=False) + "\n")
    statuses: Counter[str] = Counter()
    for key, n in OUTCOMES.items():
        statuses[key.split(":")[1]] += n
    return (
        f"server decode fuzz: {sum(OUTCOMES.values())} requests, by status "
        f"{dict(sorted(statuses.items()))}; by surface {dict(sorted(OUTCOMES.items()))}"
    )


def _metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, {"model": "speech-commands", "version": VERSION, **labels}) or 0.0


def _answered() -> tuple[float, float, float]:
    server_errors = sum(
        _metric("speech_requests_total", protocol=p, outcome="server_error", slice=s)
        for p in ("v1", "v2")
        for s in ("none", "other")  # the fuzzed server has no slice allow-list: every request is one of these
    )
    return server_errors, _metric("speech_audio_seconds_total"), _metric("speech_input_duration_seconds_count")


async def _call(app, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes):
    sent, chunks = [], [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    index = [0]

    async def receive():
        if index[0] >= len(chunks):
            return {"type": "http.disconnect"}
        index[0] += 1
        return {"type": "http.request", "body": chunks[index[0] - 1], "more_body": index[0] < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def check_request(served, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes, surface: str) -> int:
    """Send one request and assert the properties; returns the status."""
    app, loop = served
    doc = {
        "why": f"found by the fuzzer ({surface})",
        "method": method,
        "path": path,
        "headers_base64": [[base64.b64encode(k).decode(), base64.b64encode(v).decode()] for k, v in headers],
        "body_base64": base64.b64encode(body).decode(),
    }
    before = _answered()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        # wait_for only turns a hang into a failure; it is no latency bound
        status, raw = loop.run_until_complete(asyncio.wait_for(_call(app, method, path, headers, body), 60))
        peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        after = _answered()
        OUTCOMES[f"{surface}:{status}"] += 1
        assert status < 500, f"{status} for client input: {raw[:300]!r}"
        assert after[0] == before[0], "counted as server_error"
        answer = json.loads(raw) if status >= 400 or path != "/metrics" else None
        if status >= 400:
            assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], raw[:300]
        assert after[1] - before[1] <= LIMITS["max_request_audio_seconds"] + 1e-6, "answered more audio than allowed"
        assert after[2] - before[2] <= LIMITS["max_clips_per_request"], "answered more clips than allowed"
        assert peak_growth < MAX_PEAK_GROWTH_KB, f"one request raised peak memory by {peak_growth} kB"
    except BaseException:
        if surface != "corpus":  # a failing seed is already in the corpus
            FAILED.append(doc)
        raise
    return status


# --- the seed corpus: replayed every run, each with its expected status ---------------------------------------------


def load_seed(path: Path) -> tuple[str, str, list[tuple[bytes, bytes]], bytes, int | None]:
    doc = json.loads(path.read_text())
    if "headers_base64" in doc:  # written by the fuzzer: exact bytes
        headers = [(base64.b64decode(k), base64.b64decode(v)) for k, v in doc["headers_base64"]]
        return doc["method"], doc["path"], headers, base64.b64decode(doc["body_base64"]), doc.get("expect")
    body = b""
    if "body_json" in doc:
        body = json.dumps(doc["body_json"]).encode()
    elif "body_base64" in doc:
        body = base64.b64decode(doc["body_base64"])
    json_length = str(len(body))
    body += base64.b64decode(doc.get("binary_base64", ""))
    headers = [(k.lower().encode(), (json_length if v == "auto" else v).encode()) for k, v in doc["headers"].items()]
    if not any(k == b"content-length" for k, _ in headers):
        headers.append((b"content-length", str(len(body)).encode()))
    return doc["method"], doc["path"], headers, body, doc.get("expect")


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_seed_corpus_replays_with_its_expected_status(served, path):
    method, url, headers, body, expect = load_seed(path)
    status = check_request(served, method, url, headers, body, "corpus")
    if expect is not None:
        assert status == expect


# --- generated inputs -----------------------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        "audio",
        "AUDIO",
        "\x00",
        "é",
        "\u202e",
        "\ud800",
        "a" * 300,
        "null",
        "1e999",
        "NaN",
        "-0",
        "BYTES",
        "INT16",
        "FP32",
        "int16",
        "FP64",
        "UINT8",
        "BOOL",
        " INT16",
    ]
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-40000, 40000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, 32767, -32768, 32768, 1.5, 1e308, -1e-320, 2**63, 2**64]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, HOSTILE_TEXT, st.text(max_size=12))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=10,
)
SHAPES = st.one_of(
    st.lists(st.integers(0, 5000), min_size=0, max_size=3),
    st.lists(st.one_of(st.integers(-(2**66), 2**66), st.booleans(), st.floats(), st.text(max_size=3)), max_size=3),
    JSON,
)


@st.composite
def audio_bytes(draw) -> bytes:
    """WAV files with hostile header fields, raw PCM, and bytes that are neither."""
    samples = draw(st.one_of(st.binary(max_size=64), st.integers(0, 40000).map(lambda n: b"\x01\x02" * n)))
    kind = draw(st.sampled_from(["wav", "pcm", "random"]))
    if kind != "wav":
        return samples
    tag = draw(st.sampled_from([1, 3, 0xFFFE, 0, 2, 65535]))
    channels = draw(st.sampled_from([1, 0, 2, 65535]))
    rate = draw(st.sampled_from([16000, 8000, 0, 2**32 - 1]))
    bits = draw(st.sampled_from([16, 32, 8, 0, 24]))
    fmt_size = draw(st.sampled_from([16, 18, 40, 2, 0, 2**32 - 1]))
    data_size = draw(st.one_of(st.just(len(samples)), st.integers(0, 2**32 - 1)))
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * 2 % 2**32, 2, bits) + draw(st.binary(max_size=24))
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE" + b"fmt " + struct.pack("<I", fmt_size)
    body = header + fmt + b"data" + struct.pack("<I", data_size) + samples
    return body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def tensor_data(draw, datatype: str, shape) -> object:
    count = 1
    if isinstance(shape, list) and all(type(d) is int and 0 <= d <= 5000 for d in shape):
        count = int(np.prod(shape)) if shape else 1
    count = min(count, 20000)
    choice = draw(st.sampled_from(["fit", "fit", "list", "json", "nested"]))
    if choice == "fit" and datatype == "BYTES":
        return [draw(st.one_of(audio_bytes().map(b64), SCALARS)) for _ in range(min(count, 6))]
    if choice == "fit":
        # Hypothesis draws short lists only; a drawn pattern repeated to the shape's size stands in for audio
        element = st.floats(-1.5, 1.5) if datatype == "FP32" else st.one_of(st.integers(-33000, 33000), SCALARS)
        pattern = draw(st.lists(element, min_size=1, max_size=8))
        return (pattern * (count // len(pattern) + 1))[: count - draw(st.sampled_from([0, 0, 0, 1]))]
    if choice == "list":
        return draw(st.lists(SCALARS, max_size=8))
    if choice == "nested":
        return [draw(st.lists(NUMBERS, max_size=4)) for _ in range(draw(st.integers(0, 3)))]
    return draw(JSON)


@st.composite
def v2_tensor(draw) -> dict:
    datatype = draw(st.one_of(st.sampled_from(["BYTES", "INT16", "FP32"]), HOSTILE_TEXT, JSON))
    shape = draw(SHAPES)
    tensor = {
        "name": draw(st.one_of(st.just("audio"), HOSTILE_TEXT, JSON)),
        "datatype": datatype,
        "shape": shape,
        "data": draw(tensor_data(datatype if isinstance(datatype, str) else "INT16", shape)),
    }
    for key in draw(st.sets(st.sampled_from(["name", "datatype", "shape", "data"]), max_size=1)):
        del tensor[key]
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.one_of(JSON, st.fixed_dictionaries({"binary_data_size": NUMBERS})))
    return tensor


@st.composite
def v2_json_requests(draw) -> tuple[str, str, list, bytes]:
    body = {"inputs": draw(st.lists(v2_tensor(), min_size=0, max_size=2))}
    for key in ("id", "parameters", "outputs"):
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(JSON)
    if draw(st.integers(0, 9)) == 0:
        body = draw(JSON)
    raw = json.dumps(body).encode()
    return "POST", V2, [(b"content-type", b"application/json")], raw


@st.composite
def v2_binary_requests(draw) -> tuple[str, str, list, bytes]:
    tensors, raw = [], b""
    for _ in range(draw(st.integers(1, 2))):
        datatype = draw(st.sampled_from(["BYTES", "INT16", "FP32", "FP64"]))
        if datatype == "BYTES":
            elements = draw(st.lists(audio_bytes(), max_size=5))
            data = b"".join(struct.pack("<I", len(e)) + e for e in elements)
            data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
            shape = draw(st.one_of(st.just([len(elements)]), SHAPES))
            # a length prefix that lies about what follows, sometimes
            if data and draw(st.booleans()):
                data = struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + data[4:]
        else:
            n = draw(st.integers(0, 40000))
            scale = draw(st.sampled_from([0.5, 2.0, np.nan, np.inf]))
            with np.errstate(invalid="ignore"):  # inf * sin(0) is NaN on purpose
                data = (
                    np.arange(n, dtype=np.int16)
                    if datatype == "INT16"
                    else (np.sin(np.arange(n, dtype=np.float32)) * scale).astype("<f4")
                ).tobytes()
            shape = draw(st.one_of(st.just([1, n]), st.just([n]), SHAPES))
        size = draw(st.one_of(st.just(len(data)), NUMBERS, JSON))
        tensors.append(
            {"name": "audio", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}
        )
        raw += data
    header = json.dumps({"inputs": tensors}).encode()
    length = draw(
        st.one_of(
            st.just(str(len(header)).encode()),
            st.integers(-5, len(header) + 10).map(lambda v: str(v).encode()),
            st.text(max_size=4).map(lambda t: t.encode("utf-8", "surrogatepass")),
            st.sampled_from(["\u00b2".encode(), "\u0661".encode(), b"1e2", b" 10", b"0x10", b"+5"]),
        )
    )
    trailing = draw(st.sampled_from([b"", b"", b"junk"]))
    headers = [(b"content-type", b"application/octet-stream"), (b"inference-header-content-length", length)]
    return "POST", V2, headers, header + raw + trailing


@st.composite
def v1_requests(draw) -> tuple[str, str, list, bytes]:
    instances = draw(
        st.lists(
            st.one_of(
                audio_bytes().map(lambda b: {"audio_b64": b64(b)}),
                st.fixed_dictionaries({"audio_b64": st.one_of(SCALARS, JSON)}),
                JSON,
            ),
            max_size=6,
        )
    )
    body = {"instances": instances} if draw(st.integers(0, 9)) else draw(JSON)
    content_type = draw(
        st.sampled_from([b"application/json", b"text/plain", b"", b"application/x-www-form-urlencoded"])
    )
    return "POST", V1, [(b"content-type", content_type)], json.dumps(body).encode()


SEED_REQUESTS = [load_seed(p)[:4] for p in SEEDS]


@st.composite
def mutated_seeds(draw) -> tuple[str, str, list, bytes]:
    """A seed request with its body bytes flipped, cut, duplicated or spliced with another seed."""
    method, path, headers, body = draw(st.sampled_from(SEED_REQUESTS))
    body = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup", "splice"]))
        at = draw(st.integers(0, len(body)))
        if op == "flip" and body:
            body[min(at, len(body) - 1)] = draw(st.integers(0, 255))
        elif op == "cut":
            del body[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            body[at:at] = draw(
                st.sampled_from(
                    [
                        b"[",
                        b"]",
                        b"{",
                        b"}",
                        b",",
                        b'"',
                        b"\\u0000",
                        b"null",
                        b"1e999",
                        b"-",
                        b"\xff",
                        b"\x00",
                        b"99999999999999999999",
                    ]
                )
            )
        elif op == "dup":
            body[at:at] = body[at : at + draw(st.integers(1, 2048))]
        else:
            other = draw(st.sampled_from(SEED_REQUESTS))[3]
            body[at:] = other[draw(st.integers(0, len(other))) :]
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    return method, path, headers, bytes(body)


SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "v1",
            "v2",
            "models",
            "speech-commands",
            "infer",
            "ready",
            "versions",
            "repository",
            "load",
            "unload",
            "index",
            "health",
            "live",
            "metrics",
            "speech-commands:predict",
            "speech-commands:explain",
            "..",
            ".",
            "",
            "%2F",
            "openai",
            "docs",
        ]
    ),
    st.text(max_size=8),
)


@st.composite
def hostile_routes(draw) -> tuple[str, str, list, bytes]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "BREW"]))
    segments = draw(st.lists(SEGMENTS, max_size=6))
    path = draw(
        st.one_of(
            st.sampled_from(
                [
                    V1,
                    V2,
                    "/v2/health/ready",
                    "/v2/health/live",
                    "/metrics",
                    "/v2/models/speech-commands",
                    "/v1/models/speech-commands",
                ]
            ),
            st.just("/" + "/".join(segments)),
        )
    )
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"content-type",
                        b"content-length",
                        b"x-user-id",
                        b"inference-header-content-length",
                        b"accept",
                        b"transfer-encoding",
                    ]
                ),
                st.binary(max_size=12),
            ),
            max_size=3,
        )
    )
    _, _, _, body = draw(st.sampled_from(SEED_REQUESTS))
    return method, path, headers, body


def _fuzz(served, request, surface: str) -> None:
    method, path, headers, body = request
    check_request(served, method, path, headers, body, surface)


SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@settings(SETTINGS, max_examples=FUZZ_EXAMPLES * 3 // 10)
@given(request=v2_json_requests())
def test_v2_json_bodies(served, request):
    _fuzz(served, request, "v2-json")


@settings(SETTINGS, max_examples=FUZZ_EXAMPLES * 2 // 10)
@given(request=v2_binary_requests())
def test_v2_binary_extension_bodies(served, request):
    _fuzz(served, request, "v2-binary")


@settings(SETTINGS, max_examples=FUZZ_EXAMPLES * 2 // 10)
@given(request=v1_requests())
def test_v1_bodies_and_audio_payloads(served, request):
    _fuzz(served, request, "v1")


@settings(SETTINGS, max_examples=FUZZ_EXAMPLES * 2 // 10)
@given(request=mutated_seeds())
def test_mutated_seed_bodies(served, request):
    _fuzz(served, request, "mutated")


@settings(SETTINGS, max_examples=FUZZ_EXAMPLES // 10)
@given(request=hostile_routes())
def test_paths_methods_and_headers(served, request):
    _fuzz(served, request, "routes")
