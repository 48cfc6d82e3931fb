"""Slices at the model server (issue 15 part 1): the request slice, level and duration bands, the labels they
put on the metrics and the answer headers the router reads (x-slice, x-predictions, x-model-labels, x-request-id).

Both protocols on both paths (the fast path and KServe's reference endpoints), and hostile slice headers.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from speech_serving.audio import compute_duration_band, compute_level_band
from speech_serving.server.app import build_app
from speech_serving.server.config import parse_settings
from speech_serving.server.slices import SlicePolicy
from tests.support.speech_fixtures import LABELS, b64, make_speech_model, v2_body, write_tiny_recognizer

pytestmark = pytest.mark.unit
V1 = "/v1/models/speech-commands:predict"
V2 = "/v2/models/speech-commands/infer"
ALLOWED = ("clean", "young", "noisy", "other_mic", "silence")
SLICE_VALUES = {*ALLOWED, "none", "other"}
PATHS = ["fast", "reference"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_recognizer(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def apps(model_path):
    """One server per path, each its own version label so their metrics stay apart."""
    return {
        path: build_app(
            make_speech_model(model_path, model_version=f"slices-{path}", slices=ALLOWED), fast_path=path == "fast"
        )
        for path in PATHS
    }


def v1_body(clips: list[np.ndarray]) -> dict:
    return {"instances": [{"audio_b64": b64(c.astype("<i2").tobytes())} for c in clips]}


def answer_labels(resp: httpx.Response) -> list[str]:
    body = resp.json()
    if "predictions" in body:
        return [p["label"] for p in body["predictions"]]
    return next(o["data"] for o in body["outputs"] if o["name"] == "label")


async def post(app, path: str, body: dict, headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://speech") as client:
        return await client.post(path, json=body, headers=headers or [])


def requests_count(version: str, protocol: str, outcome: str, slice_: str) -> float:
    labels = {"model": "speech-commands", "version": version, "protocol": protocol, "outcome": outcome}
    return REGISTRY.get_sample_value("speech_requests_total", {**labels, "slice": slice_}) or 0.0


def predictions_by(version: str, label: str) -> dict[str, float]:
    """speech_predictions_total of one version summed by one of its labels."""
    summed: dict[str, float] = {}
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == "speech_predictions_total" and s.labels["version"] == version:
                summed[s.labels[label]] = summed.get(s.labels[label], 0.0) + s.value
    return summed


# -- settings ----------------------------------------------------------------------------------------------------


def test_slice_settings_default_flag_and_environment():
    default = parse_settings([], environ={})
    assert (default.slice_header, default.slices) == ("x-slice", ())
    assert default.slice_policy.values == ("none", "other")
    from_flags = parse_settings(["--slices", "clean, young,,noisy", "--slice-header", "X-Cohort"], environ={})
    assert from_flags.slices == ("clean", "young", "noisy")
    assert from_flags.slice_policy == SlicePolicy("x-cohort", ("clean", "young", "noisy"))
    env = {"SPEECH_SERVER_SLICES": "young", "SPEECH_SERVER_SLICE_HEADER": "x-group"}
    assert parse_settings([], environ=env).slice_policy == SlicePolicy("x-group", ("young",))
    assert parse_settings(["--slices", "noisy"], environ=env).slices == ("noisy",)  # flags win


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--slice-header", "x slice"], "--slice-header='x slice' is invalid; expected an HTTP header name"),
        (["--slice-header", "x-slice:"], "--slice-header='x-slice:' is invalid"),
        (["--slice-header", ""], "--slice-header='' is invalid"),
        (["--slice-header", "Content-Length"], "that the server does not use itself"),
        (["--slice-header", "x-request-id"], "--slice-header='x-request-id' is invalid"),
        (["--slices", "Young"], "--slices='Young' is invalid; expected a comma-separated list of at most 16"),
        (["--slices", "clean,-young"], "'-young' is not one"),
        (["--slices", "clean,none"], "'none' is not one"),
        (["--slices", "other"], "not none or other"),
        (["--slices", "a" * 33], "[a-z0-9][a-z0-9_-]{0,31}"),
        (
            ["--slices", "clean,clean"],
            "--slices='clean,clean' is invalid; expected a comma-separated list of at most 16 distinct",
        ),
        (["--slices", ",".join(f"s{i}" for i in range(17))], "at most 16 distinct slice names"),
        (["--slices", "young,üng"], "'üng' is not one"),
    ],
)
def test_invalid_slice_settings_exit_naming_the_flag_and_what_is_expected(argv, message):
    with pytest.raises(SystemExit) as err:
        parse_settings(argv, environ={})
    assert message in str(err.value)


def test_sixteen_slices_of_thirty_two_characters_are_accepted():
    names = [f"{i:02d}" + "x" * 30 for i in range(16)]
    assert parse_settings(["--slices", ",".join(names)], environ={}).slices == tuple(names)


# -- the request's slice and id (pure) ---------------------------------------------------------------------------

POLICY = SlicePolicy("x-slice", ALLOWED)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], "none"),
        ([b"young"], "young"),
        ([b"YOUNG"], "young"),
        ([b"Other_Mic"], "other_mic"),
        ([b"elderly"], "other"),
        ([b""], "other"),
        ([b"none"], "other"),  # a client cannot claim the reserved values either
        ([b"young,noisy"], "other"),
        ([b"young", b"young"], "other"),  # two headers are ambiguous, even when they agree
        ([b"young\x00"], "other"),
        ([b"you\nng"], "other"),
        ([b"young "], "other"),
        (["yöung".encode()], "other"),
        ([b"\xff\xfe"], "other"),
        ([b"young" * 200_000], "other"),
        ([b"x"] * 10_000, "other"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_the_request_slice_is_an_allow_listed_value_none_or_other(values, expected):
    assert POLICY.compute_slice(values) == expected


@pytest.mark.parametrize(
    ("ids", "echoed"),
    [
        ([b"a"], b"a"),
        ([b"Req-1.2_3:4"], b"Req-1.2_3:4"),
        ([b"f" * 128], b"f" * 128),
        ([b"f" * 129], None),
        ([b""], None),
        ([b"id with space"], None),
        ([b"id\r\nx-evil: 1"], None),
        ([b"id/1"], None),
        (["idé".encode()], None),
        ([b"a", b"b"], None),
        ([], None),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_only_exactly_one_valid_request_id_is_echoed(ids, echoed):
    headers = [(b"x-request-id", i) for i in ids] + [(b"x-slice", b"young")]
    assert POLICY.compute_request_labels(headers) == ("young", echoed)


def test_the_gate_replaces_every_slice_header_with_its_decision_and_leaves_the_others():
    headers = [(b"x-slice", b"young"), (b"content-type", b"application/json"), (b"x-slice", b"noisy")]
    assert POLICY.compute_normalized_headers(headers, "other") == [
        (b"content-type", b"application/json"),
        (b"x-slice", b"other"),
    ]
    assert POLICY.compute_normalized_headers(headers, "none") == [(b"content-type", b"application/json")]
    # the model reads the gate's decision back unchanged, whatever it was
    for decided in SLICE_VALUES:
        normalized = dict((k.decode(), v.decode()) for k, v in POLICY.compute_normalized_headers(headers, decided))
        assert POLICY.compute_model_slice(normalized) == decided


@pytest.mark.parametrize(
    ("dbfs", "band"),
    [(-120.0, "silent"), (-60.01, "silent"), (-60.0, "quiet"), (-40.01, "quiet"), (-40.0, "normal")]
    + [(-20.01, "normal"), (-20.0, "loud"), (0.0, "loud"), (3.0, "loud")],
)
def test_level_band_cut_points(dbfs, band):
    assert compute_level_band(dbfs) == band


@pytest.mark.parametrize(
    ("seconds", "band"),
    [(0.0, "short"), (0.499, "short"), (0.5, "medium"), (1.0, "medium"), (1.5, "medium"), (1.5001, "long")]
    + [(30.0, "long")],
)
def test_duration_band_cut_points(seconds, band):
    assert compute_duration_band(seconds) == band


def test_the_shipped_clips_land_in_the_documented_bands():
    """The cut points were chosen from the shipped clips (docs/model-server.md says so): every clip is a 1 s
    keyword (medium), none is silent, most are normal and every non-silence slice has quiet clips."""
    from speech_serving.audio import compute_level_dbfs
    from speech_serving.clips import SLICES, load_clip_arrays

    arrays = load_clip_arrays()
    bands = {s: {"silent": 0, "quiet": 0, "normal": 0, "loud": 0} for s in SLICES}
    for audio, slice_ in zip(arrays.audio, arrays.slices, strict=True):
        clip = audio.astype(np.float32) / 32768.0
        assert compute_duration_band(len(clip) / 16000) == "medium"
        bands[str(slice_)][compute_level_band(compute_level_dbfs(clip))] += 1
    assert all(b["silent"] == 0 for b in bands.values())
    total = {band: sum(b[band] for b in bands.values()) for band in ("quiet", "normal", "loud")}
    assert total["normal"] > 0.7 * sum(total.values())
    assert all(bands[s]["quiet"] > 0 for s in SLICES if s != "silence")


# -- answers over HTTP: both protocols, both paths ---------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("protocol", ["v1", "v2"])
async def test_an_answer_carries_slice_predictions_model_labels_and_the_request_id(apps, word, path, protocol):
    version = f"slices-{path}"
    silence = np.zeros(32000, np.int16)  # 2 s: a recording the VAD finds no speech in is _silence_
    body = v1_body([word, silence])
    if protocol == "v2":
        body = v2_body("BYTES", [2], [i["audio_b64"] for i in body["instances"]])
    before = requests_count(version, protocol, "ok", "young")
    resp = await post(
        apps[path], V1 if protocol == "v1" else V2, body, [("x-slice", "Young"), ("x-request-id", "req-42.a:b_c")]
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-slice"] == "young"
    assert resp.headers["x-predictions"].split(",") == answer_labels(resp) and len(answer_labels(resp)) == 2
    assert answer_labels(resp)[1] == "_silence_"
    assert resp.headers["x-model-labels"] == ",".join(LABELS)
    assert resp.headers["x-request-id"] == "req-42.a:b_c"
    assert requests_count(version, protocol, "ok", "young") == before + 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("protocol", ["v1", "v2"])
async def test_sixty_four_clips_get_sixty_four_predictions_in_order(apps, word, path, protocol):
    # alternate the word (scored whole) and 1.6 s of digital silence (no VAD speech: _silence_), 90 s in all
    clips = [word if i % 2 == 0 else np.zeros(25600, np.int16) for i in range(64)]
    body = v1_body(clips)
    if protocol == "v1":
        resp = await post(apps[path], V1, body, [("x-slice", "noisy")])
    else:
        resp = await post(apps[path], V2, v2_body("BYTES", [64], [i["audio_b64"] for i in body["instances"]]))
    assert resp.status_code == 200, resp.text
    labels = answer_labels(resp)
    assert len(labels) == 64 and resp.headers["x-predictions"].split(",") == labels
    assert set(labels[1::2]) == {"_silence_"} and "_silence_" not in labels[0::2]
    assert resp.headers["x-slice"] == ("noisy" if protocol == "v1" else "none")
    assert "x-request-id" not in resp.headers


@pytest.mark.parametrize("path", PATHS)
async def test_predictions_and_confidence_are_counted_in_the_slice_and_bands(model_path, word, path):
    version = f"bands-{path}"
    app = build_app(make_speech_model(model_path, model_version=version, slices=ALLOWED), fast_path=path == "fast")
    quiet = (word * 0.05).astype(np.int16)  # about -27 dBFS - 26 dB = -53 dBFS: quiet
    long_silence = np.zeros(32000, np.int16)  # 2 s of digital silence: silent and long
    short = word[4000:10000]  # 0.375 s
    assert (await post(app, V1, v1_body([word, quiet]), [("x-slice", "young")])).status_code == 200
    assert (await post(app, V1, v1_body([long_silence, short]), [("x-slice", "nope")])).status_code == 200
    body = v2_body("BYTES", [1], [v1_body([word])["instances"][0]["audio_b64"]])
    assert (await post(app, V2, body)).status_code == 200
    groups: dict[tuple[str, str, str], float] = {}
    confidence: dict[tuple[str, str, str], float] = {}
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.labels.get("version") != version or "level_band" not in s.labels:
                continue
            key = (s.labels["slice"], s.labels["level_band"], s.labels["duration_band"])
            if s.name == "speech_predictions_total":
                groups[key] = groups.get(key, 0.0) + s.value
            elif s.name == "speech_confidence_count":
                confidence[key] = s.value
    assert {k: v for k, v in groups.items() if v} == {
        ("young", "normal", "medium"): 1,
        ("young", "quiet", "medium"): 1,
        ("other", "silent", "long"): 1,
        ("other", "normal", "short"): 1,
        ("none", "normal", "medium"): 1,
    }
    assert confidence == {k: v for k, v in groups.items() if v}
    # every slice x band x answer label exists from the start, so a per-slice rate has its zero
    assert len(groups) == len(SLICE_VALUES) * 4 * 3
    assert set(predictions_by(version, "label")) == set(LABELS)


async def test_a_client_error_is_counted_in_its_slice_and_answers_x_slice(apps):
    version = "slices-fast"
    before = requests_count(version, "v1", "client_error", "clean")
    resp = await post(apps["fast"], V1, {"instances": [{"audio_b64": "%%"}]}, [("x-slice", "clean")])
    assert resp.status_code == 400 and resp.headers["x-slice"] == "clean"
    assert "x-predictions" not in resp.headers
    assert requests_count(version, "v1", "client_error", "clean") == before + 1


async def call_asgi(app, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict, dict]:
    """One request straight into the ASGI app with raw header bytes (what a lenient HTTP server could pass)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    answer_headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    body_bytes = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], answer_headers, json.loads(body_bytes)


HOSTILE = {
    "huge": [(b"x-slice", b"young" * 100_000)],
    "control characters": [(b"x-slice", b"young\r\nx-slice: clean\x00")],
    "many values": [(b"x-slice", b"young")] * 1000,
    "two disagreeing": [(b"x-slice", b"young"), (b"x-slice", b"clean")],
    "unlisted": [(b"x-slice", b"premium-users")],
    "latin-1": [(b"x-slice", "yöung".encode("latin-1"))],
    "reserved": [(b"x-slice", b"none")],
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("protocol", ["v1", "v2"])
@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
async def test_hostile_slice_headers_are_other_everywhere_and_the_answer_is_served(apps, word, path, protocol, case):
    """The gate decides once: the answer header, the request count and the predictions agree, on both paths
    (KServe's dict(headers) keeps the first of repeated headers on v2 and the last on v1)."""
    version = f"slices-{path}"
    clip = b64(word.astype("<i2").tobytes())
    body = {"instances": [{"audio_b64": clip}]} if protocol == "v1" else v2_body("BYTES", [1], [clip])
    hostile_ids = [(b"x-request-id", b"r" * 10_000), (b"x-request-id", b"ok-id")]
    before = requests_count(version, protocol, "ok", "other"), predictions_by(version, "slice")
    status, headers, _ = await call_asgi(
        apps[path], V1 if protocol == "v1" else V2, HOSTILE[case] + hostile_ids, json.dumps(body).encode()
    )
    assert status == 200
    assert headers["x-slice"] == "other" and "x-request-id" not in headers
    assert requests_count(version, protocol, "ok", "other") == before[0] + 1
    after = predictions_by(version, "slice")
    assert after["other"] == before[1]["other"] + 1
    assert set(after) == SLICE_VALUES  # the label's values stay the allow-list plus none and other


async def test_label_cardinality_is_bounded_by_the_allow_list(model_path, word):
    version = "slices-cardinality"
    app = build_app(make_speech_model(model_path, model_version=version, slices=("young",)))
    clip = b64(word.astype("<i2").tobytes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://speech") as client:
        for i in range(20):
            resp = await client.post(V1, json={"instances": [{"audio_b64": clip}]}, headers={"x-slice": f"user-{i}"})
            assert resp.status_code == 200 and resp.headers["x-slice"] == "other"
        text = (await client.get("/metrics")).text
    seen = {
        s.labels["slice"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("version") == version and "slice" in s.labels
    }
    assert seen == {"young", "none", "other"}


async def test_a_configured_slice_header_is_read_and_the_answer_still_says_x_slice(model_path, word):
    app = build_app(
        make_speech_model(model_path, model_version="slices-cohort", slice_header="x-cohort", slices=ALLOWED)
    )
    body = v1_body([word])
    resp = await post(app, V1, body, [("X-Cohort", "young")])
    assert resp.headers["x-slice"] == "young"
    resp = await post(app, V1, body, [("x-slice", "young")])  # not the configured header
    assert resp.headers["x-slice"] == "none"


async def test_x_model_labels_adds_silence_when_the_model_lacks_it(tmp_path, word):
    labels = ["_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "maybe"]
    path = write_tiny_recognizer(tmp_path / "nosilence.onnx", labels=labels)
    app = build_app(make_speech_model(path, model_version="slices-nosilence"))
    resp = await post(app, V1, v1_body([word]))
    assert resp.headers["x-model-labels"] == ",".join([*labels, "_silence_"])  # the server answers it anyway


@pytest.mark.parametrize("bad", ["turn on", "a,b", "x" * 65, "naïve", ""])
def test_a_model_whose_labels_cannot_travel_in_a_header_is_refused_at_load(tmp_path, bad):
    labels = [*LABELS[:-1], bad]
    path = write_tiny_recognizer(tmp_path / "badlabel.onnx", labels=labels)
    with pytest.raises(ValueError, match="cannot be sent in the x-predictions header") as err:
        make_speech_model(path, model_version="slices-badlabel")
    assert repr(bad) in str(err.value)


def test_the_operator_lets_a_spec_set_the_slice_flags():
    from rollout_operator.domain import PodPolicy, parse_spec
    from tests.support.domain_sim import CANARY

    spec = {**CANARY, "server": {**CANARY.get("server", {}), "args": ["--slices=clean,young", "--slice-header=x-g"]}}
    parsed = parse_spec(spec, name="speech", namespace="models", policy=PodPolicy())
    assert parsed.server.args == ("--slices=clean,young", "--slice-header=x-g")
