"""Unit tests of the testbed's pure parts: pod env/args translation, status building,
kwok stage split, probe thresholds and the versions/images files.
"""

from __future__ import annotations

import base64
import tarfile
from typing import IO, Any

import pytest

from e2e.testbed import kwok_config, paths
from e2e.testbed.pod_runner import images, podspec, status
from e2e.testbed.pod_runner.probes import ProbeTracker, resolve_port
from e2e.testbed.pod_runner.runner import is_runnable
from e2e.testbed.pod_runner.worker import compute_backoff, should_restart

pytestmark = pytest.mark.unit

POD: dict[str, Any] = {
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
    container = {
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(IP):8080"},
        ]
    }
    env = podspec.compute_container_env(POD, container, no_objects)
    assert env == {"IP": "127.1.0.7", "NAME": "p1", "APP": "x", "URL": "http://127.1.0.7:8080"}


def test_env_reads_configmap_and_secret_keys_and_env_from():
    objects = {
        ("ConfigMap", "ns1", "cm"): {"data": {"k": "v", "other": "o"}},
        ("Secret", "ns1", "s"): {"data": {"pw": base64.b64encode(b"hunter2").decode()}},
    }
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}}},
        ],
    }
    env = podspec.compute_container_env(POD, container, lambda k, n, m: objects.get((k, n, m)))
    assert env == {"CM_k": "v", "CM_other": "o", "K": "v", "PW": "hunter2"}


@pytest.mark.parametrize(
    "item, needle",
    [
        ({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}, "ConfigMap ns1/'missing'"),
        ({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}, "spec.bogus"),
        ({"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}, "resourceFieldRef"),
    ],
)
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
    pod = {
        **POD,
        "status": {
            **POD["status"],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}],
        },
    }
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
    assert {"key": kwok_config.IMAGE_KEY, "operator": "In", "values": ["img/a:dev"]} in ours["spec"]["selector"][
        "matchExpressions"
    ]
    # The runner, not kwok, decides readiness for our pods.
    assert (
        "type: Ready" in ours["spec"]["next"]["statusTemplate"]
        and 'status: "True"\n  type: Ready' not in ours["spec"]["next"]["statusTemplate"]
    )


def _stage_dir(root):
    """A minimal copy of kwok's upstream stage layout (the real one is in the build cache)."""
    files = {
        "node/fast/node-initialize.yaml": "node-initialize",
        "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml": "node-heartbeat-with-lease",
        "pod/fast/pod-ready.yaml": "pod-ready",
        "pod/fast/pod-complete.yaml": "pod-complete",
        "pod/fast/pod-delete.yaml": "pod-delete",
    }
    for rel, name in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"kind: Stage\nmetadata: {{name: {name}}}\nspec:\n  selector:\n    matchExpressions:\n"
            "    - {key: .metadata.deletionTimestamp, operator: DoesNotExist}\n"
        )
    return root


def test_images_map_and_runnable_pods():
    mapping = images.load_image_map()
    assert set(mapping) >= {
        "modelrollout/model-server:dev",
        "modelrollout/router:dev",
        "modelrollout/operator:dev",
        "modelrollout/testbed-echo:dev",
    }
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

    ts = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert format_cri_line(ts, "stdout", b"hello\n") == b"2026-01-02T03:04:05.123456Z stdout F hello\n"
    assert format_cri_line(ts, "stderr", b"no newline") == b"2026-01-02T03:04:05.123456Z stderr P no newline\n"


# --- the real node (node_config, ociimage, listeners): pure configuration -------------------


def _real_layout(tmp_path):
    return paths.Layout(state_dir=tmp_path, ports=paths.Ports(), pod_cidr="198.18.0.0/16", node_mode="real")


def test_node_mode_defaults_real_for_the_main_instance_and_is_validated(monkeypatch, tmp_path):
    for var in (paths.NODE_MODE_ENV, paths.PORT_OFFSET_ENV, paths.POD_CIDR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(paths.STATE_DIR_ENV, str(tmp_path))
    lay = paths.default_layout()
    assert lay.is_real_node and lay.apiserver_url == f"https://{paths.NODE_IP}:6443"
    assert lay.prometheus_url == f"http://{paths.NODE_IP}:9090"
    monkeypatch.setenv(paths.PORT_OFFSET_ENV, "1000")
    lay = paths.default_layout()
    assert not lay.is_real_node and lay.apiserver_url == "https://127.0.0.1:7443"
    monkeypatch.setenv(paths.NODE_MODE_ENV, "kind")
    with pytest.raises(ValueError, match=f"{paths.NODE_MODE_ENV}='kind'.*real, process"):
        paths.default_layout()


def test_cri_name_normalises_like_docker():
    from e2e.testbed.node_config import cri_name

    assert cri_name("modelrollout/router:dev") == "docker.io/modelrollout/router:dev"
    assert cri_name("busybox:1") == "docker.io/library/busybox:1"
    assert cri_name("localhost/modelrollout/testbed-pause:1") == "localhost/modelrollout/testbed-pause:1"
    assert cri_name("registry.example:5000/a/b:c") == "registry.example:5000/a/b:c"


def test_node_configs_keep_runtime_state_in_the_state_dir_and_off_wildcard_addresses(tmp_path, monkeypatch):
    from e2e.testbed import components, node_config

    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path / "cache"))
    lay = _real_layout(tmp_path)
    toml = node_config.compute_containerd_config(lay)
    assert "restrict_oom_score_adj = true" in toml and "SystemdCgroup = false" in toml
    assert f'state = "{tmp_path}/node/containerd/state"' in toml
    assert f'Root = "{tmp_path}/node/containerd/runc"' in toml
    # Only the image store outlives `down`, as a cache.
    assert f'root = "{tmp_path}/cache/containerd/root"' in toml
    assert f'sandbox_image = "{node_config.PAUSE_IMAGE}"' in toml
    assert 'stream_server_address = "127.0.0.1"' in toml
    kubelet = node_config.compute_kubelet_config(lay)
    assert kubelet["address"] == paths.NODE_IP and kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert kubelet["cgroupDriver"] == "cgroupfs" and kubelet["failCgroupV1"] is False
    assert kubelet["healthzBindAddress"] == "127.0.0.1"
    cni = node_config.compute_cni_conflist(lay)["plugins"][0]
    assert cni["bridge"] == node_config.BRIDGE and cni["ipam"]["ranges"] == [[{"subnet": paths.NODE_POD_CIDR}]]
    assert cni["ipam"]["dataDir"].startswith(str(tmp_path))
    proxy = node_config.compute_kube_proxy_config(lay)
    assert proxy["mode"] == "iptables" and proxy["metricsBindAddress"].startswith("127.0.0.1:")
    assert proxy["nodePortAddresses"] == [f"{paths.NODE_IP}/32"]
    b = paths.find_binaries()
    api = components.apiserver_argv(b, lay)
    assert f"--bind-address={paths.NODE_IP}" in api and f"--advertise-address={paths.NODE_IP}" in api
    assert f"--web.listen-address={paths.NODE_IP}:9090" in components.prometheus_argv(b, lay)
    kubelet_argv = node_config.kubelet_argv(b, lay)
    assert f"--root-dir={tmp_path}/node/kubelet" in kubelet_argv
    assert f"--hostname-override={node_config.NODE_NAME}" in kubelet_argv


def test_kubernetes_service_endpoints_point_at_the_node_ip(tmp_path):
    from e2e.testbed.node_config import compute_kubernetes_endpoints

    endpoints, slice_ = compute_kubernetes_endpoints(_real_layout(tmp_path))
    assert endpoints["subsets"] == [
        {"addresses": [{"ip": paths.NODE_IP}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}
    ]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert slice_["endpoints"][0]["addresses"] == [paths.NODE_IP]


def test_process_node_is_tainted_only_in_real_mode():
    assert "taints" not in kwok_config.compute_node()["spec"]
    node = kwok_config.compute_node(taints=[paths.PROCESS_NODE_TAINT])
    assert node["spec"]["taints"] == [paths.PROCESS_NODE_TAINT]


def test_oci_archive_is_deterministic_and_names_the_image():
    import io
    import json

    from e2e.testbed.ociimage import compute_image_archive

    first = compute_image_archive("localhost/x/pause:1", b"\x7fELF-binary", "/pause")
    assert first == compute_image_archive("localhost/x/pause:1", b"\x7fELF-binary", "/pause")
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        index = json.load(_member(tar, "index.json"))
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
        (entry,) = index["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == "localhost/x/pause:1"
        manifest = json.load(_member(tar, f"blobs/sha256/{entry['digest'][7:]}"))
        layer = _member(tar, f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}").read()
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        member = inner.getmember("pause")
        assert member.mode == 0o755 and _member(inner, member).read() == b"\x7fELF-binary"


def test_port_taken_by_same_address_or_wildcard_only():
    from e2e.testbed.netroute import is_port_taken

    listeners = {("127.0.0.1", 6443), ("0.0.0.0", 9090), ("::", 10250), ("v6", 10248)}
    assert is_port_taken(listeners, "127.0.0.1", 6443)
    assert not is_port_taken(listeners, paths.NODE_IP, 6443)
    assert is_port_taken(listeners, paths.NODE_IP, 9090) and is_port_taken(listeners, paths.NODE_IP, 10250)
    assert not is_port_taken(listeners, "127.0.0.1", 10248)


def test_listeners_cover_the_node_only_in_real_mode(tmp_path):
    from e2e.testbed.cluster import compute_listeners

    real = compute_listeners(_real_layout(tmp_path))
    process = compute_listeners(
        paths.Layout(state_dir=tmp_path, ports=paths.Ports().shifted(1000), pod_cidr="198.19.0.0/16")
    )
    assert (paths.NODE_IP, 10250, "kubelet") in real and (paths.NODE_IP, 6443, "kube-apiserver") in real
    assert {name for _, _, name in process} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "prometheus",
    }
    assert all(addr == "127.0.0.1" for addr, _, _ in process)


def test_real_node_refuses_to_start_without_root_naming_the_way_out(monkeypatch, tmp_path):
    from e2e.testbed import node_host

    monkeypatch.setattr(node_host.os, "geteuid", lambda: 1000)
    with pytest.raises(node_host.NodeError, match=f"needs root.*{paths.NODE_MODE_ENV}=process"):
        node_host.check_host(_real_layout(tmp_path))


def test_image_archives_come_from_the_index_and_a_bad_index_says_so(tmp_path):
    import json

    from e2e.testbed.node_config import find_image_archives

    (tmp_path / "stray.tar").write_bytes(b"")
    assert find_image_archives(tmp_path) == [tmp_path / "stray.tar"]
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "images": {
                    "router": {"archive": str(tmp_path / "router.oci.tar")},
                    "operator": {"archive": str(tmp_path / "operator.oci.tar")},
                }
            }
        )
    )
    assert find_image_archives(tmp_path) == [tmp_path / "operator.oci.tar", tmp_path / "router.oci.tar"]
    (tmp_path / "index.json").write_text(json.dumps({"images": {"router": {"path": "x"}}}))
    with pytest.raises(ValueError, match="index.json.*rerun `make images`"):
        find_image_archives(tmp_path)


def test_iptables_leftover_parsing_finds_the_nodes_chains_and_jumps(monkeypatch):
    from e2e.testbed import node_host

    rules = "\n".join(
        [
            "-P INPUT ACCEPT",
            "-N KUBE-SERVICES",
            "-N KUBE-FORWARD",
            "-N CNI-HOSTPORT-DNAT",
            "-N OTHER",
            '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            "-A FORWARD -j OTHER",
            "-A KUBE-FORWARD -j ACCEPT",
            "-A OUTPUT -j CNI-HOSTPORT-DNAT",
        ]
    )
    monkeypatch.setattr(node_host, "_run", lambda *a, **k: node_host.subprocess.CompletedProcess(a, 0, rules, ""))
    chains, jumps = node_host._chains("iptables", "filter")
    assert chains == ["KUBE-SERVICES", "KUBE-FORWARD", "CNI-HOSTPORT-DNAT"]
    assert jumps == [rules.splitlines()[5], "-A OUTPUT -j CNI-HOSTPORT-DNAT"]


def _member(tar: tarfile.TarFile, name: str | tarfile.TarInfo) -> IO[bytes]:
    """A regular file's contents in the archive (extractfile answers None for anything else)."""
    f = tar.extractfile(name)
    assert f is not None, f"{name} is not a regular file in the archive"
    return f
