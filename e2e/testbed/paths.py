"""Where the testbed's binaries, state, ports and endpoints live (the testbed's Python API).

Other code (demo, tests, helpers) imports `default_layout()` to find kubectl, helm, the admin
kubeconfig and Prometheus instead of guessing paths.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTBED_DIR = Path(__file__).resolve().parent
VERSIONS_FILE = TESTBED_DIR / "versions.env"
IMAGES_FILE = TESTBED_DIR / "images.yaml"

# Env overrides let a second, independent testbed run beside the main one (used by the test
# that checks `down` frees every port); the defaults are the documented fixed ports.
STATE_DIR_ENV = "MODELROLLOUT_TESTBED_DIR"
PORT_OFFSET_ENV = "MODELROLLOUT_TESTBED_PORT_OFFSET"
POD_CIDR_ENV = "MODELROLLOUT_TESTBED_POD_CIDR"
# "real": containerd + kubelet node (pods in containers) beside the tainted kwok node;
# "process": only the kwok node, its pods run as local processes. Default: real for the main
# instance (no port offset), process for extra instances (one real node per machine: kube-proxy's
# iptables chains and the cni0 bridge are host-global).
NODE_MODE_ENV = "MODELROLLOUT_TESTBED_NODE"
NODE_MODES = ("real", "process")

# Pod IPs. Not 127.x: EndpointSlice validation rejects loopback addresses. `up` makes the whole
# range local with `ip route add local <range> dev lo` (RFC 2544 benchmark block: never routed
# on real networks), so every pod IP is a bindable address on this machine only.
DEFAULT_POD_CIDR = "198.18.0.0/16"

NODE_NAME = "kwok-node-0"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
# In real mode the kwok node carries this taint: only pods that tolerate it (the testbed's own
# self-tests) run as local processes; everything else goes to the real node.
PROCESS_NODE_TAINT = {"key": "modelrollout.dev/process-runner", "value": "true", "effect": "NoSchedule"}

# The real node's address: on `lo` (no dummy interfaces on this machine kind), so it is local to
# this host yet not loopback, which pod network namespaces could not reach. The API server and
# Prometheus listen here in real mode; pods get addresses from the node's pod range on cni0.
NODE_IP = "10.245.0.1"
NODE_POD_CIDR = "10.244.0.0/24"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parses versions.env (KEY=value lines, # comments) shared with build.sh."""
    versions = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep or not value:
                raise ValueError(f"{path}: expected KEY=value, got {raw!r}")
            versions[key.strip()] = value.strip()
    return versions


def cache_root() -> Path:
    return Path(os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout")


IMAGES_DIR_ENV = "MODELROLLOUT_IMAGES_DIR"


def images_dir() -> Path:
    """Where `make images` exports the project's images as OCI archives (*.tar); `up` imports
    every archive there into the real node's containerd."""
    return Path(os.environ.get(IMAGES_DIR_ENV) or cache_root() / "images")


@dataclasses.dataclass(frozen=True)
class Ports:
    """Loopback TCP ports of one testbed instance."""

    apiserver: int = 6443
    etcd_client: int = 12379
    etcd_peer: int = 12380
    controller_manager: int = 10257
    scheduler: int = 10259
    kwok: int = 10247
    prometheus: int = 9090
    kubelet: int = 10250
    kubelet_healthz: int = 10248
    kube_proxy_metrics: int = 10249
    kube_proxy_healthz: int = 10256

    def shifted(self, offset: int) -> Ports:
        return Ports(**{f.name: getattr(self, f.name) + offset for f in dataclasses.fields(self)})

    def all(self) -> list[int]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Absolute paths of the cached, versioned binaries built by e2e/testbed/build.sh."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    helm: Path
    prometheus: Path
    kwok_stages: Path
    kwok_crds: Path
    gateway_api_crds: Path
    router: Path
    kubelet: Path
    kube_proxy: Path
    pause: Path

    def missing(self) -> list[Path]:
        return [p for p in dataclasses.astuple(self) if not Path(p).exists()]


def find_binaries(versions: dict[str, str] | None = None) -> Binaries:
    v = versions or read_versions()
    bin_dir, share = cache_root() / "bin", cache_root() / "share"
    k8s = bin_dir / f"kubernetes-{v['K8S_VERSION']}"
    return Binaries(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        etcd=bin_dir / f"etcd-{v['ETCD_VERSION']}" / "etcd",
        kwok=bin_dir / f"kwok-{v['KWOK_VERSION']}" / "kwok",
        helm=bin_dir / f"helm-{v['HELM_VERSION']}" / "helm",
        prometheus=bin_dir / f"prometheus-{v['PROMETHEUS_VERSION']}" / "prometheus",
        kwok_stages=share / f"kwok-{v['KWOK_VERSION']}" / "stage",
        kwok_crds=share / f"kwok-{v['KWOK_VERSION']}" / "crds",
        gateway_api_crds=share / f"gateway-api-{v['GATEWAY_API_VERSION']}" / "crds",
        router=bin_dir / "router" / "router",
        kubelet=k8s / "kubelet",
        kube_proxy=k8s / "kube-proxy",
        pause=bin_dir / "testbed-pause" / "pause",
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """One testbed instance: its state directory, ports and pod address range."""

    state_dir: Path
    ports: Ports
    pod_cidr: str
    node_mode: str = "process"
    node_ip: str = NODE_IP
    node_pod_cidr: str = NODE_POD_CIDR

    @property
    def is_real_node(self) -> bool:
        return self.node_mode == "real"

    @property
    def listen_ip(self) -> str:
        """Where the API server and Prometheus listen: the node IP when pods must reach them."""
        return self.node_ip if self.is_real_node else "127.0.0.1"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (system:masters) for kubectl, helm and tests."""
        return self.state_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        """One file per pod run by the pod runner: <namespace>_<pod>.log."""
        return self.logs_dir / "pods"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.listen_ip}:{self.ports.apiserver}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.listen_ip}:{self.ports.prometheus}"


def default_layout() -> Layout:
    """The layout selected by the environment (defaults: `<repo>/.cluster`, fixed ports)."""
    state_dir = Path(os.environ.get(STATE_DIR_ENV) or REPO_ROOT / ".cluster").resolve()
    offset_raw = os.environ.get(PORT_OFFSET_ENV, "0")
    try:
        offset = int(offset_raw)
    except ValueError:
        raise ValueError(f"{PORT_OFFSET_ENV}={offset_raw!r}: expected an integer port offset") from None
    cidr = os.environ.get(POD_CIDR_ENV, DEFAULT_POD_CIDR)
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError:
        raise ValueError(f"{POD_CIDR_ENV}={cidr!r}: expected an IPv4 range like {DEFAULT_POD_CIDR}") from None
    if network.is_loopback:
        raise ValueError(
            f"{POD_CIDR_ENV}={cidr!r}: the API server rejects loopback addresses in "
            f"EndpointSlices; use a range like {DEFAULT_POD_CIDR} (routed to lo by `up`)"
        )
    mode = os.environ.get(NODE_MODE_ENV) or ("real" if offset == 0 else "process")
    if mode not in NODE_MODES:
        raise ValueError(
            f"{NODE_MODE_ENV}={mode!r}: expected one of {', '.join(NODE_MODES)} "
            "(real: containerd + kubelet node; process: kwok node, pods as processes)"
        )
    return Layout(state_dir=state_dir, ports=Ports().shifted(offset), pod_cidr=str(network), node_mode=mode)


def kubectl() -> Path:
    return find_binaries().kubectl


def helm() -> Path:
    return find_binaries().helm


def kubeconfig() -> Path:
    return default_layout().kubeconfig


def prometheus_url() -> str:
    return default_layout().prometheus_url
