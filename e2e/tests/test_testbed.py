"""Self-tests of the local testbed's process-runner node: real processes behind pods, probes,
EndpointSlices, Prometheus discovery, restarts, RBAC with the pod's own token, and a clean `down`.
In real-node mode the kwok node is tainted, so these pods tolerate the taint and select it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config

from e2e.testbed import cluster as testbed_cluster
from e2e.testbed import paths
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ECHO_IMAGE = "modelrollout/testbed-echo:dev"
WAIT_S = 60
# The second instance's pod range: the top of 198.19/16, away from ranges helpers commonly use.
SECOND_POD_CIDR = "198.19.240.0/20"


@pytest.fixture(scope="module")
def layout() -> paths.Layout:
    lay = paths.default_layout()
    if not testbed_cluster.is_up(lay):
        pytest.fail(f"the testbed is not running (state dir {lay.state_dir}): start it with `make cluster-up`")
    return lay


@pytest.fixture(scope="module")
def core(layout: paths.Layout) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(layout.kubeconfig)))


@pytest.fixture(scope="module")
def apps(layout: paths.Layout) -> client.AppsV1Api:
    return client.AppsV1Api(config.new_client_from_config(config_file=str(layout.kubeconfig)))


@pytest.fixture
def ns(core: client.CoreV1Api):
    name = f"tb-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: _has_default_sa(core, name), "the namespace's default ServiceAccount", timeout=WAIT_S)
    yield name
    core.delete_namespace(name)


def _has_default_sa(core: client.CoreV1Api, ns: str) -> bool:
    return any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(ns).items)


def echo_container(**extra) -> dict:
    return {
        "name": "echo",
        "image": ECHO_IMAGE,
        "args": ["--host=$(POD_IP)", "--port=8080"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            *extra.pop("env", []),
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
        **extra,
    }


# Puts a pod on the process-runner (kwok) node in either node mode.
ON_PROCESS_NODE = {
    "nodeSelector": {"kubernetes.io/hostname": paths.NODE_NAME},
    "tolerations": [{**paths.PROCESS_NODE_TAINT, "operator": "Equal"}],
}


def process_pod(name: str, **spec) -> dict:
    return {"metadata": {"name": name, "labels": {"app": "echo"}}, "spec": {**ON_PROCESS_NODE, **spec}}


def create_echo_deployment(apps: client.AppsV1Api, ns: str, replicas: int = 2) -> None:
    labels = {"app": "echo"}
    apps.create_namespaced_deployment(
        ns,
        {  # type: ignore[arg-type]  # the client sends a dict body as is; its hints name only the V1 model
            "metadata": {"name": "echo"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": "8080",
                            "prometheus.io/path": "/metrics",
                        },
                    },
                    "spec": {**ON_PROCESS_NODE, "terminationGracePeriodSeconds": 5, "containers": [echo_container()]},
                },
            },
        },
    )


def is_pod_ready(pod) -> bool:
    conds = pod.status.conditions or []
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conds)


def ready_pods(core: client.CoreV1Api, ns: str, n: int):
    pods = [
        p
        for p in core.list_namespaced_pod(ns, label_selector="app=echo").items
        if p.metadata.deletion_timestamp is None
    ]
    return pods if len(pods) == n and all(is_pod_ready(p) for p in pods) else None


def http_get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.loads(resp.read())


def try_get_json(url: str) -> dict | None:
    try:
        return http_get_json(url)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def is_listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def in_pod_range(lay: paths.Layout, ip: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(lay.pod_cidr)


def test_deployment_pods_are_real_processes_on_local_pod_ips(layout, core, apps, ns):
    create_echo_deployment(apps, ns)
    pods = wait_for(lambda: ready_pods(core, ns, 2), "2 Running+Ready echo pods", timeout=WAIT_S)
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(in_pod_range(layout, ip) for ip in ips), ips
    for pod in pods:
        answer = http_get_json(f"http://{pod.status.pod_ip}:8080/")
        # The process got the pod's identity through fieldRefs and bound $(POD_IP).
        assert answer["pod"] == pod.metadata.name and answer["namespace"] == ns
        assert answer["host"] == pod.status.pod_ip
        assert answer["has_kubeconfig"] and not answer["in_cluster_env"]
        os.kill(answer["pid"], 0)  # a real local process: raises if there is no such pid


def test_endpointslice_lists_both_ready_pod_ips(core, apps, ns):
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
        },
    )
    create_echo_deployment(apps, ns)
    pods = wait_for(lambda: ready_pods(core, ns, 2), "2 Running+Ready echo pods", timeout=WAIT_S)
    discovery = client.DiscoveryV1Api(core.api_client)

    def ready_ips():
        slices = discovery.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=echo").items
        return {a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}

    want = {p.status.pod_ip for p in pods}
    wait_for(lambda: ready_ips() == want, f"EndpointSlice ready addresses == {want}", timeout=WAIT_S)


def test_prometheus_scrapes_both_pods(layout, core, apps, ns):
    create_echo_deployment(apps, ns)
    pods = wait_for(lambda: ready_pods(core, ns, 2), "2 Running+Ready echo pods", timeout=WAIT_S)
    query = urllib.parse.quote(f'up{{namespace="{ns}"}}')

    def up_by_pod():
        answer = try_get_json(f"{layout.prometheus_url}/api/v1/query?query={query}") or {}
        return {r["metric"]["pod"]: r["value"][1] for r in answer.get("data", {}).get("result", [])}

    want = {p.metadata.name: "1" for p in pods}
    wait_for(lambda: up_by_pod() == want, f"Prometheus up == 1 for {sorted(want)}", timeout=30)


def test_readiness_follows_the_real_probe(core, apps, ns):
    create_echo_deployment(apps, ns, replicas=1)
    pod = wait_for(lambda: ready_pods(core, ns, 1), "a Ready echo pod", timeout=WAIT_S)[0]
    url = f"http://{pod.status.pod_ip}:8080/readyz"
    urllib.request.urlopen(urllib.request.Request(url + "?ready=0", method="POST"), timeout=3)
    wait_for(
        lambda: not is_pod_ready(core.read_namespaced_pod(pod.metadata.name, ns)), "pod Ready=False", timeout=WAIT_S
    )
    urllib.request.urlopen(urllib.request.Request(url + "?ready=1", method="POST"), timeout=3)
    wait_for(
        lambda: is_pod_ready(core.read_namespaced_pod(pod.metadata.name, ns)), "pod Ready=True again", timeout=WAIT_S
    )


def test_killed_process_restarts_and_bumps_restart_count(core, apps, ns):
    create_echo_deployment(apps, ns, replicas=1)
    pod = wait_for(lambda: ready_pods(core, ns, 1), "a Ready echo pod", timeout=WAIT_S)[0]
    old_pid = http_get_json(f"http://{pod.status.pod_ip}:8080/")["pid"]
    os.kill(old_pid, signal.SIGKILL)

    def restarted():
        p = core.read_namespaced_pod(pod.metadata.name, ns)
        status = (p.status.container_statuses or [None])[0]
        return p if status and status.restart_count >= 1 and is_pod_ready(p) else None

    p = wait_for(restarted, "restartCount >= 1 and Ready again", timeout=WAIT_S)
    assert p.status.container_statuses[0].last_state.terminated.exit_code == 137
    new_pid = wait_for(
        lambda: (try_get_json(f"http://{pod.status.pod_ip}:8080/") or {}).get("pid"),
        "new process answers",
        timeout=WAIT_S,
    )
    assert new_pid != old_pid


def test_scale_down_stops_the_process(core, apps, ns):
    create_echo_deployment(apps, ns)
    pods = wait_for(lambda: ready_pods(core, ns, 2), "2 Running+Ready echo pods", timeout=WAIT_S)
    pids = {p.metadata.name: http_get_json(f"http://{p.status.pod_ip}:8080/")["pid"] for p in pods}
    apps.patch_namespaced_deployment_scale("echo", ns, {"spec": {"replicas": 1}})
    remaining = wait_for(lambda: ready_pods(core, ns, 1), "1 remaining echo pod", timeout=WAIT_S)
    wait_for(
        lambda: len(core.list_namespaced_pod(ns).items) == 1, "the removed pod object to be deleted", timeout=WAIT_S
    )
    gone = [p for p in pods if p.metadata.name != remaining[0].metadata.name][0]
    assert not Path(f"/proc/{pids[gone.metadata.name]}").exists(), "the scaled-down pod's process still runs"
    assert not is_listening(gone.status.pod_ip, 8080)
    assert is_listening(remaining[0].status.pod_ip, 8080)


def test_env_from_configmap_reaches_the_process(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"msg": "hello from a ConfigMap"}})
    env = [{"name": "ECHO_MESSAGE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "msg"}}}]
    core.create_namespaced_pod(ns, process_pod("cm", containers=[echo_container(env=env)]))
    pod = wait_for(lambda: ready_pods(core, ns, 1), "the echo pod Ready", timeout=WAIT_S)[0]
    assert http_get_json(f"http://{pod.status.pod_ip}:8080/")["message"] == "hello from a ConfigMap"


def test_pod_token_is_subject_to_rbac(core, ns):
    """403 listing Secrets with the pod's own token; 200 once a Role grants it (not admin)."""
    core.create_namespaced_service_account(ns, {"metadata": {"name": "nobody"}})
    core.create_namespaced_pod(ns, process_pod("rbac", serviceAccountName="nobody", containers=[echo_container()]))
    pod = wait_for(lambda: ready_pods(core, ns, 1), "the echo pod Ready", timeout=WAIT_S)[0]
    secrets = urllib.parse.quote(f"/api/v1/namespaces/{ns}/secrets")
    url = f"http://{pod.status.pod_ip}:8080/api?path={secrets}"
    assert http_get_json(url)["status"] == 403
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "read-secrets"},
            "rules": [  # type: ignore[arg-type]  # the client sends a dict body as is; its hints name only the V1 model
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "nobody-reads"},  # type: ignore[arg-type]  # the client sends a dict body as is; its hints name only the V1 model
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": ns}],
        },
    )
    wait_for(lambda: http_get_json(url)["status"] == 200, "200 after the RoleBinding", timeout=WAIT_S)


def test_kubectl_logs_shows_the_process_output(layout, core, ns):
    core.create_namespaced_pod(ns, process_pod("logs", containers=[echo_container()]))
    pod = wait_for(lambda: ready_pods(core, ns, 1), "the echo pod Ready", timeout=WAIT_S)[0]
    http_get_json(f"http://{pod.status.pod_ip}:8080/marker-{ns}")
    kubectl = [str(paths.find_binaries().kubectl), f"--kubeconfig={layout.kubeconfig}", "-n", ns, "logs", "logs"]

    def logged():
        out = subprocess.run(kubectl, capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and f"GET /marker-{ns}" in out.stdout and out.stdout

    text = wait_for(logged, "the request line in `kubectl logs`", timeout=20)
    assert f"echo server listening on {pod.status.pod_ip}:8080" in text
    file_text = (layout.pod_logs_dir / f"{ns}_logs.log").read_text()
    assert f"GET /marker-{ns}" in file_text
    assert all(re.match(r"\S+Z (stdout|stderr) [FP] ", line) for line in file_text.splitlines()), "not CRI format"


def test_unmapped_image_is_left_to_kwok(layout, core, ns):
    core.create_namespaced_pod(ns, process_pod("sim", containers=[{"name": "c", "image": "nginx:1.27"}]))
    pod = wait_for(lambda: ready_pods(core, ns, 1), "the simulated pod Running+Ready", timeout=WAIT_S)[0]
    assert in_pod_range(layout, pod.status.pod_ip)
    assert not (layout.pod_logs_dir / f"{ns}_sim.log").exists(), "the pod runner started a process"


def run_testbed(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "e2e.testbed", command],
        env=env,
        cwd=paths.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"testbed {command} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_down_leaves_no_listener_and_up_works_again(tmp_path, layout):
    """A second, independent instance (own state dir, ports +1000, own pod range) so the
    shared testbed other tests use stays up."""
    env = {
        **os.environ,
        paths.STATE_DIR_ENV: str(tmp_path / "cluster"),
        paths.PORT_OFFSET_ENV: "1000",
        paths.POD_CIDR_ENV: SECOND_POD_CIDR,
        paths.NODE_MODE_ENV: "process",
    }
    second = paths.Layout(state_dir=tmp_path / "cluster", ports=paths.Ports().shifted(1000), pod_cidr=SECOND_POD_CIDR)
    # A process-mode instance opens no node ports (kubelet, kube-proxy).
    ports = [port for _, port, _ in testbed_cluster.compute_listeners(second)]
    assert not any(is_listening("127.0.0.1", p) for p in ports), "ports of the second instance are busy"
    try:
        for attempt in ("first", "after down"):
            run_testbed("up", env)
            assert "nothing to do" in run_testbed("up", env).stdout, "a second `up` should be a no-op"
            assert all(is_listening("127.0.0.1", p) for p in ports), attempt
            core = client.CoreV1Api(config.new_client_from_config(config_file=str(tmp_path / "cluster" / "kubeconfig")))
            core.create_namespaced_pod("default", process_pod("echo", containers=[echo_container()]))  # type: ignore[arg-type]  # the client sends a dict body as is; its hints name only the V1 model

            def echo_ready(core: client.CoreV1Api = core) -> list:
                return ready_pods(core, "default", 1)

            pod = wait_for(echo_ready, "the echo pod Ready", timeout=WAIT_S)[0]
            assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(SECOND_POD_CIDR)
            pid = http_get_json(f"http://{pod.status.pod_ip}:8080/")["pid"]
            if attempt == "first":
                pid = _check_repair_after_pod_runner_dies(env, tmp_path / "cluster", core, pod, pid)
            run_testbed("down", env)
            listeners = listening_sockets()
            left = [p for p in ports if f"127.0.0.1:{p}" in listeners]
            assert not left, f"ports still listening after down: {left}"
            assert f"{pod.status.pod_ip}:8080" not in listeners, "the pod's socket is still open"
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), "pod process survived down"
            assert not (tmp_path / "cluster").exists(), "down left the state directory behind"
    finally:
        subprocess.run(
            [sys.executable, "-m", "e2e.testbed", "down"],
            env=env,
            cwd=paths.REPO_ROOT,
            capture_output=True,
            timeout=120,
        )


def _check_repair_after_pod_runner_dies(env, state_dir: Path, core, pod, old_pid: int) -> int:
    """`up` with only the pod runner dead restarts just it; the pod's process comes back."""
    runner_pid = int((state_dir / "pids" / "pod-runner.pid").read_text().split()[0])
    os.kill(runner_pid, signal.SIGKILL)
    assert "restarting only: pod-runner" in run_testbed("up", env).stdout
    name = pod.metadata.name

    def restarted():
        p = core.read_namespaced_pod(name, "default")
        return is_pod_ready(p) and p.status.container_statuses[0].restart_count == 1

    wait_for(restarted, "the pod Ready again with restartCount 1 after the pod runner restart", timeout=WAIT_S)
    new_pid = wait_for(
        lambda: (try_get_json(f"http://{pod.status.pod_ip}:8080/") or {}).get("pid"), "new process", timeout=WAIT_S
    )
    assert isinstance(new_pid, int) and new_pid != old_pid, new_pid
    assert not Path(f"/proc/{old_pid}").exists() or _is_zombie(old_pid), "the orphaned process still runs"
    return new_pid


def listening_sockets() -> set[str]:
    """Every listening TCP socket on the machine as "ip:port" (from `ss`, not by connecting:
    once the pod range's local route is gone, a connect may be answered elsewhere)."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if len(line.split()) >= 4}


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_down_removes_the_real_nodes_host_state_and_up_restores_it(layout, tmp_path):
    """On the main instance itself (one real node per machine): after `down` no container or
    node process, no mount under the state dir, no cni-* netns, no cni0, no KUBE-* chain, no
    kubepods cgroup, no node address, sysctls as before; `up` brings it all back.
    Runs last in the e2e tier (the file's last test), so the restart costs the other tests nothing."""
    from e2e.testbed import node_config, node_host

    if not layout.is_real_node:
        pytest.skip(f"the main instance runs in {layout.node_mode} mode ({paths.NODE_MODE_ENV})")
    before_up = json.loads((layout.state_dir / "node" / "host-before-up.json").read_text())["sysctls"]
    # A pod on the real node (the local sandbox image as its container), so there is a netns,
    # a bridge, volume mounts and a running container for `down` to remove.
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(layout.kubeconfig)))
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "host-state"},
            "spec": {  # type: ignore[arg-type]  # the client sends a dict body as is; its hints name only the V1 model
                "nodeName": node_config.NODE_NAME,
                "containers": [{"name": "c", "image": node_config.PAUSE_IMAGE, "imagePullPolicy": "Never"}],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("host-state", "default").status.phase == "Running",
        "a pod Running on the real node",
        timeout=WAIT_S,
    )
    assert node_host.is_bridge_present() and node_host.iptables_chains() and node_host.cni_netns(), (
        "the running real node should have its bridge, chains and pod netns"
    )
    env = {**os.environ, paths.STATE_DIR_ENV: str(layout.state_dir)}
    try:
        run_testbed("down", env)
        left = node_host.find_leftovers(layout)
        assert left == [], f"host state left after down: {left}"
        assert not layout.state_dir.exists()
        # find_leftovers is the code under test too: check the main points independently.
        assert not Path(f"/sys/class/net/{node_config.BRIDGE}").exists()
        assert not list(Path("/run/netns").glob("cni-*"))
        assert "KUBE-" not in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        assert "KUBE-" not in subprocess.run(["ip6tables-save"], capture_output=True, text=True).stdout
        assert not list(Path("/sys/fs/cgroup/memory").glob("kubepods*"))
        assert not [a for a in listening_sockets() if a.startswith(f"{layout.node_ip}:")]
        assert {k: (Path("/proc/sys") / k).read_text().strip() for k in node_host.SYSCTLS} == before_up
        # A failed `up` (after containerd started and the host was changed) names its step,
        # and `down` still removes everything.
        (tmp_path / "index.json").write_text('{"images": {"router": {}}}')
        failed = subprocess.run(
            [sys.executable, "-m", "e2e.testbed", "up"],
            cwd=paths.REPO_ROOT,
            env={**env, paths.IMAGES_DIR_ENV: str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert failed.returncode == 1 and "step 'import images into containerd'" in failed.stderr, failed
        assert node_host.is_containerd_ready(layout), "the failed up should have got as far as containerd"
        run_testbed("down", env)
        assert node_host.find_leftovers(layout) == []
    finally:
        run_testbed("up", env)
    assert testbed_cluster.is_up(layout)
