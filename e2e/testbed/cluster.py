"""`up` and `down` for the testbed: start the daemons in order, wait until usable, tear down.

`up` is idempotent (a running, healthy testbed is left alone; a half-dead one is replaced);
`down` stops every recorded process group, removes the real node's host state (node_host.py)
and the state directory.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from . import netroute, node_config, node_host, procs
from .components import COMPONENTS, NODE_COMPONENTS, component_cwd, components_of, compute_argv
from .kwok_config import compute_node, write_kwok_config
from .ociimage import compute_image_archive
from .paths import PROCESS_NODE_TAINT, Binaries, Layout, images_dir
from .pki import ensure_pki, write_admin_kubeconfig
from .pod_runner.images import load_image_map
from .prometheus import write_prometheus_config


class TestbedError(RuntimeError):
    """Something a person must fix (missing binary, component that died); message says what."""


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, msg: str) -> None:
        print(f"[testbed {time.monotonic() - self.start:5.1f}s] {msg}", flush=True)


def _log_tail(lay: Layout, name: str, lines: int = 25) -> str:
    path = lay.logs_dir / f"{name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ssl_context(lay: Layout) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(lay.pki_dir / "ca.crt"))
    ctx.load_cert_chain(lay.pki_dir / "admin.crt", lay.pki_dir / "admin.key")
    return ctx


def is_http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def wait_until(lay: Layout, name: str, what: str, check, timeout_s: float) -> None:
    """Polls `check()` until true; fails early, with the log tail, if component `name` died."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if procs.read_live_pid(lay.pids_dir / f"{name}.pid") is None:
            raise TestbedError(f"{name} exited while waiting for {what}; log tail:\n{_log_tail(lay, name)}")
        if time.monotonic() > deadline:
            raise TestbedError(
                f"timed out after {timeout_s:.0f}s waiting for {what}; {name} log tail:\n{_log_tail(lay, name)}"
            )
        time.sleep(0.2)


def is_up(lay: Layout) -> bool:
    """All components alive and the API server ready."""
    if not (lay.pki_dir / "ca.crt").exists():
        return False
    if any(procs.read_live_pid(lay.pids_dir / f"{c}.pid") is None for c in components_of(lay)):
        return False
    return is_http_ok(f"{lay.apiserver_url}/readyz", _ssl_context(lay))


def _is_repairable(lay: Layout) -> bool:
    """etcd and the API server run and answer: restart the others in place, keep the data."""
    if not (lay.pki_dir / ".complete").exists():
        return False
    if any(procs.read_live_pid(lay.pids_dir / f"{c}.pid") is None for c in COMPONENTS[:2]):
        return False
    return is_http_ok(f"{lay.apiserver_url}/readyz", _ssl_context(lay))


def _has_leftovers(lay: Layout) -> bool:
    return lay.state_dir.exists() and any(lay.state_dir.iterdir())


def _kubectl(b: Binaries, lay: Layout, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(b.kubectl), f"--kubeconfig={lay.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise TestbedError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _prepare_state(b: Binaries, lay: Layout) -> None:
    for d in (lay.state_dir, lay.logs_dir, lay.pod_logs_dir, lay.pids_dir):
        d.mkdir(parents=True, exist_ok=True)
    ensure_pki(lay.pki_dir)
    write_admin_kubeconfig(lay.pki_dir, lay.apiserver_url, lay.kubeconfig)
    if lay.is_real_node:
        node_host.write_node_configs(lay)
    write_kwok_config(lay.state_dir / "kwok.yaml", b.kwok_stages, sorted(load_image_map()))
    write_prometheus_config(lay.state_dir / "prometheus.yml", lay.kubeconfig)


def _start(name: str, b: Binaries, lay: Layout) -> None:
    if name == "pod-runner":
        (lay.state_dir / "pod-runner.ready").unlink(missing_ok=True)
    procs.spawn(name, compute_argv(name, b, lay), lay.logs_dir / f"{name}.log", lay.pids_dir, cwd=component_cwd())


def _is_node_ready(b: Binaries, lay: Layout, node: str) -> bool:
    out = subprocess.run(
        [
            str(b.kubectl),
            f"--kubeconfig={lay.kubeconfig}",
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip() == "True"


def _has_default_sa(b: Binaries, lay: Layout) -> bool:
    out = subprocess.run(
        [
            str(b.kubectl),
            f"--kubeconfig={lay.kubeconfig}",
            "get",
            "serviceaccount",
            "default",
            "-n",
            "default",
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.returncode == 0


def _missing_binaries(b: Binaries, lay: Layout) -> list[str]:
    node_only = {b.kubelet, b.kube_proxy, b.pause}
    return [str(p) for p in b.missing() if p != b.router and (lay.is_real_node or p not in node_only)]


def compute_listeners(lay: Layout) -> list[tuple[str, int, str]]:
    """(address, port, component) of every TCP listener this instance will open."""
    p, ip, lo = lay.ports, lay.listen_ip, "127.0.0.1"
    listeners = [
        (lo, p.etcd_client, "etcd"),
        (lo, p.etcd_peer, "etcd"),
        (ip, p.apiserver, "kube-apiserver"),
        (lo, p.controller_manager, "kube-controller-manager"),
        (lo, p.scheduler, "kube-scheduler"),
        (lo, p.kwok, "kwok"),
        (ip, p.prometheus, "prometheus"),
    ]
    if lay.is_real_node:
        listeners += [
            (lay.node_ip, p.kubelet, "kubelet"),
            (lo, p.kubelet_healthz, "kubelet"),
            (lo, p.kube_proxy_metrics, "kube-proxy"),
            (lo, p.kube_proxy_healthz, "kube-proxy"),
        ]
    return listeners


def _check_ports_free(lay: Layout) -> None:
    taken = netroute.listening_sockets()
    busy = [
        f"{port} ({name}, on {addr})"
        for addr, port, name in compute_listeners(lay)
        if netroute.is_port_taken(taken, addr, port)
    ]
    if busy:
        raise TestbedError(
            "ports already in use by another process: "
            + ", ".join(busy)
            + " (see `ss -ltnp`; stop that process, or run this instance with "
            "MODELROLLOUT_TESTBED_PORT_OFFSET=<n> to shift every port)"
        )


def up(b: Binaries, lay: Layout) -> None:
    clock = _Clock()
    if is_up(lay):
        clock.say(f"already up (kubeconfig {lay.kubeconfig}); nothing to do")
        return
    missing = _missing_binaries(b, lay)
    if missing:
        raise TestbedError("missing testbed binaries (run `make testbed-bin`): " + ", ".join(missing))
    if lay.is_real_node:
        try:
            node_host.check_host(lay)
        except node_host.NodeError as exc:
            raise TestbedError(f"step 'check the host for the real node': {exc}") from None
    if _is_repairable(lay):
        dead = [c for c in components_of(lay) if procs.read_live_pid(lay.pids_dir / f"{c}.pid") is None]
        clock.say(f"API server is up; restarting only: {', '.join(dead)}")
        for name in dead:
            if name in NODE_COMPONENTS:
                continue
            _start(name, b, lay)
        _finish_bootstrap(b, lay, clock)
        if lay.is_real_node:
            _start_node(b, lay, clock, [c for c in NODE_COMPONENTS if c in dead])
        clock.say("testbed repaired")
        return
    if _has_leftovers(lay) or (lay.is_real_node and node_host.find_leftovers(lay)):
        clock.say(f"found a stopped or partial testbed in {lay.state_dir}; cleaning it first")
        down(lay, quiet=True)
    _check_ports_free(lay)
    try:
        netroute.ensure_local_route(lay.pod_cidr)
    except netroute.RouteError as exc:
        raise TestbedError(str(exc)) from None
    if lay.is_real_node:
        node_host.record_host_state(lay)
        node_host.ensure_node_address(lay)
    _prepare_state(b, lay)
    clock.say(f"PKI and configs written to {lay.state_dir}")
    _start("etcd", b, lay)
    wait_until(lay, "etcd", "etcd health", lambda: is_http_ok(f"http://127.0.0.1:{lay.ports.etcd_client}/health"), 30)
    clock.say("etcd healthy")
    _start("kube-apiserver", b, lay)
    ctx = _ssl_context(lay)
    wait_until(lay, "kube-apiserver", "API server /readyz", lambda: is_http_ok(f"{lay.apiserver_url}/readyz", ctx), 120)
    clock.say("kube-apiserver ready")
    # kwok watches Logs objects from its start, so their CRD must exist first.
    _kubectl(b, lay, "apply", "--server-side", "-f", str(b.kwok_crds))
    for name in COMPONENTS[2:]:
        _start(name, b, lay)
    _finish_bootstrap(b, lay, clock)
    if lay.is_real_node:
        _start_node(b, lay, clock, list(NODE_COMPONENTS))
    clock.say(f"testbed up: {lay.apiserver_url}, Prometheus {lay.prometheus_url}")
    print(
        f"  kubeconfig: {lay.kubeconfig}\n  kubectl:    {b.kubectl}\n  helm:       {b.helm}\n"
        f"  logs:       {lay.logs_dir} (pods: {lay.pod_logs_dir}/<namespace>_<pod>.log)",
        flush=True,
    )


def _finish_bootstrap(b: Binaries, lay: Layout, clock: _Clock) -> None:
    taints = [PROCESS_NODE_TAINT] if lay.is_real_node else None
    _kubectl(b, lay, "apply", "-f", "-", stdin=json.dumps(compute_node(taints=taints)))
    _kubectl(b, lay, "apply", "--server-side", "-f", str(b.gateway_api_crds))
    clock.say("node object and Gateway API CRDs applied")
    wait_until(
        lay, "kwok", "the kwok node to be Ready", lambda: _is_node_ready(b, lay, compute_node()["metadata"]["name"]), 60
    )
    wait_until(lay, "kube-controller-manager", "the default ServiceAccount", lambda: _has_default_sa(b, lay), 60)
    wait_until(lay, "prometheus", "Prometheus /-/ready", lambda: is_http_ok(f"{lay.prometheus_url}/-/ready"), 60)
    wait_until(
        lay, "pod-runner", "the pod runner to start watching", lambda: (lay.state_dir / "pod-runner.ready").exists(), 60
    )
    _kubectl(b, lay, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(b.gateway_api_crds))


# RBAC runs without the Node authorizer, so the kubelet's group gets the node role by binding.
NODE_RBAC = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "modelrollout-testbed:system-nodes"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
}


def _node_step(step: str, fn, *args):
    """Runs one step of the node's start; a failure names the step."""
    try:
        return fn(*args)
    except (node_host.NodeError, TestbedError, OSError, ValueError) as exc:
        raise TestbedError(f"real node, step '{step}': {exc}") from None


def _import_images(lay: Layout, b: Binaries, clock: _Clock) -> None:
    pause_archive = node_config.image_store_dir() / "pause.oci.tar"
    data = compute_image_archive(node_config.PAUSE_IMAGE, b.pause.read_bytes(), "/pause")
    if not pause_archive.exists() or pause_archive.read_bytes() != data:
        pause_archive.write_bytes(data)  # rewritten only when it changed: keeps the import cached
    archives = [pause_archive, *node_config.find_image_archives(images_dir())]
    done = [a.name for a in archives if node_host.import_image_archive(lay, a)]
    node_host.tag_docker_io_names(lay)
    have = node_host.list_images(lay)
    absent = [i for i in node_config.CHART_IMAGES if node_config.cri_name(i) not in have]
    clock.say(
        f"images in containerd: imported {', '.join(done) or 'nothing'}; "
        f"{len(archives) - len(done)} unchanged archives already there"
    )
    if absent:
        print(
            f"  WARNING: no archive for {', '.join(absent)} in {images_dir()}: pods of these images "
            "will not start on the real node; run `make images` (it exports them there)",
            flush=True,
        )


def _start_node(b: Binaries, lay: Layout, clock: _Clock, names: list[str]) -> None:
    objects = {"apiVersion": "v1", "kind": "List", "items": [NODE_RBAC, *node_config.compute_kubernetes_endpoints(lay)]}
    _node_step(
        "RBAC and the kubernetes Service endpoints",
        lambda: _kubectl(b, lay, "apply", "-f", "-", stdin=json.dumps(objects)),
    )
    if "containerd" in names:
        _start("containerd", b, lay)
        _node_step(
            "start containerd",
            wait_until,
            lay,
            "containerd",
            "containerd's socket",
            lambda: node_host.is_containerd_ready(lay),
            30,
        )
        _node_step("import images into containerd", _import_images, lay, b, clock)
    if "kubelet" in names:
        _start("kubelet", b, lay)
        _node_step(
            "start the kubelet",
            wait_until,
            lay,
            "kubelet",
            f"node {node_config.NODE_NAME} Ready",
            lambda: _is_node_ready(b, lay, node_config.NODE_NAME),
            90,
        )
        clock.say(f"kubelet: node {node_config.NODE_NAME} Ready")
    if "kube-proxy" in names:
        _start("kube-proxy", b, lay)
        _node_step(
            "start kube-proxy",
            wait_until,
            lay,
            "kube-proxy",
            "kube-proxy /healthz",
            lambda: is_http_ok(f"http://127.0.0.1:{lay.ports.kube_proxy_healthz}/healthz"),
            60,
        )
        clock.say("kube-proxy synced (Service virtual IPs)")


def _stop_node(lay: Layout, stopped: list[str]) -> None:
    for name in ("kube-proxy", "kubelet"):
        if procs.stop_pidfile(lay.pids_dir / f"{name}.pid", 10):
            stopped.append(name)
    killed = node_host.remove_containers(lay)
    if killed:
        stopped.append(f"{killed} containers")
    if procs.stop_pidfile(lay.pids_dir / "containerd.pid", 10):
        stopped.append("containerd")


def down(lay: Layout, quiet: bool = False) -> None:
    clock = _Clock()
    stopped: list[str] = []
    # Also when the state dir says a real node ran, whatever MODELROLLOUT_TESTBED_NODE says now.
    has_node = lay.is_real_node or node_config.node_dir(lay).exists()
    if has_node:
        _stop_node(lay, stopped)
    for name in reversed(COMPONENTS):
        # The pod runner stops its pods' processes on SIGTERM; give it time for their grace.
        grace = 20 if name == "pod-runner" else 10
        if procs.stop_pidfile(lay.pids_dir / f"{name}.pid", grace):
            stopped.append(name)
    pod_pids = sorted((lay.pids_dir / "pods").glob("*.pid")) if (lay.pids_dir / "pods").exists() else []
    for path in pod_pids:
        if procs.stop_pidfile(path, 5):
            stopped.append(f"pod process {path.stem}")
    cleaned = node_host.clean_host(lay) if has_node else []
    left = node_host.find_leftovers(lay) if has_node else []
    if lay.state_dir.exists():
        shutil.rmtree(lay.state_dir)
    netroute.remove_local_route(lay.pod_cidr)
    if not quiet:
        clock.say(
            f"testbed down; stopped: {', '.join(stopped) or 'nothing was running'}; "
            f"host state removed: {len(cleaned)} items; removed {lay.state_dir}"
        )
    if left:
        raise TestbedError("down left host state behind: " + "; ".join(left))


@dataclasses.dataclass(frozen=True)
class Restart:
    """One restart of a component: its old and new pid, the command line both ran, and when
    (time.monotonic()) it was told to stop (SIGTERM), the old process was gone and the new one
    answered."""

    old_pid: int
    new_pid: int
    argv: tuple[str, ...]
    stopping_at: float
    stopped_at: float
    ready_at: float


def restart_apiserver(b: Binaries, lay: Layout, down_s: float = 0.0, timeout_s: float = 120) -> Restart:
    """Stops the running kube-apiserver (SIGTERM, SIGKILL after 10 s), keeps it down for
    `down_s`, starts it again with the flags `up` gave it, and returns once /readyz answers.
    etcd keeps running, so every object survives. Refuses (TestbedError) when no API server
    runs or the flags `up` would give differ from the running process's (a restart must not
    change the server)."""
    name = "kube-apiserver"
    pidfile = lay.pids_dir / f"{name}.pid"
    old = procs.read_live_pid(pidfile)
    if old is None:
        raise TestbedError(f"{name} is not running in {lay.state_dir}: nothing to restart (`up` first)")
    argv = compute_argv(name, b, lay)
    running = procs.read_cmdline(old)
    if running != argv:
        raise TestbedError(f"{name} (pid {old}) runs {running}, not the flags `up` gives: {argv}; refusing to restart")
    stopping_at = time.monotonic()
    procs.stop_pidfile(pidfile, 10)
    stopped_at = time.monotonic()
    time.sleep(down_s)
    _start(name, b, lay)
    ctx = _ssl_context(lay)
    wait_until(
        lay,
        name,
        "API server /readyz after a restart",
        lambda: is_http_ok(f"{lay.apiserver_url}/readyz", ctx),
        timeout_s,
    )
    new = procs.read_live_pid(pidfile)
    assert new is not None  # wait_until fails if the new process died
    return Restart(old, new, tuple(argv), stopping_at, stopped_at, time.monotonic())


def status(lay: Layout) -> dict[str, int | None]:
    return {c: procs.read_live_pid(lay.pids_dir / f"{c}.pid") for c in components_of(lay)}
