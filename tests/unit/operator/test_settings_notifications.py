"""--notifications-file and the delivery bounds: read and checked at startup, every problem named
with its flag and field; header values come from a mounted Secret and never show in errors."""

from __future__ import annotations

import json
import os

import pytest

from rollout_operator.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


def _secret_mount(tmp_path, values: dict[str, str]):
    """A directory laid out like a mounted Secret: files behind ..data, plus the timestamped dir."""
    stamped = tmp_path / "headers" / "..2026_12_02_18_00_00.1"
    stamped.mkdir(parents=True)
    for name, value in values.items():
        (stamped / name).write_text(value + "\n")
    os.symlink(stamped.name, tmp_path / "headers" / "..data")
    for name in values:
        os.symlink(f"..data/{name}", tmp_path / "headers" / name)
    return tmp_path / "headers"


def _file(tmp_path, doc) -> str:
    path = tmp_path / "notifications.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_receivers_and_defaults_are_read_with_headers_from_the_secret(tmp_path):
    headers = _secret_mount(tmp_path, {"Authorization": "Bearer s3cr3t", "X-Team": "ml"})
    path = _file(
        tmp_path,
        {
            "receivers": [
                {"name": "ops", "url": "https://hooks.example/T/B", "format": "slack", "headersDir": str(headers)},
                {"name": "audit", "url": "http://audit.svc:8080/in", "timeoutSeconds": 2},
            ],
            "defaultReceivers": [{"receiver": "ops", "events": ["promoted", "rolledBack"]}],
        },
    )
    s = load_settings(
        [f"--notifications-file={path}", "--notification-queue-size=50", "--notification-max-attempts=3"], environ={}
    )
    assert s.notifications.receivers["ops"].headers == {"Authorization": "Bearer s3cr3t", "X-Team": "ml"}
    assert s.notifications.receivers["audit"].timeout_seconds == 2.0
    assert [r.receiver for r in s.notifications.defaults] == ["ops"]
    assert (s.notification_queue_size, s.notification_max_attempts, s.notification_workers) == (50, 3, 2)
    assert "s3cr3t" not in repr(s)


def test_yaml_and_the_env_var_work_too(tmp_path):
    path = _file(tmp_path, "receivers:\n  - name: ops\n    url: http://hooks.test/in\n")
    s = load_settings([], environ={"MODELROLLOUT_NOTIFICATIONS_FILE": path})
    assert list(s.notifications.receivers) == ["ops"]


def test_no_file_no_receivers():
    assert load_settings([], environ={}).notifications.receivers == {}


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"receivers": [{"name": "ops", "url": "hooks.test/in"}]}, "receivers[0].url: must be an http(s)://"),
        ({"receivers": [{"name": "ops", "url": "http://h", "format": "xml"}]}, "receivers[0].format: must be one of"),
        ({"receivers": [], "defaultReceivers": [{"receiver": "ops"}]}, "defaultReceivers[0].receiver: 'ops' is not"),
        ("receivers: [unclosed", "not valid JSON or YAML"),
        (
            {"receivers": [{"name": "ops", "url": "http://h", "headersDir": "/nonexistent/secret"}]},
            "receivers[0].headersDir: cannot read /nonexistent/secret",
        ),
    ],
)
def test_a_bad_file_is_refused_at_startup_naming_flag_and_field(tmp_path, doc, words):
    path = _file(tmp_path, doc)
    with pytest.raises(SettingsError) as err:
        load_settings([f"--notifications-file={path}"], environ={})
    assert f"--notifications-file ({path}): " in str(err.value) and words in str(err.value)


def test_a_bad_header_value_is_refused_without_showing_it(tmp_path):
    headers = _secret_mount(tmp_path, {"X-Token": "line1\nX-Injected: yes"})
    path = _file(tmp_path, {"receivers": [{"name": "ops", "url": "http://h", "headersDir": str(headers)}]})
    with pytest.raises(SettingsError) as err:
        load_settings([f"--notifications-file={path}"], environ={})
    assert "receivers[0].headers.X-Token" in str(err.value) and "Injected" not in str(err.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match=r"--notifications-file \(.*absent.json\): cannot read it"):
        load_settings([f"--notifications-file={tmp_path}/absent.json"], environ={})


def test_bad_delivery_bounds_are_refused():
    with pytest.raises(SettingsError) as err:
        load_settings(["--notification-queue-size=0", "--notification-workers=99"], environ={})
    text = str(err.value)
    assert "--notification-queue-size (--notification-queue-size / MODELROLLOUT_NOTIFICATION_QUEUE_SIZE)" in text
    assert "--notification-workers" in text and "between 1 and 16" in text
