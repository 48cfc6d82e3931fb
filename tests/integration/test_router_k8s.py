"""The router's Kubernetes watch against the testbed's real API server: split from a ModelRollout's
status, endpoints from EndpointSlices, minimal RBAC, API blips, unreadable status -> all to stable."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from e2e import scenario
from tests.support.router_fixtures import RouterProcess, start_router
from tests.support.tcp import relay
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ROLLOUT = "speech"


def kubectl(tb, *args: str, stdin: str | None = None) -> str:
    return scenario.run_tool(tb, tb.kubectl, *args, stdin=stdin).stdout


def apply(tb, obj: dict) -> None:
    kubectl(tb, "apply", "-f", "-", stdin=yaml.safe_dump(obj))


def set_traffic(tb, ns: str, traffic: dict) -> None:
    kubectl(
        tb,
        "-n",
        ns,
        "patch",
        "modelrollout",
        ROLLOUT,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"traffic": traffic}}),
    )


def create_rollout(tb, ns: str, traffic: dict, sticky: str | None = None) -> None:
    router = {"stickyHeader": sticky} if sticky else {}
    apply(
        tb,
        {
            "apiVersion": "modelrollout.dev/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": ROLLOUT, "namespace": ns},
            "spec": {
                "model": {"name": "speech-commands", "version": "v1"},
                "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
                "trafficRouting": {"router": router},
            },
        },
    )
    # The operator copies the spec's header into status.traffic; the router reads only that.
    set_traffic(tb, ns, {**traffic, "stickyHeader": sticky} if sticky else traffic)


def set_slice(
    tb, ns: str, version: str, endpoints: list[tuple[str, bool]], suffix: str = "a", port: int = 8080
) -> None:
    """An EndpointSlice of Service <rollout>-<version>, as the EndpointSlice controller writes them."""
    apply(
        tb,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{ROLLOUT}-{version}-{suffix}",
                "namespace": ns,
                "labels": {
                    "kubernetes.io/service-name": f"{ROLLOUT}-{version}",
                    "endpointslice.kubernetes.io/managed-by": "router-tests",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [addr], "conditions": {"ready": ready}} for addr, ready in endpoints],
        },
    )


def deploy_version(tb, ns: str, version: str, replicas: int = 1) -> None:
    """Real pods (the testbed's echo image, run by the pod runner on their pod IPs) labelled as the
    operator labels a model version, with a readiness probe the pod runner honours, behind the
    version's Service `<rollout>-<version>` (port `http`), whose EndpointSlices the router reads."""
    labels = {
        "modelrollout.dev/rollout": ROLLOUT,
        "modelrollout.dev/version": version,
        "app.kubernetes.io/name": "model-server",
    }
    apply(
        tb,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"{ROLLOUT}-{version}", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "echo",
                                "image": "modelrollout/testbed-echo:dev",
                                "args": ["--host=$(POD_IP)", "--port=8080"],
                                "env": [
                                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                    {"name": "ECHO_MESSAGE", "value": version},
                                ],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
                            }
                        ]
                    },
                },
            },
        },
    )
    apply(
        tb,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{ROLLOUT}-{version}", "namespace": ns, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
        },
    )


def wait_versions_ready(tb, ns: str, *versions: str) -> None:
    for v in versions:
        kubectl(tb, "-n", ns, "rollout", "status", f"deployment/{ROLLOUT}-{v}", "--timeout=120s")


def router_kubeconfig(tb, ns: str, tmp: Path, server: str | None = None, rollouts: bool = True) -> Path:
    """A ServiceAccount kubeconfig with only the RBAC the router needs (documented in docs/router.md)."""
    rules = [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    ]
    if rollouts:
        rules.append(
            {"apiGroups": ["modelrollout.dev"], "resources": ["modelrollouts"], "verbs": ["get", "list", "watch"]}
        )
    for obj in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "router", "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "router", "namespace": ns},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "router", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "router"},
            "subjects": [{"kind": "ServiceAccount", "name": "router", "namespace": ns}],
        },
    ):
        apply(tb, obj)
    token = kubectl(tb, "-n", ns, "create", "token", "router", "--duration=1h").strip()
    admin = yaml.safe_load(tb.kubeconfig.read_text())
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(cluster.pop("certificate-authority")).read_bytes()
        ).decode()
    if server:
        cluster["server"] = server
    path = tmp / f"router-kubeconfig-{uuid.uuid4().hex[:6]}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "r",
                "clusters": [{"name": "c", "cluster": cluster}],
                "contexts": [{"name": "r", "context": {"cluster": "c", "user": "u", "namespace": ns}}],
                "users": [{"name": "u", "user": {"token": token}}],
            }
        )
    )
    return path


@pytest.fixture
def procs():
    started: list[RouterProcess | TcpProxy] = []
    yield started
    for p in started:
        if isinstance(p, TcpProxy):
            p.close()
        else:
            p.stop()


def versions_seen(router, n: int = 40, headers: dict | None = None) -> dict[str, int]:
    """Sends n requests; checks the router's x-model-version against the pod that really answered."""
    client, seen = router.client(), dict[str, int]()
    for _ in range(n):
        r = client.request("GET", "/who", headers=headers)
        assert r.status == 200, r.body
        version = r.headers["x-model-version"]
        assert r.json()["message"] == version  # the echo pod of that version answered
        seen[version] = seen.get(version, 0) + 1
    return seen


def start_two_versions(tb, ns):
    deploy_version(tb, ns, "v1")
    deploy_version(tb, ns, "v2")
    wait_versions_ready(tb, ns, "v1", "v2")


def k8s_router(router_bin, tmp_path, tb, ns, *args, source: str = "endpointslices", **kc):
    """The router as a pod would run it, with a least-privilege ServiceAccount kubeconfig."""
    return start_router(
        router_bin,
        tmp_path,
        f"--namespace={ns}",
        f"--endpoints-source={source}",
        *args,
        env={"KUBECONFIG": str(router_kubeconfig(tb, ns, tmp_path, **kc))},
    )


def test_split_follows_the_rollout_status(tb, ns, router_bin, procs, tmp_path):
    start_two_versions(tb, ns)
    create_rollout(tb, ns, {"stable": {"version": "v1", "weight": 100}, "candidate": None})
    router = k8s_router(router_bin, tmp_path, tb, ns)
    procs.append(router)
    router.wait_ready()
    assert versions_seen(router) == {"v1": 40}
    set_traffic(tb, ns, {"stable": {"version": "v1", "weight": 0}, "candidate": {"version": "v2", "weight": 100}})
    t0 = time.monotonic()
    wait_for(
        lambda: router.metric("router_traffic_weight", version="v2", role="candidate") == 100,
        "the candidate weight to reach the router",
        timeout=20,
        every=0.05,
    )
    print(f"status patch -> router applied in {time.monotonic() - t0:.2f} s")
    assert versions_seen(router) == {"v2": 40}
    set_traffic(tb, ns, {"stable": {"version": "v1", "weight": 50}, "candidate": {"version": "v2", "weight": 50}})
    wait_for(
        lambda: router.metric("router_traffic_weight", version="v2", role="candidate") == 50,
        "the 50/50 split",
        timeout=20,
        every=0.05,
    )
    assert set(versions_seen(router, 60)) == {"v1", "v2"}  # one-sided with p = 2^-59


@pytest.mark.parametrize("source", ["endpointslices", "pods"])
def test_pod_readiness_decides_the_endpoints(tb, ns, router_bin, procs, tmp_path, source):
    deploy_version(tb, ns, "v1", replicas=2)
    wait_versions_ready(tb, ns, "v1")
    create_rollout(tb, ns, {"stable": {"version": "v1", "weight": 100}})
    router = k8s_router(router_bin, tmp_path, tb, ns, source=source)
    procs.append(router)
    router.wait_ready()
    client = router.client()
    hosts = {client.request("GET", "/who").json()["host"] for _ in range(10)}
    assert len(hosts) == 2  # round robin over both ready pods
    # Turn one pod's readiness off through its own endpoint; the pod runner's probe flips the
    # Pod's Ready condition (and the EndpointSlice controller the endpoint's), and the router must
    # stop using it.
    down = sorted(hosts)[0]
    import http.client

    conn = http.client.HTTPConnection(down, 8080, timeout=5)
    conn.request("POST", "/readyz?ready=0")
    assert conn.getresponse().status == 200
    wait_for(
        lambda: any(
            r.get("msg") == "endpoints updated" and r.get("endpoints") == [f"{sorted(hosts)[1]}:8080"]
            for r in router.log_records()
        ),
        "the unready pod to be dropped",
        timeout=30,
        every=0.05,
    )
    assert {client.request("GET", "/who").json()["host"] for _ in range(10)} == {sorted(hosts)[1]}


def set_pod_ready(host: str, ready: bool) -> None:
    """Flips an echo pod's own readiness answer; the probe then flips its Ready condition."""
    import http.client

    conn = http.client.HTTPConnection(host, 8080, timeout=5)
    conn.request("POST", f"/readyz?ready={int(ready)}")
    assert conn.getresponse().status == 200


@pytest.mark.parametrize("source", ["endpointslices", "pods"])
def test_only_pod_turning_unready_is_still_served_by_panic_routing(tb, ns, router_bin, procs, tmp_path, source):
    # The incident in docs/demo.md: stable's one pod fails its readiness probe (slow, not dead).
    deploy_version(tb, ns, "v1")
    wait_versions_ready(tb, ns, "v1")
    create_rollout(tb, ns, {"stable": {"version": "v1", "weight": 100}})
    router = k8s_router(router_bin, tmp_path, tb, ns, source=source)
    procs.append(router)
    router.wait_ready()
    host = router.client().request("GET", "/who").json()["host"]
    set_pod_ready(host, False)
    router.wait_metric("router_panic_routing", 1, timeout=30, version="v1")
    assert versions_seen(router, 20) == {"v1": 20}  # answered by the not-ready pod
    assert router.is_ready()
    assert any(
        r.get("msg", "").startswith("panic routing: no ready endpoints") and r.get("not_ready") == [f"{host}:8080"]
        for r in router.log_records()
    )
    set_pod_ready(host, True)
    router.wait_metric("router_panic_routing", 0, timeout=30, version="v1")
    assert versions_seen(router, 20) == {"v1": 20}
    assert any(r.get("msg") == "panic routing ended: ready endpoints are back" for r in router.log_records())


def test_endpointslice_watch_keeps_ready_endpoints_on_port_http(tb, ns, router_bin, procs, tmp_path):
    # Hand-written slices (documentation addresses, nothing listens) pin the edge cases: several
    # slices per Service, a port per slice, ready unset/false, deletion, other Services' slices.
    # Only the endpoint sets the router derives (its logs) are checked, not traffic.
    set_slice(tb, ns, "v1", [("192.0.2.10", True), ("192.0.2.11", False)], suffix="a")
    create_rollout(tb, ns, {"stable": {"version": "v1", "weight": 100}})
    router = start_router(
        router_bin, tmp_path, f"--namespace={ns}", env={"KUBECONFIG": str(router_kubeconfig(tb, ns, tmp_path))}
    )
    procs.append(router)

    def endpoint_sets():
        return [
            r["endpoints"]
            for r in router.log_records()
            if r.get("msg") == "endpoints updated" and r.get("version") == "v1"
        ]

    wait_for(lambda: ["192.0.2.10:8080"] in endpoint_sets(), "the ready endpoint", timeout=20, every=0.05)
    router.wait_ready()
    set_slice(tb, ns, "v1", [("192.0.2.20", True)], suffix="b", port=9000)
    wait_for(
        lambda: ["192.0.2.10:8080", "192.0.2.20:9000"] in endpoint_sets(), "the second slice", timeout=20, every=0.05
    )
    set_slice(tb, ns, "v1", [("192.0.2.10", False), ("192.0.2.11", True)], suffix="a")
    wait_for(
        lambda: ["192.0.2.11:8080", "192.0.2.20:9000"] in endpoint_sets(), "readiness flips", timeout=20, every=0.05
    )
    kubectl(tb, "-n", ns, "delete", "endpointslice", f"{ROLLOUT}-v1-b")
    wait_for(
        lambda: endpoint_sets()[-1] == ["192.0.2.11:8080"], "the deleted slice to be dropped", timeout=20, every=0.05
    )
    # Slices of other Services (another rollout's, or this router's own) are ignored.
    apply(
        tb,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "other-v1-a", "namespace": ns, "labels": {"kubernetes.io/service-name": "other-v1"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["192.0.2.99"]}],
        },
    )
    time.sleep(1)
    assert all("192.0.2.99:8080" not in eps for eps in endpoint_sets())


def test_sticky_header_from_status(tb, ns, router_bin, procs, tmp_path):
    start_two_versions(tb, ns)
    create_rollout(
        tb,
        ns,
        {"stable": {"version": "v1", "weight": 50}, "candidate": {"version": "v2", "weight": 50}},
        sticky="x-user-id",
    )
    router = k8s_router(router_bin, tmp_path, tb, ns)
    procs.append(router)
    router.wait_ready()
    per_user = {u: versions_seen(router, 4, {"x-user-id": u}) for u in (f"user-{i}" for i in range(30))}
    assert all(len(v) == 1 for v in per_user.values())
    assert {next(iter(v)) for v in per_user.values()} == {"v1", "v2"}


class TcpProxy:
    """A loopback TCP forwarder to the API server that a test can cut: while cut, it drops every
    connection (existing and new) but keeps its port, so nothing else can take it meanwhile."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.cut_off = target, False
        self.conns: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=relay, args=(src, dst), daemon=True).start()

    def cut(self) -> None:
        self.cut_off = True
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns = []

    def restore(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_api_blip_keeps_the_last_split_and_recovers(tb, ns, router_bin, procs, tmp_path):
    start_two_versions(tb, ns)
    create_rollout(tb, ns, {"stable": {"version": "v1", "weight": 50}, "candidate": {"version": "v2", "weight": 50}})
    admin = yaml.safe_load(tb.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    host, port = admin.split("//")[1].rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    procs.append(proxy)
    router = k8s_router(router_bin, tmp_path, tb, ns, server=f"https://127.0.0.1:{proxy.port}")
    procs.append(router)
    router.wait_ready()
    proxy.cut()
    time.sleep(1.0)  # let the watches notice the cut and start backing off
    assert router.is_ready()
    assert set(versions_seen(router, 60)) == {"v1", "v2"}  # last known 50/50 still in force
    proxy.restore()
    set_traffic(tb, ns, {"stable": {"version": "v1", "weight": 100}, "candidate": None})
    wait_for(
        lambda: (
            router.metric("router_traffic_weight", version="v2", role="candidate") == 0
            and router.metric("router_traffic_weight", version="v1", role="stable") == 100
        ),
        "the watch to recover after the blip",
        timeout=60,
        every=0.05,
    )
    assert versions_seen(router) == {"v1": 40}


def test_unreadable_status_routes_everything_to_stable(tb, ns, router_bin, procs, tmp_path):
    start_two_versions(tb, ns)
    create_rollout(tb, ns, {"stable": {"version": "v1", "weight": 50}, "candidate": {"version": "v2", "weight": 50}})
    # RBAC forbids reading ModelRollouts, so the status (50/50) is invisible to the router.
    router = k8s_router(
        router_bin, tmp_path, tb, ns, "--stable-version=v1", "--initial-sync-timeout=1s", rollouts=False
    )
    procs.append(router)
    router.wait_ready()
    assert versions_seen(router, 40) == {"v1": 40}
    assert any(r.get("source") == "safe-default" for r in router.log_records())
