"""Pure construction of the pod status the runner writes (phase, conditions, containerStatuses).

The local process's state is kept in `ContainerState`; `compute_status_patch` turns it into a
JSON merge patch for the pod's status subresource, written only when it changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Terminated:
    exit_code: int
    started_at: float
    finished_at: float
    reason: str = ""
    signal: int | None = None

    def as_status(self) -> dict:
        reason = self.reason or ("Completed" if self.exit_code == 0 else "Error")
        out = {
            "exitCode": self.exit_code,
            "reason": reason,
            "startedAt": rfc3339(self.started_at),
            "finishedAt": rfc3339(self.finished_at),
        }
        if self.signal is not None:
            out["signal"] = self.signal
        return out


@dataclasses.dataclass
class ContainerState:
    """What the runner knows about the pod's (first) container process."""

    name: str
    image: str
    restart_count: int = 0
    running_since: float | None = None  # set while the process runs
    ready: bool = False
    started: bool = False  # startup probe passed (or none defined)
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: Terminated | None = None
    final: Terminated | None = None  # set when the container will not be restarted


def _state_of(c: ContainerState) -> dict:
    if c.running_since is not None:
        return {"running": {"startedAt": rfc3339(c.running_since)}}
    if c.final is not None:
        return {"terminated": c.final.as_status()}
    waiting = {"reason": c.waiting_reason}
    if c.waiting_message:
        waiting["message"] = c.waiting_message
    return {"waiting": waiting}


def compute_container_status(c: ContainerState) -> dict:
    status = {
        "name": c.name,
        "image": c.image,
        "imageID": f"testbed://{c.image}",
        "containerID": f"testbed://{c.name}",
        "ready": c.ready,
        "started": c.started,
        "restartCount": c.restart_count,
        "state": _state_of(c),
    }
    if c.last_terminated is not None:
        status["lastState"] = {"terminated": c.last_terminated.as_status()}
    return status


def compute_phase(c: ContainerState) -> str:
    if c.final is not None:
        return "Succeeded" if c.final.exit_code == 0 else "Failed"
    if c.running_since is not None or c.restart_count > 0:
        return "Running"
    return "Pending"


def _condition(existing: list[dict], ctype: str, ok: bool, now: float, reason: str) -> dict:
    """Keeps lastTransitionTime when the status did not change, as the kubelet does."""
    status = "True" if ok else "False"
    for cond in existing:
        if cond.get("type") == ctype and cond.get("status") == status:
            return cond
    cond = {"type": ctype, "status": status, "lastTransitionTime": rfc3339(now)}
    if not ok:
        cond["reason"] = reason
    return cond


def compute_status_patch(pod: dict, c: ContainerState, now: float) -> dict:
    """Merge patch for pod status: whole conditions and containerStatuses lists are replaced."""
    existing = (pod.get("status") or {}).get("conditions") or []
    reason = "PodCompleted" if c.final is not None else "ContainersNotReady"
    conditions = [cond for cond in existing if cond.get("type") == "PodScheduled"]
    conditions += [
        _condition(existing, "Initialized", True, now, ""),
        _condition(existing, "ContainersReady", c.ready, now, reason),
        _condition(existing, "Ready", c.ready, now, reason),
    ]
    return {
        "status": {
            "phase": compute_phase(c),
            "conditions": conditions,
            "containerStatuses": [compute_container_status(c)],
        }
    }
