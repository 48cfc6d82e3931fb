"""One thread per pod: runs the container as a local process, probes it, restarts it, reports it.

Acts like a kubelet for one container: status follows the process and its probes; on pod
deletion the process gets SIGTERM, SIGKILL after the grace period, then the pod is deleted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from .. import procs
from ..pki import compute_kubeconfig, write_private_yaml
from .api import PodApi
from .crilog import spawn_with_cri_log
from .podspec import ContainerConfigError, compute_argv, compute_container_env
from .probes import ProbeTracker, run_probe
from .status import ContainerState, Terminated, compute_status_patch

log = logging.getLogger("pod-runner")

TICK_S = 0.1
MAX_BACKOFF_S = 10.0  # kubelet caps at 5 min; a testbed wants restarts visible within seconds
BACKOFF_RESET_S = 60.0


@dataclasses.dataclass(frozen=True)
class RunnerEnv:
    """Where the runner keeps per-pod files, and what every process inherits."""

    state_dir: Path
    api_server: str
    ca_pem: bytes
    base_env: dict[str, str]

    def pod_key(self, pod: dict) -> str:
        return f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"


def compute_backoff(restart_count: int) -> float:
    return min(MAX_BACKOFF_S, 1.0 * 2 ** max(0, restart_count - 1))


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


class PodWorker(threading.Thread):
    def __init__(self, pod: dict, entrypoint: list[str], api: PodApi, env: RunnerEnv):
        super().__init__(name=f"pod-{env.pod_key(pod)}", daemon=True)
        self.pod, self.entrypoint, self.api, self.env = pod, entrypoint, api, env
        self.key = env.pod_key(pod)
        self.container = pod["spec"]["containers"][0]
        self.state = ContainerState(name=self.container["name"], image=self.container["image"])
        self._resume_restart_count()
        self.proc: subprocess.Popen | None = None
        self.proc_env: dict[str, str] = {}
        self.next_start = 0.0
        self.stop_event = threading.Event()
        self.stop_grace = 30.0
        self.delete_after_stop = False
        self.last_patch: str | None = None
        self.probes = {
            kind: ProbeTracker(self.container[kind])
            for kind in ("readinessProbe", "livenessProbe", "startupProbe")
            if self.container.get(kind)
        }

    def _resume_restart_count(self) -> None:
        """After a runner restart, the previous process is gone: count that as a restart."""
        statuses = (self.pod.get("status") or {}).get("containerStatuses") or []
        if statuses and statuses[0].get("name") == self.state.name:
            prev = statuses[0]
            self.state.restart_count = int(prev.get("restartCount", 0)) + (
                1 if "running" in prev.get("state", {}) else 0
            )

    # --- called from the watch thread -------------------------------------------------
    def update(self, pod: dict) -> None:
        self.pod = pod

    def request_stop(self, grace_s: float, delete_pod: bool) -> None:
        self.stop_grace = grace_s
        self.delete_after_stop = self.delete_after_stop or delete_pod
        self.stop_event.set()

    # --- the pod's life ---------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - one broken pod must not take the runner down
            log.exception("worker for %s failed", self.key)
        finally:
            self._kill(self.stop_grace)
            self._pidfile().unlink(missing_ok=True)
            if self.delete_after_stop:
                try:
                    self.api.delete_pod_now(self.pod)
                    log.info("%s: process stopped, pod deleted", self.key)
                except Exception:  # noqa: BLE001
                    log.exception("%s: final pod delete failed", self.key)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            now = time.time()
            if self.proc is None and self.state.final is None and now >= self.next_start:
                if (self.pod.get("status") or {}).get("podIP"):
                    self._start(now)
            elif self.proc is not None and (code := self.proc.poll()) is not None:
                self._on_exit(code, now)
            elif self.proc is not None:
                self._probe(now)
            self._report(now)
            self.stop_event.wait(TICK_S)

    def _start(self, now: float) -> None:
        try:
            env = compute_container_env(self.pod, self.container, self.api.lookup)
            argv = compute_argv(self.entrypoint, self.container, env)
            self.proc_env = {**self.env.base_env, "HOSTNAME": self.pod["metadata"]["name"], **env}
            if self.pod["spec"].get("automountServiceAccountToken", True) is not False:
                self.proc_env["KUBECONFIG"] = str(self._write_kubeconfig())
        except ContainerConfigError as exc:
            self._wait(now, "CreateContainerConfigError", str(exc), retry_s=2.0)
            return
        except Exception as exc:  # noqa: BLE001 - API hiccups (e.g. SA not yet created): retry
            self._wait(now, "ContainerCreating", f"preparing: {exc}", retry_s=1.0)
            return
        workdir = self.env.state_dir / "pods" / self.key
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.env.state_dir / "logs" / "pods" / f"{self.key}.log"
        try:
            self.proc = spawn_with_cri_log(argv, self.proc_env, workdir, log_path)
            procs.write_pidfile(self._pidfile(), self.proc.pid)
            self.api.ensure_logs_object(self.pod, self.state.name, log_path)
        except OSError as exc:
            self._wait(
                now, "RunContainerError", f"{argv[0]}: {exc}", retry_s=compute_backoff(self.state.restart_count + 1)
            )
            return
        log.info("%s: started pid %d: %s", self.key, self.proc.pid, " ".join(argv))
        self.state.running_since, self.state.waiting_reason, self.state.waiting_message = now, "", ""
        self.state.started = "startupProbe" not in self.probes
        self.state.ready = False
        for tracker in self.probes.values():
            tracker.schedule_first(now)

    def _wait(self, now: float, reason: str, message: str, retry_s: float) -> None:
        self.state.waiting_reason, self.state.waiting_message = reason, message[:500]
        self.next_start = now + retry_s

    def _write_kubeconfig(self) -> Path:
        token = self.api.request_token(self.pod)
        target = self.env.state_dir / "pods" / self.key / "kubeconfig"
        config = compute_kubeconfig(
            self.env.api_server, self.env.ca_pem, {"token": token}, namespace=self.pod["metadata"]["namespace"]
        )
        write_private_yaml(target, config)
        return target

    def _on_exit(self, code: int, now: float) -> None:
        self._pidfile().unlink(missing_ok=True)
        term = Terminated(
            exit_code=128 - code if code < 0 else code,
            started_at=self.state.running_since or now,
            finished_at=now,
            signal=-code if code < 0 else None,
        )
        ran_for = now - (self.state.running_since or now)
        self.proc = None
        self.state.running_since, self.state.ready, self.state.started = None, False, False
        policy = self.pod["spec"].get("restartPolicy", "Always")
        log.info("%s: process exited with %d after %.1fs (restartPolicy %s)", self.key, code, ran_for, policy)
        if not should_restart(policy, term.exit_code):
            self.state.final = term
            return
        self.state.last_terminated = term
        self.state.restart_count += 1
        delay = 1.0 if ran_for >= BACKOFF_RESET_S else compute_backoff(self.state.restart_count)
        self._wait(now, "CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container", delay)

    def _probe(self, now: float) -> None:
        startup = self.probes.get("startupProbe")
        if startup is not None and not self.state.started:
            if self._run_due(startup, now):
                self.state.started = startup.passing
                if startup.is_failed():
                    self._restart_unhealthy("startup")
            return
        live = self.probes.get("livenessProbe")
        if live is not None and self._run_due(live, now) and live.is_failed():
            self._restart_unhealthy("liveness")
            return
        ready = self.probes.get("readinessProbe")
        if ready is None:
            self.state.ready = True
        elif self._run_due(ready, now):
            self.state.ready = ready.passing

    def _run_due(self, tracker: ProbeTracker, now: float) -> bool:
        if now < tracker.next_at:
            return False
        ok = run_probe(tracker.spec, self.pod["status"]["podIP"], self.container, self.proc_env, tracker.timeout)
        tracker.record(ok, time.time())
        return True

    def _restart_unhealthy(self, which: str) -> None:
        log.info("%s: %s probe failed; killing the process so it restarts", self.key, which)
        self._kill(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))

    def _kill(self, grace_s: float) -> None:
        """SIGTERM the process group, SIGKILL after the grace period."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        _signal(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait()

    def _pidfile(self) -> Path:
        return self.env.state_dir / "pids" / "pods" / f"{self.key}.pid"

    def _report(self, now: float) -> None:
        if self.stop_event.is_set():
            return
        patch = compute_status_patch(self.pod, self.state, now)
        # Transition times move with `now` until our own write comes back through the watch.
        signature = json.dumps(patch, sort_keys=True, default=str)
        signature = re.sub(r'"lastTransitionTime": "[^"]*"', "", signature)
        if signature == self.last_patch:
            return
        try:
            self.api.patch_pod_status(self.pod, patch)
            self.last_patch = signature
        except Exception as exc:  # noqa: BLE001 - retried on the next tick
            log.warning("%s: status patch failed: %s", self.key, exc)


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
