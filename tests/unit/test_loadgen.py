"""speech-loadgen against a real server over loopback HTTP: counts, versions, accuracy, bounds, CLI.

The server is the real app (tiny recognizer) under uvicorn; clips are espeak-ng words with known labels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from speech_serving import loadgen
from speech_serving.loadgen import LoadSpec, compute_endpoint, parse_header, parse_mix, run_load, validate_spec
from speech_serving.server.app import build_app
from tests.support.speech_fixtures import ServedApp, make_speech_model, synthesize_word, write_tiny_recognizer

pytestmark = pytest.mark.unit
VERSION = "loadgen-v5"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    path = write_tiny_recognizer(tmp_path_factory.mktemp("m") / "tiny.onnx")
    return build_app(make_speech_model(path, model_version=VERSION))


@pytest.fixture(scope="module")
def clips() -> dict:
    yes = [(synthesize_word("yes", pad_s=0.2), "yes")]
    # longer than a keyword clip, so the VAD decides (the tiny recognizer's answers are arbitrary)
    silence = [(np.zeros(32000, dtype=np.int16), "_silence_"), (np.zeros(40000, dtype=np.int16), "_silence_")]
    return {"clean": yes, "silence": silence}


@pytest.mark.parametrize("protocol", ["v1", "v2"])
async def test_counts_versions_and_accuracy_per_slice(app, clips, protocol):
    async with ServedApp(app) as served:
        spec = LoadSpec(
            url=served.url, mix={"clean": 1, "silence": 1}, protocol=protocol, rate=0, count=16, concurrency=4, seed=3
        )
        summary = await run_load(spec, clips)
    assert summary["requests"] == 16 and summary["errors"] == 0
    assert list(summary["versions"]) == [VERSION]  # v1 learns it from x-model-version, v2 from the body
    data = summary["versions"][VERSION]
    slices = data["slices"]
    assert set(slices) == {"clean", "silence"}
    assert slices["clean"]["requests"] + slices["silence"]["requests"] == 16
    assert slices["silence"]["accuracy"] == 1.0 and slices["silence"]["labels"] == {
        "_silence_": slices["silence"]["requests"]
    }
    clean = slices["clean"]
    assert clean["correct"] == clean["labels"].get("yes", 0)  # correct means label == ground truth
    assert data["total"]["correct"] == clean["correct"] + slices["silence"]["correct"]
    assert clean["p50_ms"] > 0 and clean["p99_ms"] >= clean["p50_ms"]


async def test_errors_are_counted_under_the_answering_version(app, clips):
    async with ServedApp(app) as served:
        spec = LoadSpec(url=served.url, model_name="no-such-model", mix={"silence": 1}, rate=0, count=5)
        summary = await run_load(spec, clips)
    assert summary["errors"] == 5
    total = summary["versions"][VERSION]["total"]
    assert (total["requests"], total["errors"], total["accuracy"]) == (5, 5, None)


async def test_unreachable_url_is_errors_not_a_crash(clips):
    spec = LoadSpec(url="http://127.0.0.1:9", mix={"silence": 1}, rate=0, count=3, timeout_s=2)
    summary = await run_load(spec, clips)
    assert summary["errors"] == 3 and list(summary["versions"]) == ["unknown"]


async def test_duration_bound_stops_sending(app, clips):
    async with ServedApp(app) as served:
        spec = LoadSpec(url=served.url, mix={"silence": 1}, rate=20, duration_s=0.5)
        summary = await run_load(spec, clips)
    # open loop at 20/s for 0.5 s schedules requests at t = 0, 0.05, ... 0.45: at most 10
    assert 1 <= summary["requests"] <= 10


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LoadSpec(url="http://x", mix={"clean": 1}), "give at least one bound"),
        (LoadSpec(url="http://x", mix={"clean": 1}, count=0), "count: expected 1..100000"),
        (LoadSpec(url="http://x", mix={"clean": 1}, duration_s=7200), "duration: expected"),
        (LoadSpec(url="http://x", mix={}, count=1), "mix: expected slice=weight pairs"),
        (LoadSpec(url="http://x", mix={"clean": 1}, count=1, protocol="v3"), "protocol: expected v1 or v2"),
        (LoadSpec(url="http://x", mix={"clean": 1}, count=1, rate=-1), "rate: expected"),
        (LoadSpec(url="http://x", mix={"clean": 1}, count=1, concurrency=0), "concurrency: expected"),
    ],
)
def test_invalid_specs_are_rejected(spec, message):
    with pytest.raises(ValueError, match=message):
        validate_spec(spec)


async def test_mix_slice_without_clips_is_rejected(clips):
    with pytest.raises(ValueError, match=r"mix: no clips for slice\(s\) \['noisy'\]"):
        await run_load(LoadSpec(url="http://x", mix={"noisy": 1}, count=1), clips)


def test_cli_parsers_and_endpoints():
    assert parse_mix("clean=3,noisy=1,silence") == {"clean": 3.0, "noisy": 1.0, "silence": 1.0}
    with pytest.raises(ValueError, match="unknown slice 'loud'"):
        parse_mix("loud=1")
    with pytest.raises(ValueError, match="weight for 'clean' must be a number"):
        parse_mix("clean=lots")
    assert parse_header("x-user-id: 42") == ("x-user-id", "42")
    with pytest.raises(ValueError, match="expected 'Name: value'"):
        parse_header("nocolon")
    assert (
        compute_endpoint(LoadSpec(url="http://h:1/", mix={}, protocol="v2"))
        == "http://h:1/v2/models/speech-commands/infer"
    )
    full = "http://h:1/v1/models/m:predict"
    assert compute_endpoint(LoadSpec(url=full, mix={})) == full


def test_cli_reports_usage_errors_with_exit_code_2(capsys):
    assert loadgen.main(["--url", "http://127.0.0.1:9", "--mix", "loud"]) == 2
    assert "--mix: unknown slice 'loud'" in capsys.readouterr().err
    assert loadgen.main(["--url", "http://127.0.0.1:9"]) == 2
    assert "give at least one bound" in capsys.readouterr().err


def test_report_table_lists_each_version_and_slice():
    summary = {
        "requests": 2,
        "endpoint": "e",
        "wall_seconds": 1.0,
        "achieved_rps": 2.0,
        "errors": 0,
        "versions": {
            "v1": {
                "total": {
                    "requests": 2,
                    "errors": 0,
                    "accuracy": 0.5,
                    "p50_ms": 3.0,
                    "p99_ms": 4.0,
                    "mean_confidence": 0.9,
                },
                "slices": {
                    "noisy": {
                        "requests": 2,
                        "errors": 0,
                        "accuracy": 0.5,
                        "p50_ms": 3.0,
                        "p99_ms": 4.0,
                        "mean_confidence": 0.9,
                    }
                },
            }
        },
    }
    text = loadgen.format_report(summary)
    assert "version v1" in text and "noisy" in text and "50.0%" in text and "ALL" in text


async def test_cli_json_summary_with_shipped_clips(app, tmp_path):
    """The CLI path the demo uses: shipped clip slices, a mix, a bound, a JSON file."""
    import asyncio

    out = tmp_path / "summary.json"
    async with ServedApp(app) as served:
        argv = [
            "--url",
            served.url,
            "--mix",
            "clean=1,silence=1",
            "--count",
            "6",
            "--rate",
            "0",
            "--protocol",
            "v2",
            "--json",
            str(out),
        ]
        rc = await asyncio.to_thread(loadgen.main, argv)
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["requests"] == 6 and summary["protocol"] == "v2"
    assert set(summary["versions"][VERSION]["slices"]) <= {"clean", "silence"}
    assert summary["versions"][VERSION]["total"]["requests"] == 6


class FakeFrontDoor:
    """A router stand-in on loopback: answers v1 `:predict` with a fixed label and a fresh `x-request-id`,
    remembers each request's `x-slice` by id, and takes `POST /feedback` (200, or `reject` status by slice)."""

    def __init__(self, label: str = "yes", reject: dict[str, int] | None = None, send_id: bool = True):
        self.label, self.reject, self.send_id = label, reject or {}, send_id
        self.slices: dict[str, str] = {}  # request id -> x-slice it carried
        self.feedback: list[dict] = []
        self.url = ""

    async def predict(self, request):
        from aiohttp import web

        await request.read()
        request_id = f"id-{len(self.slices)}"
        self.slices[request_id] = request.headers.get("x-slice", "")
        headers = {"x-model-version": "fake-v"} | ({"x-request-id": request_id} if self.send_id else {})
        return web.json_response({"predictions": [{"label": self.label, "confidence": 0.9}]}, headers=headers)

    async def take_feedback(self, request):
        from aiohttp import web

        body = await request.json()
        self.feedback.append(body)
        status = self.reject.get(self.slices.get(body["requestId"], ""), 200)
        return web.json_response({"requestId": body["requestId"]}, status=status)

    async def __aenter__(self) -> FakeFrontDoor:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/models/{name}", self.predict)
        app.router.add_post("/feedback", self.take_feedback)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_) -> None:
        await self.runner.cleanup()


# Two slices with known truths; the fake always answers "yes", so clean answers are right and noisy ones wrong.
FEEDBACK_CLIPS = {
    "clean": [(np.zeros(1600, dtype=np.int16), "yes")],
    "noisy": [(np.ones(1600, dtype=np.int16), "no")],
}


async def test_every_request_names_its_slice_and_feedback_reports_its_true_label():
    async with FakeFrontDoor() as door:
        spec = LoadSpec(url=door.url, mix={"clean": 1, "noisy": 1}, rate=0, count=40, seed=1, feedback_share=1.0)
        summary = await run_load(spec, FEEDBACK_CLIPS)
    slices = summary["versions"]["fake-v"]["slices"]
    sent_by_slice = {name: list(door.slices.values()).count(name) for name in ("clean", "noisy")}
    assert sent_by_slice == {name: slices[name]["requests"] for name in ("clean", "noisy")}
    assert set(door.slices.values()) == {"clean", "noisy"}
    # one feedback per answer, by the id the answer carried, with that request's true label
    assert sorted(f["requestId"] for f in door.feedback) == sorted(door.slices)
    truth = {"clean": "yes", "noisy": "no"}
    assert all(f == {"requestId": f["requestId"], "label": truth[door.slices[f["requestId"]]]} for f in door.feedback)
    for name in ("clean", "noisy"):
        s = slices[name]
        assert (s["feedback_sent"], s["feedback_accepted"], s["feedback_rejected"]) == (s["requests"], s["requests"], 0)
    assert (slices["clean"]["accuracy"], slices["noisy"]["accuracy"]) == (1.0, 0.0)
    assert summary["versions"]["fake-v"]["total"]["feedback_accepted"] == 40
    assert summary["feedback_rejections"] == {}


async def test_feedback_share_sends_for_a_seeded_part_of_the_answers():
    async with FakeFrontDoor() as door:
        spec = LoadSpec(url=door.url, mix={"clean": 1}, rate=0, count=200, seed=5, feedback_share=0.25)
        summary = await run_load(spec, FEEDBACK_CLIPS)
    sent = summary["versions"]["fake-v"]["total"]["feedback_sent"]
    assert sent == len(door.feedback) == summary["versions"]["fake-v"]["total"]["feedback_accepted"]
    assert 20 <= sent <= 80  # a quarter of 200, give or take; 0 or 200 would mean the share is ignored
    async with FakeFrontDoor() as door:
        spec = LoadSpec(url=door.url, mix={"clean": 1}, rate=0, count=20, seed=5)  # default share 0
        summary = await run_load(spec, FEEDBACK_CLIPS)
    assert door.feedback == [] and summary["versions"]["fake-v"]["total"]["feedback_sent"] == 0


async def test_rejected_feedback_is_counted_per_slice_and_by_status():
    async with FakeFrontDoor(reject={"noisy": 409}) as door:
        spec = LoadSpec(url=door.url, mix={"clean": 1, "noisy": 1}, rate=0, count=30, seed=2, feedback_share=1.0)
        summary = await run_load(spec, FEEDBACK_CLIPS)
    slices = summary["versions"]["fake-v"]["slices"]
    noisy, clean = slices["noisy"], slices["clean"]
    assert (noisy["feedback_sent"], noisy["feedback_accepted"], noisy["feedback_rejected"]) == (
        noisy["requests"],
        0,
        noisy["requests"],
    )
    assert clean["feedback_accepted"] == clean["requests"] and clean["feedback_rejected"] == 0
    assert summary["feedback_rejections"] == {"409": noisy["requests"]}
    assert summary["errors"] == 0  # a refused feedback is not a failed request


async def test_answers_without_a_request_id_send_no_feedback(app, clips):
    """Straight to a model server (no router): nothing to attribute feedback to, so nothing is POSTed."""
    async with ServedApp(app) as served:
        spec = LoadSpec(url=served.url, mix={"silence": 1}, rate=0, count=4, feedback_share=1.0)
        summary = await run_load(spec, clips)
    total = summary["versions"][VERSION]["total"]
    assert (total["requests"], total["errors"], total["feedback_sent"]) == (4, 0, 0)
    assert summary["feedback_rejections"] == {"no-id": 4}


async def test_unreachable_feedback_url_is_counted_not_a_crash():
    async with FakeFrontDoor() as door:
        spec = LoadSpec(
            url=door.url,
            mix={"clean": 1},
            rate=0,
            count=3,
            timeout_s=2,
            feedback_share=1.0,
            feedback_url="http://127.0.0.1:9/feedback",
        )
        summary = await run_load(spec, FEEDBACK_CLIPS)
    total = summary["versions"]["fake-v"]["total"]
    assert (total["requests"], total["errors"]) == (3, 0)
    assert (total["feedback_sent"], total["feedback_rejected"]) == (3, 3)
    assert summary["feedback_rejections"] == {"error": 3} and door.feedback == []


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_feedback_share_outside_0_1_is_rejected(share):
    with pytest.raises(ValueError, match="feedback-share: expected a share 0..1"):
        validate_spec(LoadSpec(url="http://x", mix={"clean": 1}, count=1, feedback_share=share))


def test_feedback_url_is_the_front_door_origin_unless_given():
    spec = LoadSpec(url="http://h:8080/v1/models/m:predict", mix={}, feedback_share=0.5)
    assert loadgen.compute_feedback_url(spec) == "http://h:8080/feedback"
    with pytest.raises(ValueError, match="url: expected http"):
        validate_spec(LoadSpec(url="h:8080", mix={"clean": 1}, count=1, feedback_share=0.5))
    given = LoadSpec(url="h:8080", mix={"clean": 1}, count=1, feedback_share=0.5, feedback_url="http://r/feedback")
    validate_spec(given)
    assert loadgen.compute_feedback_url(given) == "http://r/feedback"


def test_cli_rejects_a_bad_feedback_share(capsys):
    assert loadgen.main(["--url", "http://127.0.0.1:9", "--count", "1", "--feedback-share", "2"]) == 2
    assert "feedback-share: expected a share 0..1" in capsys.readouterr().err


def test_report_shows_feedback_columns_only_when_feedback_was_asked_for():
    stats = {
        "requests": 4,
        "errors": 0,
        "accuracy": 0.5,
        "p50_ms": 3.0,
        "p99_ms": 4.0,
        "mean_confidence": 0.9,
        "feedback_sent": 4,
        "feedback_accepted": 3,
    }
    summary = {
        "requests": 4,
        "endpoint": "e",
        "wall_seconds": 1.0,
        "achieved_rps": 4.0,
        "errors": 0,
        "feedback_share": 1.0,
        "feedback_rejections": {"404": 1},
        "versions": {"v1": {"total": stats, "slices": {"young": stats}}},
    }
    text = loadgen.format_report(summary)
    assert "feedback ok/sent" in text and "3/4" in text and "feedback not accepted: 404: 1" in text
    assert "feedback" not in loadgen.format_report({**summary, "feedback_share": 0.0})
