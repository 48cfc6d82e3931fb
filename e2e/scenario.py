"""A reusable driver for end-to-end rollout scenarios on the local testbed (or any cluster).

Installs the operator chart with helm, applies ModelRollouts with kubectl, waits for phases and
records status snapshots over time; the demo and e2e/tests build on it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, config

from e2e.helm import find_helm, find_kubectl

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "modelrollout"
GROUP, VERSION, PLURAL = "modelrollout.dev", "v1alpha1", "modelrollouts"
OPERATOR_NAMESPACE = "modelrollout-system"
RELEASE = "modelrollout"


class ScenarioError(RuntimeError):
    """A scenario step did not reach its goal; the message carries the state that explains why."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where the scenario runs: tools, admin kubeconfig and the Prometheus the gates query."""

    kubeconfig: Path
    kubectl: Path
    helm: Path
    prometheus_url: str

    def env(self) -> dict[str, str]:
        """The environment kubectl/helm run in: this cluster's kubeconfig, and the venv's bin first
        on PATH so `kubectl modelrollout` finds the package's plugin, as it does for a user."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def ensure_testbed(start: bool = True, log: Callable[[str], None] = print) -> Cluster:
    """The local testbed's Cluster; starts it (`python -m e2e.testbed up`) when it is down."""
    from e2e.testbed import cluster as testbed_cluster
    from e2e.testbed import paths

    layout = paths.default_layout()
    if not testbed_cluster.is_up(layout):
        if not start:
            raise ScenarioError("the testbed is not running: start it with `make cluster-up`")
        log("starting the local testbed (python -m e2e.testbed up) ...")
        subprocess.run([sys.executable, "-m", "e2e.testbed", "up"], cwd=REPO, check=True)
    return Cluster(
        kubeconfig=layout.kubeconfig, kubectl=find_kubectl(), helm=find_helm(), prometheus_url=layout.prometheus_url
    )


def run_tool(
    cluster: Cluster, tool: Path, *args: str, stdin: str | None = None, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess:
    """Runs kubectl/helm against the cluster; on failure raises with the tool's own output."""
    proc = subprocess.run(
        [str(tool), *args], input=stdin, capture_output=True, text=True, env=cluster.env(), timeout=timeout, cwd=REPO
    )
    if check and proc.returncode != 0:
        raise ScenarioError(
            f"{tool.name} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return proc


def ensure_operator(
    cluster: Cluster,
    values: dict[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = OPERATOR_NAMESPACE,
    timeout_s: int = 240,
) -> None:
    """`helm upgrade --install` the operator chart and wait until its Deployment is ready."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{release}-values-") as values_file:
        values_file.write(yaml.safe_dump(values or {}))
        values_file.flush()
        run_tool(
            cluster,
            cluster.helm,
            "upgrade",
            "--install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--create-namespace",
            "-f",
            values_file.name,
            "--wait",
            "--timeout",
            f"{timeout_s}s",
            timeout=timeout_s + 30,
        )


def apply_manifest(cluster: Cluster, manifest: dict[str, Any]) -> None:
    """`kubectl apply` one object, exactly as a user would."""
    run_tool(cluster, cluster.kubectl, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))


def ensure_namespace(cluster: Cluster, namespace: str) -> None:
    apply_manifest(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def fetch_rollout(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    rollout = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return cast(dict[str, Any], rollout)


def fetch_events(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, str]]:
    """Events about the ModelRollout, oldest first: type, reason, message."""
    items = (
        client.CoreV1Api(api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ModelRollout")
        .items
    )
    items.sort(key=_event_time)
    return [{"type": e.type or "", "reason": e.reason or "", "message": e.message or ""} for e in items]


def _event_time(event: client.CoreV1Event) -> datetime.datetime:
    stamp = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
    assert stamp is not None  # the API server sets creationTimestamp on every object
    return stamp


def fetch_ready_addresses(api: client.ApiClient, namespace: str, service: str, port_name: str = "http") -> list[str]:
    """host:port of the Ready pods behind a Service's selector, on the Service port `port_name`.

    Read from the pods themselves (the same Ready condition the EndpointSlice controller uses),
    so a test sees a pod's readiness without waiting for the slice to be rewritten.
    """
    core = client.CoreV1Api(api)
    try:
        svc = core.read_namespaced_service(service, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return []
        raise
    spec = svc.spec
    assert spec is not None  # the API server always returns a Service's spec
    target = next((p.target_port for p in spec.ports or [] if p.name == port_name), None)
    if target is None or not spec.selector:
        return []
    selector = ",".join(f"{k}={v}" for k, v in sorted(spec.selector.items()))
    out = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        # Set on every pod the API server returns.
        assert pod.status is not None and pod.metadata is not None and pod.spec is not None
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if not ready or not pod.status.pod_ip or pod.metadata.deletion_timestamp:
            continue
        ports = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}
        # targetPort is a port number or the name of a container port
        port = ports.get(target, target) if isinstance(target, str) else target
        out.append(f"{pod.status.pod_ip}:{port}")
    return sorted(out)


def wait_for_replicas(api: client.ApiClient, namespace: str, name: str, desired: int, timeout_s: float = 90) -> None:
    """Waits until Deployment `name` asks for `desired` replicas (a scale-down may be delayed)."""
    deadline = time.monotonic() + timeout_s
    while (current := fetch_deployment_replicas(api, namespace, name)[0]) != desired:
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"deployment {namespace}/{name} still wants {current} replicas "
                f"after {timeout_s:.0f}s, expected {desired}"
            )
        time.sleep(1)


def fetch_deployment_replicas(api: client.ApiClient, namespace: str, name: str) -> tuple[int, int]:
    """(desired, ready) replicas of a Deployment; (0, 0) when it does not exist."""
    try:
        dep = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return 0, 0
        raise
    assert dep.status is not None  # the API server always returns a Deployment's status (maybe empty)
    return dep.spec.replicas or 0, dep.status.ready_replicas or 0


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One reading of a ModelRollout's status, `t` seconds after the recorder started."""

    t: float
    generation: int
    phase: str
    reason: str
    message: str
    step: str
    stable: str | None
    candidate_version: str | None  # status.candidateVersion: in flight, or the one just rejected
    stable_weight: int
    candidate: str | None
    candidate_weight: int
    mirror: str | None
    mirror_percent: int
    metrics: tuple[dict[str, Any], ...]

    @classmethod
    def from_object(cls, t: float, obj: dict[str, Any]) -> Snapshot:
        status = obj.get("status") or {}
        traffic = status.get("traffic") or {}
        stable, cand, mirror = (traffic.get(k) or {} for k in ("stable", "candidate", "mirror"))
        return cls(
            t=round(t, 2),
            generation=obj["metadata"].get("generation", 0),
            phase=status.get("phase") or "",
            reason=status.get("reason") or "",
            message=status.get("message") or "",
            step=status.get("currentStep") or "",
            stable=stable.get("version"),
            candidate_version=status.get("candidateVersion"),
            stable_weight=stable.get("weight") or 0,
            candidate=cand.get("version"),
            candidate_weight=cand.get("weight") or 0,
            mirror=mirror.get("version"),
            mirror_percent=mirror.get("percent") or 0,
            metrics=tuple((status.get("analysis") or {}).get("metrics") or ()),
        )

    def key(self) -> tuple:
        """What counts as a change worth recording (not the timestamp)."""
        return dataclasses.astuple(dataclasses.replace(self, t=0.0))


class StatusRecorder:
    """Polls one ModelRollout in a thread and keeps every distinct status it saw, with times."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        interval_s: float = 0.5,
        on_change: Callable[[Snapshot], None] | None = None,
    ):
        self.api, self.namespace, self.name = api, namespace, name
        self.interval_s, self.on_change = interval_s, on_change
        self.snapshots: list[Snapshot] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"recorder-{name}", daemon=True)

    def __enter__(self) -> StatusRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.record(fetch_rollout(self.api, self.namespace, self.name))
            except client.ApiException as exc:
                if exc.status != 404:  # before the first apply the object does not exist yet
                    print(f"recorder: {exc.status} {exc.reason}", file=sys.stderr)
            except Exception as exc:  # keep recording through transient API errors
                print(f"recorder: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stop.wait(self.interval_s)

    def record(self, obj: dict[str, Any]) -> Snapshot:
        snap = Snapshot.from_object(self.elapsed(), obj)
        with self._lock:
            changed = not self.snapshots or self.snapshots[-1].key() != snap.key()
            if changed:
                self.snapshots.append(snap)
        if changed and self.on_change:
            self.on_change(snap)
        return snap

    def history(self) -> list[Snapshot]:
        with self._lock:
            return list(self.snapshots)


def wait_for_rollout(
    api: client.ApiClient,
    namespace: str,
    name: str,
    done: Callable[[dict[str, Any]], bool],
    what: str,
    timeout_s: float,
    fail_on: Iterable[str] = (),
) -> dict[str, Any]:
    """Polls until `done(obj)`; raises ScenarioError with status and events on a phase in
    `fail_on` or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    fail_on = set(fail_on)
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            obj = fetch_rollout(api, namespace, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        if obj and done(obj):
            return obj
        phase = (obj.get("status") or {}).get("phase") if obj else None
        if phase in fail_on:
            break
        time.sleep(0.5)
    raise ScenarioError(
        f"{namespace}/{name}: gave up waiting for {what} after "
        f"{timeout_s:.0f}s (or hit a failure phase)\n{describe_state(api, namespace, name, obj)}"
    )


def is_phase(*phases: str, generation_at_least: int = 0) -> Callable[[dict[str, Any]], bool]:
    """Predicate: status.phase is one of `phases` and the status reflects `generation_at_least`."""

    def check(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        return status.get("phase") in phases and (status.get("observedGeneration") or 0) >= generation_at_least

    return check


SETTLED_PHASES = ("Healthy", "RolledBack", "Stopped", "Failed", "Invalid")


def is_settled(version: str, generation: int) -> Callable[[dict[str, Any]], bool]:
    """Predicate: the rollout of `version` (applied at `generation`) reached an end state -
    promoted (stable is `version`), rolled back or stopped (candidate was `version`), failed."""

    def check(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        if (status.get("observedGeneration") or 0) < generation:
            return False
        if status.get("phase") in ("Failed", "Invalid"):
            return True
        return status.get("phase") in SETTLED_PHASES and version in (
            status.get("stableVersion"),
            status.get("candidateVersion"),
        )

    return check


def describe_state(api: client.ApiClient, namespace: str, name: str, obj: dict[str, Any]) -> str:
    """Status and recent events, for failure messages a person can act on."""
    status = json.dumps((obj or {}).get("status"), indent=1, default=str)[:3000]
    try:
        events = "\n".join(
            f"  {e['type']} {e['reason']}: {e['message']}" for e in fetch_events(api, namespace, name)[-15:]
        )
    except Exception as exc:  # best effort: the error is already being reported
        events = f"  (events unavailable: {exc})"
    return f"status: {status}\nevents:\n{events}"
