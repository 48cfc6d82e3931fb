"""The server's HTTP application in-process (real KServe endpoints, real pipeline, httpx ASGI transport).

Both protocols answer per the API contract; every bad-input class gets its 4xx and a message; serving goes on.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from speech_serving.audio import encode_wav
from speech_serving.server.app import build_app
from tests.support.speech_fixtures import LABELS, b64, make_speech_model, v2_body, write_tiny_recognizer

pytestmark = pytest.mark.unit
VERSION = "test-server-v7"
V1 = "/v1/models/speech-commands:predict"
V2 = "/v2/models/speech-commands/infer"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    path = write_tiny_recognizer(tmp_path_factory.mktemp("m") / "tiny.onnx")
    return build_app(make_speech_model(path, model_version=VERSION, max_clip_seconds=2.0, max_request_bytes=200_000))


def count(protocol: str, outcome: str) -> float:
    labels = {"model": "speech-commands", "version": VERSION, "protocol": protocol, "outcome": outcome, "slice": "none"}
    return REGISTRY.get_sample_value("speech_requests_total", labels) or 0.0


async def test_v1_predict_answers_label_confidence_segments(client, word):
    resp = await client.post(V1, json={"instances": [{"audio_b64": b64(encode_wav(word))}]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-version"] == VERSION
    (pred,) = resp.json()["predictions"]
    assert pred["label"] in LABELS and 0 < pred["confidence"] <= 1
    (seg,) = pred["segments"]
    assert set(seg) == {"start_s", "end_s", "label", "confidence"} and seg["start_s"] < seg["end_s"]


async def test_v1_accepts_raw_pcm_and_several_instances_without_json_content_type(client, word):
    body = json.dumps({"instances": [{"audio_b64": b64(word.tobytes())}, {"audio_b64": b64(bytes(64000))}]})
    resp = await client.post(V1, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    assert len(preds) == 2 and preds[1]["label"] == "_silence_" and preds[1]["segments"] == []


async def test_v2_bytes_tensor_answers_per_contract(client, word):
    resp = await client.post(V2, json=v2_body("BYTES", [2], [b64(encode_wav(word)), b64(bytes(64000))]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == VERSION and body["id"]
    outputs = {o["name"]: o for o in body["outputs"]}
    assert (outputs["label"]["datatype"], outputs["label"]["shape"]) == ("BYTES", [2])
    assert (outputs["confidence"]["datatype"], outputs["confidence"]["shape"]) == ("FP32", [2])
    assert outputs["label"]["data"][0] in LABELS and outputs["label"]["data"][1] == "_silence_"
    assert len(json.loads(outputs["segments"]["data"][0])) == 1


async def test_v2_int16_fp32_and_binary_tensors_agree(client, word):
    as_int = await client.post(V2, json=v2_body("INT16", [1, len(word)], word.tolist()))
    as_float = await client.post(V2, json=v2_body("FP32", [len(word)], (word / 32768.0).tolist()))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "audio",
                    "datatype": "INT16",
                    "shape": [1, len(word)],
                    "parameters": {"binary_data_size": word.nbytes},
                }
            ]
        }
    ).encode()
    as_binary = await client.post(
        V2,
        content=header + word.astype("<i2").tobytes(),
        headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
    )
    answers = []
    for resp in (as_int, as_float, as_binary):
        assert resp.status_code == 200, resp.text
        outputs = {o["name"]: o["data"] for o in resp.json()["outputs"]}
        answers.append((outputs["label"][0], round(outputs["confidence"][0], 4)))
    assert answers[0] == answers[1] == answers[2]


def binary_header(word: np.ndarray, size: int | None = None) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "audio",
                    "datatype": "INT16",
                    "shape": [1, len(word)],
                    "parameters": {"binary_data_size": word.nbytes if size is None else size},
                }
            ]
        }
    ).encode()


def binary_body(word: np.ndarray) -> bytes:
    return binary_header(word) + word.astype("<i2").tobytes()


def binary_headers(word: np.ndarray) -> dict:
    return {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(binary_header(word))),
    }


async def test_binary_extension_errors_name_the_problem(client, word):
    resp = await client.post(
        V2, content=binary_body(word), headers={**binary_headers(word), "inference-header-content-length": "x1"}
    )
    assert (
        resp.status_code == 400
        and "inference-header-content-length: expected the JSON header's byte length" in resp.text
    )
    header = binary_header(word, size=word.nbytes + 10)
    resp = await client.post(
        V2,
        content=header + word.tobytes(),
        headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
    )
    assert resp.status_code == 400
    assert f"binary_data_size not within the {word.nbytes} binary bytes left" in resp.json()["error"]


BAD_REQUESTS = [
    (
        "not audio",
        V1,
        {"instances": [{"audio_b64": b64(b"definitely not a sound file, just words")}]},
        400,
        "instances[0].audio_b64: not audio: looks like text",
    ),
    ("not base64", V1, {"instances": [{"audio_b64": "%%%"}]}, 400, "instances[0].audio_b64: not valid base64"),
    ("no instances", V1, {"inputs": []}, 400, "instances: expected a non-empty list"),
    (
        "wrong sample rate",
        V1,
        {"instances": [{"audio_b64": b64(encode_wav(np.zeros(800, np.int16), rate=8000))}]},
        400,
        "wrong sample rate 8000 Hz, expected 16000 Hz",
    ),
    ("empty", V1, {"instances": [{"audio_b64": ""}]}, 400, "empty audio"),
    ("too long", V2, v2_body("INT16", [40000], [0] * 40000), 400, "audio too long: 2.50 s, limit is 2 s"),
    (
        "wrong dtype",
        V2,
        v2_body("FP64", [3], [0.0, 0.1, 0.2]),
        400,
        "wrong datatype FP64, expected BYTES, INT16 or FP32",
    ),
    (
        "int16 out of range",
        V2,
        v2_body("INT16", [2], [1, 70000]),
        400,
        "INT16 values must lie in -32768..32767, got 1..70000",
    ),
    ("wrong shape", V2, v2_body("INT16", [1, 2, 2], [0, 0, 0, 0]), 400, "wrong shape [1, 2, 2]"),
    ("shape/data mismatch", V2, v2_body("INT16", [5], [1, 2]), 400, "data does not fit shape [5]"),
    (
        "two inputs",
        V2,
        {"inputs": [v2_body("INT16", [1], [0])["inputs"][0]] * 2},
        400,
        "expected exactly one input tensor named 'audio', got 2",
    ),
    ("unknown model", "/v2/models/speech-nope/infer", v2_body("INT16", [1], [0]), 404, "speech-nope"),
    ("unknown model v1", "/v1/models/speech-nope:predict", {"instances": []}, 404, "speech-nope"),
]


@pytest.mark.parametrize(("name", "path", "body", "status", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_input_gets_4xx_naming_the_problem_and_is_counted(client, word, name, path, body, status, message):
    protocol = "v1" if path.startswith("/v1") else "v2"
    before = count(protocol, "client_error"), count(protocol, "ok")
    resp = await client.post(path, json=body)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]
    assert resp.headers["x-model-version"] == VERSION
    assert count(protocol, "client_error") == before[0] + 1
    ok = await client.post(V1, json={"instances": [{"audio_b64": b64(word.tobytes())}]})  # still serving
    assert ok.status_code == 200


async def test_nan_is_rejected_in_binary_tensors_and_json(client):
    samples = np.array([0.1, np.nan, 0.2], dtype="<f4")
    header = json.dumps(
        {
            "inputs": [
                {"name": "audio", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": samples.nbytes}}
            ]
        }
    ).encode()
    resp = await client.post(
        V2,
        content=header + samples.tobytes(),
        headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
    )
    assert resp.status_code == 400 and "audio contains NaN or Inf samples" in resp.json()["error"]
    # JSON has no NaN: such a body is not JSON at all
    body = b'{"inputs":[{"name":"audio","datatype":"FP32","shape":[3],"data":[0.1,NaN,0.2]}]}'
    resp = await client.post(V2, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "request body: not valid JSON" in resp.json()["error"]


async def test_malformed_json_is_a_client_error(client):
    before = count("v2", "client_error")
    resp = await client.post(V2, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "request body: not valid JSON" in resp.json()["error"]
    assert count("v2", "client_error") == before + 1
    resp = await client.post(V1, content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "request body: not valid JSON" in resp.json()["error"]
    resp = await client.post(V2, json={"inputs": [{"name": "audio", "datatype": "INT16", "shape": [1]}]})
    assert resp.status_code == 400 and "inputs[0].data: missing or not a list" in resp.json()["error"]
    resp = await client.post(V2, json={"outputs": []})
    assert resp.status_code == 400 and "expected a JSON object with an 'inputs' list" in resp.json()["error"]


async def test_kserve_rest_path_without_the_fast_path_gives_the_same_answers(app, word, tmp_path):
    """The fast path is an optimisation only: KServe's own endpoints must answer identically."""
    plain = build_app(
        make_speech_model(write_tiny_recognizer(tmp_path / "t.onnx"), model_version=VERSION), fast_path=False
    )
    v1 = {"instances": [{"audio_b64": b64(encode_wav(word))}]}
    v2 = v2_body("INT16", [1, len(word)], word.tolist())
    answers = []
    for target in (app, plain):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=target), base_url="http://s") as c:
            r1, r2 = await c.post(V1, json=v1), await c.post(V2, json=v2)
            bad = await c.post(V2, json=v2_body("FP64", [1], [0.0]))
            binary = await c.post(V2, content=binary_body(word), headers=binary_headers(word))
            assert binary.json()["outputs"] == r2.json()["outputs"]
        assert r1.headers["x-model-version"] == r2.headers["x-model-version"] == VERSION
        outputs = {o["name"]: o["data"] for o in r2.json()["outputs"]}
        answers.append(
            (
                r1.json()["predictions"],
                outputs["label"],
                outputs["segments"],
                r2.json()["model_version"],
                bad.status_code,
                bad.json()["error"],
            )
        )
    assert answers[0] == answers[1]


async def test_oversized_body_gets_413_before_decoding(client):
    before = count("v1", "client_error")
    resp = await client.post(V1, content=b"x" * 200_001, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert "larger than the limit of 200000 bytes" in resp.json()["error"]
    assert count("v1", "client_error") == before + 1


async def test_health_metadata_and_version_header_everywhere(client):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/speech-commands/ready",
        "/v1/models/speech-commands",
    ):
        resp = await client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["x-model-version"] == VERSION
    meta = (await client.get("/v2/models/speech-commands")).json()
    assert meta["name"] == "speech-commands"
    assert [o["name"] for o in meta["outputs"]] == ["label", "confidence", "segments"]
    assert (await client.get("/v2/models/nope/ready")).status_code == 404


async def test_metadata_from_the_public_model_api_is_the_answer_kserve_itself_gives(tmp_path):
    """routes.py builds metadata from kserve.Model (name, get_input_types, get_output_types), not through
    KServe's DataPlane; the answer must stay exactly the one KServe's own v2 endpoint gives."""
    from kserve import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse

    model = make_speech_model(write_tiny_recognizer(tmp_path / "t.onnx"), model_version=VERSION)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(model)), base_url="http://s") as c:
        resp = await c.get("/v2/models/speech-commands")
    repository = ModelRepository()
    repository.update(model)
    kserve_answer = await DataPlane(model_registry=repository).model_metadata(model.name)
    expected = ModelMetadataResponse.model_validate(kserve_answer).model_dump(mode="json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert list(resp.json().items()) == list(expected.items())


def test_settings_flags_beat_env_and_empty_model_uri_means_the_version():
    from speech_serving.server.config import parse_settings, resolve_model_uri

    env = {"SPEECH_SERVER_MODEL_VERSION": "v1", "SPEECH_SERVER_PORT": "9000", "SPEECH_SERVER_MAX_BATCH": "4"}
    settings = parse_settings(["--port", "9100"], environ=env)
    assert (settings.model_version, settings.port, settings.max_batch) == ("v1", 9100, 4)
    assert resolve_model_uri(settings.effective_model_uri).name == "v1.onnx"
    explicit = parse_settings(["--model-version", "v1", "--model-uri", "builtin:v2"], environ={})
    assert resolve_model_uri(explicit.effective_model_uri).name == "v2.onnx"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "0"], {}, "--port=0 is invalid; expected a TCP port 1..65535"),
        (["--max-clip-seconds", "-1"], {}, "--max-clip-seconds=-1.0 is invalid"),
        ([], {"SPEECH_SERVER_PORT": "eighty"}, "SPEECH_SERVER_PORT='eighty' is not a valid int"),
        (["--model-name", "a/b"], {}, "--model-name='a/b' is invalid"),
        (["--model-version", "v42"], {}, "model 'builtin:v42' (--model-uri, or builtin:<--model-version>"),
        (["--model-uri", "/nonexistent/m.onnx"], {}, "--model-uri='/nonexistent/m.onnx': file not found"),
        (["--log-level", "loud"], {}, "--log-level='loud' is invalid; expected debug, info, warning or error"),
    ],
)
def test_invalid_settings_exit_with_a_message_naming_the_flag(argv, env, message):
    from speech_serving.server.config import parse_settings

    with pytest.raises(SystemExit) as err:
        parse_settings(argv, environ=env)
    assert message in str(err.value)


class RecordingPipeline:
    """Same interface as SpeechPipeline.run_batch; answers the clip length as label, records batch sizes."""

    def __init__(self, fail: bool = False):
        import threading

        self.batches: list[int] = []
        self.fail = fail
        self.release = threading.Event()

    def run_batch(self, clips):
        from speech_serving.pipeline import ClipResult, StageTimes

        self.release.wait(timeout=10)  # hold the first batch so the others queue behind it
        self.batches.append(len(clips))
        if self.fail:
            raise RuntimeError("recognizer exploded")
        return [ClipResult(str(len(c)), 0.5, (), len(c) / 16000, 0.0) for c in clips], StageTimes()


async def test_adaptive_batcher_groups_queued_requests_and_routes_answers_back():
    import asyncio

    from speech_serving.server.batching import AdaptiveBatcher

    pipe = RecordingPipeline()
    batcher = AdaptiveBatcher(pipe, max_batch=4, threads=1)
    clips = [[np.zeros(n, np.float32)] for n in range(100, 110)]
    tasks = [asyncio.create_task(batcher.submit(c)) for c in clips]
    await asyncio.sleep(0.05)
    pipe.release.set()
    answers = await asyncio.gather(*tasks)
    assert [a[0][0].label for a in answers] == [str(n) for n in range(100, 110)]
    assert pipe.batches[0] == 1 and max(pipe.batches) == 4 and sum(pipe.batches) == 10
    assert all(size <= 4 for size in pipe.batches)
    batcher.close()


async def test_pipeline_failure_is_a_500_counted_as_server_error_and_serving_goes_on(tmp_path, word):
    model = make_speech_model(write_tiny_recognizer(tmp_path / "t.onnx"), model_version="fails-v1")
    failing = RecordingPipeline(fail=True)
    failing.release.set()
    real_batcher = model.batcher
    from speech_serving.server.batching import AdaptiveBatcher

    model.batcher = AdaptiveBatcher(failing, threads=1)
    labels = {
        "model": "speech-commands",
        "version": "fails-v1",
        "protocol": "v1",
        "outcome": "server_error",
        "slice": "none",
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(model)), base_url="http://s") as c:
        resp = await c.post(V1, json={"instances": [{"audio_b64": b64(word.tobytes())}]})
        assert resp.status_code == 500 and "recognizer exploded" in resp.json()["error"]
        assert resp.headers["x-model-version"] == "fails-v1"
        assert REGISTRY.get_sample_value("speech_requests_total", labels) == 1
        model.batcher = real_batcher
        resp = await c.post(V1, json={"instances": [{"audio_b64": b64(word.tobytes())}]})
        assert resp.status_code == 200
