"""The security context proven on the real node, not just declared: every container the chart
and the operator run (operator, router, model server) runs as its non-root UID, cannot write its
root filesystem, holds no capabilities, and its memory limit is enforced by the kernel (a
deliberate test pod over its limit is OOM-killed).

Evidence comes from two sides: inside the container (`kubectl exec`) where the image has a
shell-free Python, and from the host (`/proc/<pid>/status`, `/proc/<pid>/mountinfo` and the
container's memory cgroup of the process containerd reports for the container ID) for all,
including the router, whose image is FROM scratch and has nothing to exec.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from kubernetes import client

from e2e import rollouts, scenario
from e2e.testbed import node_config, node_host, paths
from tests.support.waiting import wait_for

from .support import HEALTHY_TIMEOUT, NAME, apply_and_wait, operator_leader_pod

pytestmark = pytest.mark.e2e

OOM_LIMIT = "64Mi"
WAIT_S = 120
# The model server gets limits only from spec.server.resources (the operator sets none by
# default); the rollout here declares them, so the kernel's enforcement can be checked.
SERVER_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


@pytest.fixture(scope="module")
def layout() -> paths.Layout:
    lay = paths.default_layout()
    if not lay.is_real_node:
        pytest.fail(
            f"these tests need the real node; {paths.NODE_MODE_ENV}={lay.node_mode} "
            "(start the default testbed with `make cluster-up`)"
        )
    return lay


@pytest.fixture(scope="module")
def rollout_pods(cluster, api, operator, layout):
    """A Healthy v1 rollout (model server with resources) in its own namespace: its router and
    model-server pods."""
    ns = f"e2e-sec-{int(time.time()) % 100000}"
    scenario.ensure_namespace(cluster, ns)
    manifest = rollouts.compute_canary(NAME, "v1", namespace=ns)
    manifest["spec"]["server"]["resources"] = SERVER_RESOURCES
    try:
        apply_and_wait(cluster, api, manifest, ["Healthy"], HEALTHY_TIMEOUT)
        pods = client.CoreV1Api(api).list_namespaced_pod(ns).items
        yield {
            role: [p for p in pods if p.metadata.labels.get("app.kubernetes.io/name") == role]
            for role in ("router", "model-server")
        }
    finally:
        scenario.run_tool(cluster, cluster.kubectl, "delete", "namespace", ns, "--wait=false", check=False)


def _operator_pod(api) -> client.V1Pod:
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(scenario.OPERATOR_NAMESPACE, label_selector="app.kubernetes.io/component=operator")
        .items
    )
    return operator_leader_pod(api, pods)  # the leader: the one whose log has kopf's lines


def _containers_under_test(api, rollout_pods) -> list[tuple[str, client.V1Pod]]:
    found = [("operator", _operator_pod(api))]
    for role in ("router", "model-server"):
        assert rollout_pods[role], f"the rollout has no {role} pod: {rollout_pods}"
        found.append((role, rollout_pods[role][0]))
    return found


def _host_pid(layout, pod: client.V1Pod) -> int:
    """The host pid of the pod's first container's main process, from containerd."""
    assert pod.spec.node_name == node_config.NODE_NAME, f"{pod.metadata.name} is not on the real node"
    statuses = pod.status.container_statuses
    assert statuses, f"{pod.metadata.name} reports no container statuses"
    container_id = statuses[0].container_id.removeprefix("containerd://")
    tasks = node_host.ctr(layout, "tasks", "list").stdout.splitlines()
    pids = [int(line.split()[1]) for line in tasks[1:] if line.split()[0] == container_id]
    assert pids, f"containerd has no task {container_id} for {pod.metadata.name}: {tasks}"
    return pids[0]


def _pod_ref(pod: client.V1Pod) -> tuple[str, str]:
    """The pod's namespace and name, for `kubectl -n <namespace> <name>`."""
    meta = pod.metadata
    assert meta is not None and meta.namespace and meta.name, f"a pod from the API without namespace/name: {meta}"
    return meta.namespace, meta.name


def _status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _expected_uid(pod: client.V1Pod) -> int | None:
    container = pod.spec.containers[0]
    for ctx in (container.security_context, pod.spec.security_context):
        if ctx is not None and ctx.run_as_user is not None:
            return ctx.run_as_user
    return None


def test_every_container_runs_as_its_non_root_uid_with_no_capabilities(layout, api, rollout_pods):
    for role, pod in _containers_under_test(api, rollout_pods):
        fields = _status_fields(_host_pid(layout, pod))
        uids = {int(u) for u in fields["Uid"].split()}  # real, effective, saved, filesystem
        gids = {int(g) for g in fields["Gid"].split()}
        assert len(uids) == 1 and 0 not in uids, f"{role}: Uid {fields['Uid']}"
        want = _expected_uid(pod)
        assert want is None or uids == {want}, f"{role}: runs as {uids}, spec says {want}"
        assert 0 not in gids, f"{role}: Gid {fields['Gid']}"
        for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert int(fields[cap], 16) == 0, f"{role}: {cap} {fields[cap]}"
        assert fields["NoNewPrivs"] == "1", f"{role}: allowPrivilegeEscalation is not false"


def test_every_root_filesystem_is_read_only(layout, api, rollout_pods):
    for role, pod in _containers_under_test(api, rollout_pods):
        pid = _host_pid(layout, pod)
        root = [
            line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if line.split()[4] == "/"
        ]
        assert root, f"{role}: no / in the container's mountinfo"
        assert "ro" in root[-1][5].split(","), f"{role}: / is mounted {root[-1][5]}"


@pytest.mark.parametrize("role", ["operator", "model-server"])
def test_writing_the_root_filesystem_fails_inside_the_container(cluster, api, rollout_pods, role):
    """From inside, through `kubectl exec` (the router's FROM-scratch image has nothing to run;
    its read-only / is shown from the host above)."""
    pod = dict(_containers_under_test(api, rollout_pods))[role]
    probe = (
        "import os, sys\n"
        "try:\n    open('/written-by-e2e', 'w')\nexcept OSError as e:\n    print(e.strerror); sys.exit(3)\n"
        "print('wrote /'); sys.exit(0)\n"
    )
    proc = scenario.run_tool(
        cluster, cluster.kubectl, "exec", "-n", *_pod_ref(pod), "--", "python3", "-c", probe, check=False, timeout=60
    )
    assert proc.returncode == 3, f"{role}: exit {proc.returncode}: {proc.stdout} {proc.stderr}"
    assert "Read-only file system" in proc.stdout
    uid = scenario.run_tool(
        cluster,
        cluster.kubectl,
        "exec",
        "-n",
        *_pod_ref(pod),
        "--",
        "python3",
        "-c",
        "import os; print(os.getuid())",
        timeout=60,
    ).stdout.strip()
    assert uid != "0" and int(uid) == _expected_uid(pod)


def test_memory_limits_are_the_containers_cgroup_limits(layout, api, rollout_pods):
    for role, pod in _containers_under_test(api, rollout_pods):
        limit = (pod.spec.containers[0].resources.limits or {}).get("memory")
        assert limit, f"{role}: no memory limit declared"
        cgroup = [
            line.split(":", 2)[2]
            for line in Path(f"/proc/{_host_pid(layout, pod)}/cgroup").read_text().splitlines()
            if line.split(":", 2)[1] == "memory"
        ]
        path = Path("/sys/fs/cgroup/memory") / cgroup[0].lstrip("/") / "memory.limit_in_bytes"
        assert int(path.read_text()) == _quantity_bytes(limit), f"{role}: {path} vs limit {limit}"


def _quantity_bytes(q: str) -> int:
    match = re.fullmatch(r"(\d+)([KMGT]i)?", q)
    assert match, f"memory limit {q!r}: expected a whole number with an optional Ki/Mi/Gi/Ti suffix"
    number, unit = match.groups()
    return int(number) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]


def test_a_container_over_its_memory_limit_is_oom_killed(cluster, api, layout):
    """A deliberate pod (the model-server image's Python) allocating 4x its limit."""
    ns = f"e2e-oom-{int(time.time()) % 100000}"
    scenario.ensure_namespace(cluster, ns)
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_pod(
            ns,
            {
                "metadata": {"name": "hog"},
                "spec": {  # type: ignore[arg-type]  # the client sends a dict body as is; its hints name only the V1 model
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                    "containers": [
                        {
                            "name": "hog",
                            "image": "modelrollout/model-server:dev",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python3", "-c", "import time; b = bytearray(256 * 2**20); time.sleep(600)"],
                            "resources": {"limits": {"memory": OOM_LIMIT, "cpu": "200m"}},
                            "securityContext": {
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        )

        def restarted():
            statuses = core.read_namespaced_pod("hog", ns).status.container_statuses or []
            last = statuses[0] if statuses else None
            return last if last and last.last_state and last.last_state.terminated else None

        last = wait_for(restarted, "a restart after an over-limit allocation", timeout=WAIT_S, every=1)
        terminated = last.last_state.terminated
        assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137), terminated
        assert last.restart_count >= 1
    finally:
        core.delete_namespace(ns)


def test_pods_reach_the_api_through_its_service_ip_and_prometheus_at_the_node_ip(cluster, api, layout, operator):
    """From inside the operator's container: the `kubernetes` Service's ClusterIP (kube-proxy's
    NAT to the API server on the node address) with the pod's own token, and Prometheus."""
    pod = _operator_pod(api)
    probe = (
        "import os, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "ctx = ssl.create_default_context(cafile=f'{sa}/ca.crt')\n"
        "host, port = os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT']\n"
        "req = urllib.request.Request(f'https://{host}:{port}/version',\n"
        "    headers={'Authorization': 'Bearer ' + open(f'{sa}/token').read()})\n"
        "print(host, urllib.request.urlopen(req, context=ctx, timeout=10).status)\n"
        "print(urllib.request.urlopen(os.environ['PROM'] + '/-/ready', timeout=10).status)\n"
    )
    out = scenario.run_tool(
        cluster,
        cluster.kubectl,
        "exec",
        "-n",
        *_pod_ref(pod),
        "--",
        "env",
        f"PROM={layout.prometheus_url}",
        "python3",
        "-c",
        probe,
        timeout=60,
    ).stdout.split()
    assert out == ["10.0.0.1", "200", "200"], out


def test_kubectl_logs_reads_the_real_containers_output(cluster, api, operator):
    pod = _operator_pod(api)
    logs = scenario.run_tool(cluster, cluster.kubectl, "logs", "-n", *_pod_ref(pod), "--tail=200", timeout=60).stdout
    assert "kopf" in logs, logs[-2000:]
