"""kwok configuration: upstream Stage files, split so the pod runner owns our images' pods.

kwok simulates every pod on the fake node except those whose first container runs one of our
mapped images: for those it only assigns the loopback pod IP; the pod runner does the rest.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .paths import NODE_ANNOTATION, NODE_NAME

IMAGE_KEY = ".spec.containers.[0].image"

# Applied once to pods of mapped images: IP and a ContainerCreating status, never Ready.
# One template line is longer than the line limit; the noqa on the closing quotes covers it.
ASSIGN_IP_TEMPLATE = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: ContainersReady
  reason: ContainersNotReady
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: Ready
  reason: ContainersNotReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    waiting:
      reason: ContainerCreating
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Pending
startTime: {{ $now | Quote }}
"""  # noqa: E501


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _excluding(stage: dict, images: list[str]) -> dict:
    stage = copy.deepcopy(stage)
    stage["spec"]["selector"]["matchExpressions"].append(
        {"key": IMAGE_KEY, "operator": "NotIn", "values": sorted(images)}
    )
    return stage


def compute_stages(stage_dir: Path, images: list[str]) -> list[dict]:
    """The Stage documents kwok runs with, given the upstream stage directory."""
    assign_ip = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": "pod-runner-assign-ip"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.podIP", "operator": "DoesNotExist"},
                    {"key": IMAGE_KEY, "operator": "In", "values": sorted(images)},
                ]
            },
            "next": {"statusTemplate": ASSIGN_IP_TEMPLATE},
        },
    }
    pod_fast = stage_dir / "pod" / "fast"
    return [
        _load(stage_dir / "node" / "fast" / "node-initialize.yaml"),
        _load(stage_dir / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml"),
        _excluding(_load(pod_fast / "pod-ready.yaml"), images),
        _excluding(_load(pod_fast / "pod-complete.yaml"), images),
        # The pod runner deletes its own pods after stopping the process, like a kubelet.
        _excluding(_load(pod_fast / "pod-delete.yaml"), images),
        assign_ip,
    ]


def write_kwok_config(target: Path, stage_dir: Path, images: list[str]) -> None:
    target.write_text(yaml.safe_dump_all(compute_stages(stage_dir, images), sort_keys=False))


def compute_node(name: str = NODE_NAME, taints: list[dict] | None = None) -> dict:
    """The simulated node kwok manages (selected by annotation), with room for thousands of
    pods (benchmarks create hundreds). Untainted in process mode, so pods land on it; in real
    mode tainted (paths.PROCESS_NODE_TAINT), so only pods that tolerate it do."""
    spec = {"taints": taints} if taints else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "1k", "memory": "1Ti", "pods": "10k"},
            "capacity": {"cpu": "1k", "memory": "1Ti", "pods": "10k"},
        },
    }
