"""The chart's notifications values: the schema, the rendered receivers Secret and its mounts,
and that what the pod would read is accepted by the operator's own settings parser."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from e2e.helm import find_helm
from rollout_operator.settings import load_settings

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "charts" / "modelrollout"
KUBE_VERSION = "1.36.3"
VALUES = {
    "notifications": {
        "receivers": [
            {"name": "team-chat", "url": "https://hooks.slack.example/services/T0/B1/x", "format": "slack"},
            {"name": "audit", "url": "http://audit.ops:8080/in", "timeoutSeconds": 2, "headersSecret": "audit-token"},
        ],
        "defaultReceivers": [{"receiver": "audit", "events": ["promoted", "rolledBack"]}],
        "queueSize": 200,
        "maxAttempts": 3,
    }
}


def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(find_helm()), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _render(tmp_path: Path, values: dict) -> list[dict]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    out = _helm("template", "mr", str(CHART), "-n", "ops", "--kube-version", KUBE_VERSION, "-f", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _pod(docs: list[dict]) -> dict:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep["spec"]["template"]


def test_by_default_there_are_no_receivers_secret_or_flags(tmp_path):
    docs = _render(tmp_path, {})
    assert not [d for d in docs if d["kind"] == "Secret"]
    (container,) = _pod(docs)["spec"]["containers"]
    assert not [a for a in container["args"] if a.startswith("--notification")]
    assert [v["name"] for v in _pod(docs)["spec"]["volumes"]] == ["tmp"]


def test_receivers_render_into_a_mounted_secret_the_operator_accepts(tmp_path):
    docs = _render(tmp_path, VALUES)
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "mr-modelrollout-notifications"
    document = json.loads(secret["stringData"]["notifications.json"])
    pod = _pod(docs)
    (container,) = pod["spec"]["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["notifications"]["secret"]["secretName"] == "mr-modelrollout-notifications"
    assert volumes["headers-audit"]["secret"]["secretName"] == "audit-token"
    assert mounts["notifications"]["readOnly"] and mounts["headers-audit"]["readOnly"]
    headers_dir = mounts["headers-audit"]["mountPath"]
    assert document["receivers"][1]["headersDir"] == headers_dir
    assert "checksum/notifications" in pod["metadata"]["annotations"]

    # What the pod would see: the Secret at its mount path, the header Secret's files in its dir.
    (tmp_path / "headers").mkdir()
    (tmp_path / "headers" / "Authorization").write_text("Bearer t")
    document["receivers"][1]["headersDir"] = str(tmp_path / "headers")
    (tmp_path / "notifications.json").write_text(json.dumps(document))
    flag = next(a for a in container["args"] if a.startswith("--notifications-file="))
    assert flag == f"--notifications-file={mounts['notifications']['mountPath']}/notifications.json"
    args = [a for a in container["args"] if a.startswith("--notification")]
    args = [f"--notifications-file={tmp_path}/notifications.json" if a == flag else a for a in args]
    settings = load_settings(args, environ={})
    assert sorted(settings.notifications.receivers) == ["audit", "team-chat"]
    assert settings.notifications.receivers["team-chat"].format == "slack"
    assert settings.notifications.receivers["audit"].timeout_seconds == 2
    assert settings.notifications.receivers["audit"].headers == {"Authorization": "Bearer t"}
    assert [r.receiver for r in settings.notifications.defaults] == ["audit"]
    assert (settings.notification_queue_size, settings.notification_workers, settings.notification_max_attempts) == (
        200,
        2,
        3,
    )


def test_a_receiver_change_rolls_the_pods(tmp_path):
    before = _pod(_render(tmp_path, VALUES))["metadata"]["annotations"]["checksum/notifications"]
    changed = json.loads(json.dumps(VALUES))
    changed["notifications"]["receivers"][0]["url"] = "https://hooks.slack.example/services/T0/B2/y"
    assert _pod(_render(tmp_path, changed))["metadata"]["annotations"]["checksum/notifications"] != before


def test_lint_strict_passes_with_receivers(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(VALUES))
    _helm("lint", "--strict", str(CHART), "-f", str(path))


@pytest.mark.parametrize(
    "override, message",
    [
        ("notifications.receivers[0].name=chat,notifications.receivers[0].url=ftp://x", "url"),
        (
            "notifications.receivers[0].name=chat,notifications.receivers[0].url=http://x,notifications.receivers[0].format=teams",
            "format",
        ),
        ("notifications.receivers[0].name=Chat,notifications.receivers[0].url=http://x", "name"),
        ("notifications.receivers[0].name=chat,notifications.receivers[0].urll=http://x", "urll"),
        ("notifications.defaultReceivers[0].receiver=chat,notifications.defaultReceivers[0].events[0]=done", "events"),
        ("notifications.queueSize=0", "queueSize"),
    ],
)
def test_schema_rejects_bad_receivers(override, message):
    proc = _helm("template", "mr", str(CHART), "--kube-version", KUBE_VERSION, "--set", override, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr
