"""Unit tests of the testbed's pure parts: pod env/args translation, status building,
kwok stage split, probe thresholds and the versions/images files.
"""
from __future__ import annotations

import base64

import pytest

from e2e.testbed import kwok_config, paths
from e2e.testbed.pod_runner import images, podspec, status
from e2e.testbed.pod_runner.probes import ProbeTracker, resolve_port
from e2e.testbed.pod_runner.runner import is_runnable
from e2e.testbed.pod_runner.worker import compute_backoff, should_restart

pytestmark = pytest.mark.unit

POD = {
    "metadata": {"name": "p1", "namespace": "ns1", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "kwok-node-0", "serviceAccountName": "sa"},
    "status": {"podIP": "127.1.0.7", "hostIP": "127.0.0.1"},
}


def no_objects(kind, ns, name):
    return None


def test_expand_vars_follows_kubernetes_rules():
    env = {"A": "1", "POD_IP": "127.1.0.2"}
    assert podspec.expand_vars("--host=$(POD_IP)", env) == "--host=127.1.0.2"
    assert podspec.expand_vars("$$(A) $(A) $(MISSING)", env) == "$(A) 1 $(MISSING)"


def test_env_resolves_field_refs_values_and_references():
    container = {"env": [
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "URL", "value": "http://$(IP):8080"},
    ]}
    env = podspec.compute_container_env(POD, container, no_objects)
    assert env == {"IP": "127.1.0.7", "NAME": "p1", "APP": "x", "URL": "http://127.1.0.7:8080"}


def test_env_reads_configmap_and_secret_keys_and_env_from():
    objects = {("ConfigMap", "ns1", "cm"): {"data": {"k": "v", "other": "o"}},
               ("Secret", "ns1", "s"): {"data": {"pw": base64.b64encode(b"hunter2").decode()}}}
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}}}],
    }
    env = podspec.compute_container_env(POD, container, lambda k, n, m: objects.get((k, n, m)))
    assert env == {"CM_k": "v", "CM_other": "o", "K": "v", "PW": "hunter2"}


@pytest.mark.parametrize("item, needle", [
    ({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}, "ConfigMap ns1/'missing'"),
    ({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}, "spec.bogus"),
    ({"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}, "resourceFieldRef"),
])
def test_env_errors_name_the_problem(item, needle):
    with pytest.raises(podspec.ContainerConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        podspec.compute_container_env(POD, {"env": [item]}, no_objects)


def test_argv_is_entrypoint_plus_expanded_args_and_command_replaces_entrypoint():
    env = {"POD_IP": "127.1.0.9"}
    container = {"args": ["--host=$(POD_IP)", "--port=8080"]}
    assert podspec.compute_argv(["/bin/srv"], container, env) == ["/bin/srv", "--host=127.1.0.9", "--port=8080"]
    container["command"] = ["other", "$(POD_IP)"]
    assert podspec.compute_argv(["/bin/srv"], container, env)[:2] == ["other", "127.1.0.9"]


def test_status_patch_tracks_process_state():
    c = status.ContainerState(name="c", image="img")
    pending = status.compute_status_patch(POD, c, now=100.0)["status"]
    assert pending["phase"] == "Pending"
    assert pending["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    c.running_since, c.ready, c.restart_count = 100.0, True, 2
    c.last_terminated = status.Terminated(exit_code=137, started_at=50.0, finished_at=99.0, signal=9)
    running = status.compute_status_patch(POD, c, now=101.0)["status"]
    assert running["phase"] == "Running"
    ready = {cond["type"]: cond["status"] for cond in running["conditions"]}
    assert ready["Ready"] == "True" and ready["ContainersReady"] == "True"
    cs = running["containerStatuses"][0]
    assert cs["restartCount"] == 2 and cs["ready"] is True
    assert cs["lastState"]["terminated"]["exitCode"] == 137 and cs["lastState"]["terminated"]["reason"] == "Error"


def test_status_keeps_transition_time_when_condition_unchanged():
    pod = {**POD, "status": {**POD["status"], "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}
    c = status.ContainerState(name="c", image="img", running_since=1.0, ready=True)
    conds = status.compute_status_patch(pod, c, now=1e9)["status"]["conditions"]
    assert [x for x in conds if x["type"] == "Ready"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_final_state_gives_terminal_phase():
    c = status.ContainerState(name="c", image="img")
    c.final = status.Terminated(exit_code=0, started_at=1.0, finished_at=2.0)
    assert status.compute_phase(c) == "Succeeded"
    c.final = status.Terminated(exit_code=3, started_at=1.0, finished_at=2.0)
    assert status.compute_phase(c) == "Failed"


def test_restart_policy_and_backoff():
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 1)
    assert [compute_backoff(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]


def test_probe_tracker_thresholds():
    t = ProbeTracker({"periodSeconds": 1, "failureThreshold": 2, "successThreshold": 1})
    t.schedule_first(0.0)
    t.record(True, 0.0)
    assert t.passing
    t.record(False, 1.0)
    assert t.passing and not t.is_failed()
    t.record(False, 2.0)
    assert not t.passing and t.is_failed() and t.next_at == 3.0


def test_named_probe_port_resolves_and_unknown_name_fails():
    container = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port("http", container) == 8080 and resolve_port(9000, container) == 9000
    with pytest.raises(ValueError, match="'metrics'"):
        resolve_port("metrics", container)


def test_kwok_stages_split_pods_between_kwok_and_the_runner(tmp_path):
    stages = kwok_config.compute_stages(_stage_dir(tmp_path), ["img/a:dev"])
    by_name = {s["metadata"]["name"]: s for s in stages}
    for name in ("pod-ready", "pod-complete", "pod-delete"):
        exprs = by_name[name]["spec"]["selector"]["matchExpressions"]
        assert {"key": kwok_config.IMAGE_KEY, "operator": "NotIn", "values": ["img/a:dev"]} in exprs
    ours = by_name["pod-runner-assign-ip"]
    assert {"key": kwok_config.IMAGE_KEY, "operator": "In", "values": ["img/a:dev"]} in ours["spec"]["selector"]["matchExpressions"]
    # The runner, not kwok, decides readiness for our pods.
    assert 'type: Ready' in ours["spec"]["next"]["statusTemplate"] and 'status: "True"\n  type: Ready' not in ours["spec"]["next"]["statusTemplate"]


def _stage_dir(root):
    """A minimal copy of kwok's upstream stage layout (the real one is in the build cache)."""
    files = {"node/fast/node-initialize.yaml": "node-initialize",
             "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml": "node-heartbeat-with-lease",
             "pod/fast/pod-ready.yaml": "pod-ready", "pod/fast/pod-complete.yaml": "pod-complete",
             "pod/fast/pod-delete.yaml": "pod-delete"}
    for rel, name in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"kind: Stage\nmetadata: {{name: {name}}}\nspec:\n  selector:\n    matchExpressions:\n"
                        "    - {key: .metadata.deletionTimestamp, operator: DoesNotExist}\n")
    return root


def test_images_map_and_runnable_pods():
    mapping = images.load_image_map()
    assert set(mapping) >= {"modelrollout/model-server:dev", "modelrollout/router:dev",
                            "modelrollout/operator:dev", "modelrollout/testbed-echo:dev"}
    assert mapping["modelrollout/model-server:dev"][0].endswith("/.venv/bin/speech-server")
    assert is_runnable({"spec": {"containers": [{"image": "modelrollout/router:dev"}]}}, mapping)
    assert not is_runnable({"spec": {"containers": [{"image": "nginx"}]}}, mapping)


def test_bad_images_file_names_the_entry(tmp_path):
    bad = tmp_path / "images.yaml"
    bad.write_text("some/image:dev: /not/a/list\n")
    with pytest.raises(ValueError, match="some/image:dev"):
        images.load_image_map(bad)


def test_versions_file_and_layout_env(monkeypatch, tmp_path):
    versions = paths.read_versions()
    assert versions["K8S_VERSION"].startswith("v1.") and versions["ETCD_VERSION"].startswith("v3.6")
    monkeypatch.setenv(paths.PORT_OFFSET_ENV, "abc")
    with pytest.raises(ValueError, match=paths.PORT_OFFSET_ENV):
        paths.default_layout()
    monkeypatch.setenv(paths.PORT_OFFSET_ENV, "1000")
    monkeypatch.setenv(paths.POD_CIDR_ENV, "127.3.0.0/16")
    with pytest.raises(ValueError, match="loopback"):
        paths.default_layout()
    monkeypatch.setenv(paths.POD_CIDR_ENV, "198.18.0/16")
    with pytest.raises(ValueError, match="IPv4 range"):
        paths.default_layout()
    monkeypatch.setenv(paths.POD_CIDR_ENV, "198.20.0.0/16")
    monkeypatch.setenv(paths.STATE_DIR_ENV, str(tmp_path))
    lay = paths.default_layout()
    assert lay.ports.apiserver == 7443 and lay.kubeconfig == tmp_path / "kubeconfig"
    assert lay.pod_cidr == "198.20.0.0/16"


def test_cri_log_lines_mark_full_and_partial_lines():
    import datetime as dt

    from e2e.testbed.pod_runner.crilog import format_cri_line

    ts = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
    assert format_cri_line(ts, "stdout", b"hello\n") == b"2026-01-02T03:04:05.123456Z stdout F hello\n"
    assert format_cri_line(ts, "stderr", b"no newline") == b"2026-01-02T03:04:05.123456Z stderr P no newline\n"
