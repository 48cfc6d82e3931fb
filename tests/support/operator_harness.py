"""Helpers for the operator's integration tests: the operator as a real subprocess, kubectl.

The operator runs exactly as installed (`modelrollout-operator` entry point) with the admin
kubeconfig, watching one test namespace, querying a stub Prometheus on loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

import yaml

from e2e import scenario

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modelrollout.dev_modelrollouts.yaml"
OPERATOR_BIN = Path(sys.executable).parent / "modelrollout-operator"
MRO = ("modelrollout.dev", "v1alpha1", "modelrollouts")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`modelrollout-operator` in a subprocess; `kill()` is a SIGKILL, like a node dying."""

    def __init__(
        self, cluster: scenario.Cluster, namespace: str, prometheus_url: str, log_dir: Path, tick: float = 0.5
    ) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.port = free_port()
        self.args = [
            str(OPERATOR_BIN),
            f"--namespaces={namespace}",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--tick-interval={tick}",
            f"--prometheus-url={prometheus_url}",
            "--log-level=debug",
            "--router-endpoints-source=pods",
        ]
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Self:
        self.starts += 1
        log = open(self.log_dir / f"operator-{self.namespace}-{self.starts}.log", "wb")
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_dir / f"operator-{self.namespace}-{self.starts}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class TestbedMissing(RuntimeError):
    """The testbed's API server is not reachable; the message says how to start it."""


def connect_testbed() -> scenario.Cluster:
    """The running testbed, without (re)starting anything: only its API server must be ready."""
    from e2e.testbed import paths

    layout = paths.default_layout()
    if not layout.kubeconfig.exists():
        raise TestbedMissing(f"no testbed kubeconfig at {layout.kubeconfig}: start it with `make cluster-up`")
    cluster = scenario.Cluster(
        kubeconfig=layout.kubeconfig, kubectl=paths.kubectl(), helm=paths.helm(), prometheus_url=layout.prometheus_url
    )
    if kubectl(cluster, "get", "--raw", "/readyz", check=False).returncode != 0:
        raise TestbedMissing("the testbed API server is not ready: run `make cluster-up`")
    return cluster


def kubectl(
    cluster: scenario.Cluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    return scenario.run_tool(cluster, cluster.kubectl, *args, stdin=stdin, check=check)


def delete_rollouts(cluster: scenario.Cluster, namespace: str, operator_running: bool) -> None:
    """Removes every ModelRollout of a test namespace so the namespace can go away.

    With the operator running, kopf releases its finalizer itself; otherwise (or if it did not
    within the timeout) the finalizer is stripped, as a person would after uninstalling.
    """
    if operator_running:
        kubectl(cluster, "delete", "modelrollouts", "--all", "-n", namespace, "--timeout=90s", check=False)
    names = kubectl(cluster, "get", "modelrollouts", "-n", namespace, "-o", "name", check=False).stdout.split()
    for name in names:
        kubectl(
            cluster,
            "patch",
            "-n",
            namespace,
            name,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


def apply(cluster: scenario.Cluster, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess:
    return kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(obj), check=check)


def assert_rejected_at_admission(
    cluster: scenario.Cluster, manifest: dict[str, Any], namespace: str, needles: list[str]
) -> None:
    """`kubectl apply` of `manifest` in `namespace` fails, and its message contains every needle."""
    manifest["metadata"]["namespace"] = namespace
    result = apply(cluster, manifest, check=False)
    assert result.returncode != 0, f"accepted: {yaml.safe_dump(manifest)}"
    for needle in needles:
        assert needle in result.stderr, result.stderr


def rollout_manifest(
    name: str,
    namespace: str,
    version: str,
    *,
    steps: list[dict] | None = None,
    metrics: bool = True,
    routing: dict | None = None,
    strategy: dict | None = None,
) -> dict[str, Any]:
    """A small, fast canary: real model-server pods (builtin model), short pauses, 1 s checks."""
    spec: dict[str, Any] = {
        "model": {"name": "speech-commands", "version": version, "uri": "builtin:v1"},
        "server": {"replicas": 1},
        "strategy": strategy
        or {
            "canary": {
                "steps": steps
                or [{"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"analysis": {"checks": 2}}]
            }
        },
        "progressDeadline": "3m",
    }
    if metrics:
        spec["analysis"] = {
            "interval": "1s",
            "window": "1m",
            "minSamples": 10,
            "failureLimit": 2,
            "metrics": [{"name": "error-rate", "template": "error-rate", "max": 0.05}],
        }
    if routing:
        spec["trafficRouting"] = routing
    return {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
