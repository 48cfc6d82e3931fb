"""Configuration of the testbed's real node (pure): containerd, CNI, kubelet and kube-proxy.

The node is containerd's CRI plus a kubelet registered as NODE_NAME, pods on a bridge in the host
network namespace, kube-proxy for Service virtual IPs. Everything lives under the state dir.
"""

from __future__ import annotations

import json
from pathlib import Path

from .paths import Binaries, Layout, cache_root

NODE_NAME = "testbed-node-0"
BRIDGE = "cni0"
# The local image containerd runs as every pod's sandbox, made by build.sh (no registry here).
# Named for what it is, not as registry.k8s.io/pause.
PAUSE_IMAGE = "localhost/modelrollout/testbed-pause:1"
CONTAINERD_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin uses
# The chart's default images (what `make images` tags); `up` warns when one was not imported.
CHART_IMAGES = ("modelrollout/operator:dev", "modelrollout/model-server:dev", "modelrollout/router:dev")


def find_image_archives(directory: Path) -> list[Path]:
    """The OCI archives `make images` exported: those its index.json lists (images.<x>.archive),
    else every *.tar in `directory`."""
    try:
        index = json.loads((directory / "index.json").read_text())
        return sorted(Path(entry["archive"]) for entry in index["images"].values())
    except FileNotFoundError:
        return sorted(directory.glob("*.tar"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f'{directory / "index.json"}: expected {{"images": {{<name>: {{"archive": '
            f"<path>}}}}}} as `make images` writes it ({exc}); rerun `make images`"
        ) from None


def cri_name(image: str) -> str:
    """The fully qualified name the CRI looks an image up by (`modelrollout/router:dev` ->
    `docker.io/modelrollout/router:dev`), as Docker's reference normalisation does."""
    first, sep, _ = image.partition("/")
    if not sep:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


def node_dir(lay: Layout) -> Path:
    return lay.state_dir / "node"


def image_store_dir() -> Path:
    """containerd's root (content store, unpacked snapshots, metadata): a cache kept across
    `down` like the Go build cache, so a warm `up` imports no unchanged image again. Containers
    never outlive `down`; delete this directory to drop the images."""
    return cache_root() / "containerd"


def containerd_socket(lay: Layout) -> Path:
    return node_dir(lay) / "containerd" / "containerd.sock"


def compute_containerd_config(lay: Layout) -> str:
    """containerd 1.6 config (TOML, version 2): private root/state/socket, CRI with runc."""
    base = node_dir(lay) / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f'root = "{image_store_dir() / "root"}"',
            f'state = "{base / "state"}"',
            # Plugins this node never uses; "opt" would otherwise create /opt/containerd.
            'disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]',
            "[grpc]",
            f'  address = "{containerd_socket(lay)}"',
            "[ttrpc]",
            f'  address = "{base / "containerd.sock.ttrpc"}"',
            "[debug]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
            f"[{cri}]",
            f'  sandbox_image = "{PAUSE_IMAGE}"',
            # This machine's root lacks CAP_SYS_RESOURCE: lowering oom_score_adj (the sandbox asks
            # for -998) fails with EPERM and runc dies; restrict keeps it at or above ours.
            "  restrict_oom_score_adj = true",
            # exec/attach/port-forward streams: loopback only, a free port each start.
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_unprivileged_ports = false",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            # The kubelet uses the cgroupfs driver (no systemd here); both must agree.
            "  SystemdCgroup = false",
            # runc's state in the state dir, not /run/containerd/runc.
            f'  Root = "{base / "runc"}"',
            f"[{cri}.cni]",
            '  bin_dir = "/usr/lib/cni"',
            f'  conf_dir = "{node_dir(lay) / "cni" / "net.d"}"',
            "",
        ]
    )


def compute_cni_conflist(lay: Layout) -> dict:
    """Bridge in the host netns (so the host, tests and Prometheus reach pod IPs), host-local
    addresses from the node's pod range, hostPort support."""
    return {
        "cniVersion": "1.0.0",
        "name": "testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,
                # No outbound NAT: pods only talk to this host and each other.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": lay.node_pod_cidr}]],
                    # Inside the state dir, so `down` removes the allocations with it.
                    "dataDir": str(node_dir(lay) / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def compute_kubelet_config(lay: Layout) -> dict:
    pki, sock = lay.pki_dir, f"unix://{containerd_socket(lay)}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The API server reaches the kubelet (logs, exec) at the node IP; nothing on 0.0.0.0.
        "address": lay.node_ip,
        "port": lay.ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": lay.ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": sock,
        "imageServiceEndpoint": sock,
        # cgroup v1 hybrid here, no systemd: kubelet 1.35+ refuses v1 unless told otherwise.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(node_dir(lay) / "pod-logs"),
        # Never garbage-collect the pre-imported images (nothing could pull them back) and do
        # not evict pods because a shared build machine's disk is fuller than a node's would be.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": False,
        "registerNode": True,
        "rotateCertificates": False,
        "clusterDomain": "cluster.local",
        "enforceNodeAllocatable": ["pods"],
        "maxPods": 110,
    }


def compute_kube_proxy_config(lay: Layout) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(node_dir(lay) / "kube-proxy.kubeconfig")},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": lay.node_ip,
        "healthzBindAddress": f"127.0.0.1:{lay.ports.kube_proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{lay.ports.kube_proxy_metrics}",
        "clusterCIDR": lay.node_pod_cidr,
        "detectLocalMode": "ClusterCIDR",
        # NodePorts only on the node IP; no route_localnet sysctl for localhost NodePorts.
        "nodePortAddresses": [f"{lay.node_ip}/32"],
        # Masquerade Service traffic so a pod calling a Service backed by a pod on the same
        # bridge gets its replies through the host's conntrack even without br_netfilter.
        "iptables": {"masqueradeAll": True, "localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
        # Zeros: leave the host's conntrack sysctls alone (down would have to restore them).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def containerd_argv(lay: Layout) -> list[str]:
    return ["containerd", f"--config={node_dir(lay) / 'containerd.toml'}", "--log-level=warn"]


def kubelet_argv(b: Binaries, lay: Layout) -> list[str]:
    d = node_dir(lay)
    return [
        str(b.kubelet),
        f"--config={d / 'kubelet.yaml'}",
        f"--kubeconfig={d / 'kubelet.kubeconfig'}",
        f"--root-dir={d / 'kubelet'}",
        f"--cert-dir={d / 'kubelet-pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={lay.node_ip}",
        "--node-labels=modelrollout.dev/testbed-node=real",
        "--v=1",
    ]


def kube_proxy_argv(b: Binaries, lay: Layout) -> list[str]:
    return [str(b.kube_proxy), f"--config={node_dir(lay) / 'kube-proxy.yaml'}", "--v=1"]


def compute_kubernetes_endpoints(lay: Layout) -> list[dict]:
    """The `kubernetes` Service's backends (the API server's node-IP listener): written by `up`
    because the reconciler is `none` (a loopback advertise address cannot go into Endpoints)."""
    port = {"name": "https", "port": lay.ports.apiserver, "protocol": "TCP"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                # The EndpointSlice below is written directly; do not mirror this one.
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
            },
            "subsets": [{"addresses": [{"ip": lay.node_ip}], "ports": [port]}],
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "modelrollout-testbed",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [lay.node_ip], "conditions": {"ready": True}}],
            "ports": [port],
        },
    ]


def dump_json(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"
