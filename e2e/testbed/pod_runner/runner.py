"""The pod runner's control loop: list+watch pods on the kwok node, one worker per mapped pod.

Pods whose first container image is not in images.yaml are left to kwok's simulation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from kubernetes.client.rest import ApiException

from .. import procs
from ..paths import NODE_NAME
from .api import PodApi
from .worker import PodWorker, RunnerEnv

log = logging.getLogger("pod-runner")

WATCH_TIMEOUT_S = 60
SHUTDOWN_GRACE_S = 5.0


def is_runnable(pod: dict, images: dict[str, list[str]]) -> bool:
    containers = (pod.get("spec") or {}).get("containers") or []
    return bool(containers) and containers[0].get("image") in images


def compute_grace(pod: dict) -> float:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return float(grace)


class Runner:
    def __init__(self, api: PodApi, env: RunnerEnv, images: dict[str, list[str]], node: str = NODE_NAME):
        self.api, self.env, self.images, self.node = api, env, images, node
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self.lock = threading.Lock()

    def handle(self, event_type: str, pod: dict) -> None:
        """Starts, updates or stops the worker for one pod event."""
        if not is_runnable(pod, self.images):
            return
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if event_type == "DELETED":
                if worker is not None:
                    worker.request_stop(min(compute_grace(pod), SHUTDOWN_GRACE_S), delete_pod=False)
                    del self.workers[uid]
                return
            if worker is None:
                if pod["metadata"].get("deletionTimestamp"):
                    self.api.delete_pod_now(pod)  # never started here: nothing to stop
                    return
                worker = PodWorker(pod, self.images[pod["spec"]["containers"][0]["image"]], self.api, self.env)
                self.workers[uid] = worker
                log.info("managing pod %s", worker.key)
                worker.start()
                return
            worker.update(pod)
            if pod["metadata"].get("deletionTimestamp"):
                worker.request_stop(compute_grace(pod), delete_pod=True)

    def resync(self, pods: list[dict]) -> None:
        """After a (re)list: stop workers whose pods vanished, then handle every pod."""
        present = {p["metadata"]["uid"] for p in pods}
        with self.lock:
            gone = [uid for uid in self.workers if uid not in present]
            for uid in gone:
                self.workers.pop(uid).request_stop(SHUTDOWN_GRACE_S, delete_pod=False)
        for pod in pods:
            self.handle("ADDED", pod)

    def watch_forever(self, ready_file: Path) -> None:
        while True:
            try:
                pods, rv = self.api.list_node_pods(self.node)
                self.resync(pods)
                ready_file.touch()
                while True:
                    for event_type, pod in self.api.watch_node_pods(self.node, rv, WATCH_TIMEOUT_S):
                        rv = pod["metadata"].get("resourceVersion", rv)
                        if event_type != "BOOKMARK":
                            self.handle(event_type, pod)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("watch failed (%s); relisting", exc.reason)
                    time.sleep(1)
            except Exception:  # noqa: BLE001 - keep the node alive through API hiccups
                log.exception("watch loop error; relisting in 1s")
                time.sleep(1)

    def stop_all(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
            self.workers.clear()
        for w in workers:
            w.request_stop(
                min(float(w.pod["spec"].get("terminationGracePeriodSeconds", 30)), SHUTDOWN_GRACE_S), delete_pod=False
            )
        for w in workers:
            w.join(timeout=SHUTDOWN_GRACE_S + 5)


def stop_orphans(pids_dir: Path) -> None:
    """Pod processes left by a runner that died without cleaning up (e.g. SIGKILL)."""
    if not pids_dir.exists():
        return
    for path in pids_dir.glob("*.pid"):
        if procs.stop_pidfile(path, 3):
            log.info("stopped orphaned pod process %s", path.stem)


def compute_base_env(repo_root: Path) -> dict[str, str]:
    """What every pod process inherits: a PATH with the venv first, no cluster service vars."""
    path = f"{repo_root / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    if "MODELROLLOUT_CACHE" in os.environ:
        env["MODELROLLOUT_CACHE"] = os.environ["MODELROLLOUT_CACHE"]
    return env
