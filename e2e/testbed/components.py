"""Command lines of the testbed's daemons (pure: layout and binaries in, argv out).

Every listener binds a loopback address, or in real-node mode the node address on lo (so pod
network namespaces reach the API server and Prometheus); ports come from the Layout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import node_config
from .paths import NODE_ANNOTATION, Binaries, Layout
from .pki import SERVICE_CLUSTER_IP_RANGE
from .prometheus import compute_prometheus_argv

# Start order; `down` stops them in reverse (pod runner first, so it can stop pod processes).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "prometheus", "pod-runner")
# The real node's daemons, started after the control plane in real mode.
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")


def components_of(lay: Layout) -> tuple[str, ...]:
    return COMPONENTS + NODE_COMPONENTS if lay.is_real_node else COMPONENTS


def etcd_argv(b: Binaries, lay: Layout) -> list[str]:
    client = f"http://127.0.0.1:{lay.ports.etcd_client}"
    peer = f"http://127.0.0.1:{lay.ports.etcd_peer}"
    return [
        str(b.etcd),
        "--name=testbed",
        f"--data-dir={lay.state_dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=testbed={peer}",
        # A throwaway test cluster: durability is not worth the fsync latency.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_argv(b: Binaries, lay: Layout) -> list[str]:
    pki = lay.pki_dir
    return [
        str(b.kube_apiserver),
        f"--etcd-servers=http://127.0.0.1:{lay.ports.etcd_client}",
        f"--bind-address={lay.listen_ip}",
        f"--advertise-address={lay.listen_ip}",
        f"--secure-port={lay.ports.apiserver}",
        # A loopback advertise address cannot go into the `kubernetes` Endpoints; in real mode
        # `up` writes them (cluster.py), the reconciler would also need a routable interface.
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
        # `kubectl logs` goes API server -> "kubelet" (kwok's server, at the node's InternalIP).
        f"--kubelet-client-certificate={pki / 'admin.crt'}",
        f"--kubelet-client-key={pki / 'admin.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def _component_kubeconfig_flags(lay: Layout) -> list[str]:
    kc = str(lay.kubeconfig)
    return [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}"]


def controller_manager_argv(b: Binaries, lay: Layout) -> list[str]:
    pki = lay.pki_dir
    return [
        str(b.kube_controller_manager),
        *_component_kubeconfig_flags(lay),
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.ports.controller_manager}",
        # The token controller needs both to publish service-account CA bundles.
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(b: Binaries, lay: Layout) -> list[str]:
    return [
        str(b.kube_scheduler),
        *_component_kubeconfig_flags(lay),
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.ports.scheduler}",
        "--profiling=false",
        "--v=1",
    ]


def kwok_argv(b: Binaries, lay: Layout) -> list[str]:
    return [
        str(b.kwok),
        f"--kubeconfig={lay.kubeconfig}",
        f"--config={lay.state_dir / 'kwok.yaml'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
        f"--cidr={lay.pod_cidr}",
        "--node-ip=127.0.0.1",
        f"--server-address=127.0.0.1:{lay.ports.kwok}",
        "--node-lease-duration-seconds=40",
        # The node advertises kwok's server as its kubelet endpoint; it serves pod logs over TLS
        # for the Logs objects the pod runner creates.
        f"--node-port={lay.ports.kwok}",
        "--enable-crds=Logs",
        f"--tls-cert-file={lay.pki_dir / 'apiserver.crt'}",
        f"--tls-private-key-file={lay.pki_dir / 'apiserver.key'}",
    ]


def prometheus_argv(b: Binaries, lay: Layout) -> list[str]:
    return compute_prometheus_argv(
        str(b.prometheus),
        lay.state_dir / "prometheus.yml",
        lay.state_dir / "prometheus-data",
        lay.ports.prometheus,
        lay.listen_ip,
    )


def pod_runner_argv(lay: Layout) -> list[str]:
    return [
        sys.executable,
        "-m",
        "e2e.testbed.pod_runner",
        f"--state-dir={lay.state_dir}",
        f"--api-server={lay.apiserver_url}",
    ]


def compute_argv(name: str, b: Binaries, lay: Layout) -> list[str]:
    builders = {
        "etcd": etcd_argv,
        "kube-apiserver": apiserver_argv,
        "kube-controller-manager": controller_manager_argv,
        "kube-scheduler": scheduler_argv,
        "kwok": kwok_argv,
    }
    if name == "prometheus":
        return prometheus_argv(b, lay)
    if name == "pod-runner":
        return pod_runner_argv(lay)
    if name == "containerd":
        return node_config.containerd_argv(lay)
    if name == "kubelet":
        return node_config.kubelet_argv(b, lay)
    if name == "kube-proxy":
        return node_config.kube_proxy_argv(b, lay)
    return builders[name](b, lay)


def component_cwd() -> Path:
    """Repo root: the pod runner is started as `python -m e2e.testbed.pod_runner`."""
    return Path(__file__).resolve().parents[2]
