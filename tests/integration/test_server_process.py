"""The `speech-server` command as a real process over loopback HTTP: flags, both protocols, metrics, SIGTERM.

Needs no cluster, only 127.0.0.1; it sits in the integration tier because it starts a separate process.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.speech_fixtures import synthesize_word, write_tiny_recognizer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
SERVER = Path(sys.executable).with_name("speech-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: dict | None = None) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = write_tiny_recognizer(tmp_path_factory.mktemp("m") / "tiny.onnx")
    port = free_port()
    env = dict(
        os.environ,
        SPEECH_SERVER_MODEL_VERSION="proc-v1",
        SPEECH_SERVER_MAX_CLIP_SECONDS="3",
        SPEECH_SERVER_SLICES="young",
    )
    proc = subprocess.Popen(
        [str(SERVER), "--model-uri", str(model), "--host", "127.0.0.2", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None  # PIPE just above
    output = proc.stdout
    base = f"http://127.0.0.2:{port}"

    def ready() -> bool:
        try:
            return request(base + "/v2/health/ready")[0] == 200
        except OSError:
            return False

    def exited() -> str | None:
        return None if proc.poll() is None else output.read().decode()

    wait_for(ready, "the speech server to be ready", timeout=60, every=0.2, gone=exited)
    yield base, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_binds_the_given_host_only(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_v1_and_v2_answer_with_version_from_env(server):
    base, _ = server
    audio = base64.b64encode(synthesize_word("go").tobytes()).decode()
    status, headers, body = request(base + "/v1/models/speech-commands:predict", {"instances": [{"audio_b64": audio}]})
    assert status == 200 and headers["x-model-version"] == "proc-v1"
    assert len(body["predictions"][0]["segments"]) == 1
    v2 = {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": [audio]}]}
    status, _, body = request(base + "/v2/models/speech-commands/infer", v2)
    assert status == 200 and body["model_version"] == "proc-v1"
    assert [o["name"] for o in body["outputs"]] == ["label", "confidence", "segments"]


def test_slice_and_answer_headers_over_real_http(server):
    """uvicorn's HTTP parser in front of the gate: the slice allow-list from the environment, the answer headers."""
    base, _ = server
    audio = base64.b64encode(synthesize_word("go").tobytes()).decode()
    body = json.dumps({"instances": [{"audio_b64": audio}, {"audio_b64": audio}]}).encode()
    answers = []
    for slice_header in ("Young", "elderly"):
        req = urllib.request.Request(
            base + "/v1/models/speech-commands:predict",
            data=body,
            headers={"content-type": "application/json", "X-Slice": slice_header, "x-request-id": "proc-1"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            labels = [p["label"] for p in json.loads(resp.read())["predictions"]]
            answers.append((resp.headers["x-slice"], resp.headers["x-request-id"]))
            assert resp.headers["x-predictions"] == ",".join(labels)
            assert resp.headers["x-model-labels"].split(",")[:2] == ["_silence_", "_unknown_"]
    assert answers == [("young", "proc-1"), ("other", "proc-1")]


def test_limits_from_env_and_metrics(server):
    base, _ = server
    long = {"inputs": [{"name": "audio", "datatype": "INT16", "shape": [64000], "data": [0] * 64000}]}
    status, _, body = request(base + "/v2/models/speech-commands/infer", long)
    assert status == 400 and "limit is 3 s" in body["error"]
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert (
        'speech_requests_total{model="speech-commands",outcome="client_error",protocol="v2",slice="none",'
        'version="proc-v1"} 1.0' in text
    )
    assert "speech_batch_size_bucket" in text


def test_real_prometheus_scrapes_the_contract(server, tmp_path):
    """Prometheus (Debian package) scrapes /metrics and stores the series the rollout queries read."""
    import shutil

    base, _ = server
    audio = base64.b64encode(synthesize_word("on").tobytes()).decode()
    assert request(base + "/v1/models/speech-commands:predict", {"instances": [{"audio_b64": audio}]})[0] == 200
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (make sysdeps installs it)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: speech\n"
        f"    static_configs: [{{targets: ['{base.split('//')[1]}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = "http://127.0.0.1:{}/api/v1/query?query={}".format
        found: dict = {}

        def scraped() -> bool:
            for name in ("speech_input_level_dbfs_sum", "speech_requests_total", "speech_confidence_count"):
                try:
                    _, _, body = request(query(port, name))
                except OSError:
                    continue
                if body and body["data"]["result"]:
                    found[name] = body["data"]["result"]
            return len(found) == 3

        wait_for(
            scraped,
            "Prometheus to scrape the three contract series",
            timeout=60,
            every=0.5,
            describe=lambda: f"found {sorted(found)}",
        )
        assert set(found) == {"speech_input_level_dbfs_sum", "speech_requests_total", "speech_confidence_count"}
        assert float(found["speech_input_level_dbfs_sum"][0]["value"][1]) < 0
        outcomes = {r["metric"]["outcome"] for r in found["speech_requests_total"]}
        assert outcomes == {"ok", "client_error", "server_error"}
        assert {r["metric"]["version"] for r in found["speech_requests_total"]} == {"proc-v1"}
    finally:
        prom.terminate()
        prom.wait(timeout=20)


def test_sigterm_stops_the_server(server):
    _, proc = server
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it stopped
    assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    log = proc.stdout.read().decode()
    assert "Finished server process" in log, log[-2000:]


def test_bad_flag_values_exit_with_a_message():
    out = subprocess.run([str(SERVER), "--port", "http"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--port='http' is not a valid int" in out.stderr
    out = subprocess.run([str(SERVER), "--model-uri", "builtin:v99"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "model 'builtin:v99'" in out.stderr and "is not shipped" in out.stderr
    out = subprocess.run([str(SERVER), "--max-batch", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--max-batch=0 is invalid; expected an integer 1..256" in out.stderr
