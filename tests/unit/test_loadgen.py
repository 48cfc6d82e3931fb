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
