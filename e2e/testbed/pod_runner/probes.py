"""Readiness/liveness/startup probes run against the local process, as the kubelet would.

httpGet (2xx/3xx = success), tcpSocket and exec are supported; a gRPC probe is reported as an
unsupported-probe failure rather than silently passing.
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
import subprocess


@dataclasses.dataclass
class ProbeTracker:
    """Counts consecutive results against the probe's thresholds (kubelet defaults)."""

    spec: dict
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    passing: bool = False  # the thresholded verdict

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    def schedule_first(self, started_at: float) -> None:
        self.next_at = started_at + float(self.spec.get("initialDelaySeconds", 0))
        self.successes = self.failures = 0
        self.passing = False

    def record(self, ok: bool, now: float) -> None:
        self.next_at = now + self.period
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.passing = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.passing = False

    def is_failed(self) -> bool:
        """Failed enough times in a row to act on (liveness/startup restart)."""
        return self.failures >= int(self.spec.get("failureThreshold", 3))


def resolve_port(port, container: dict) -> int:
    """Probe port as an int, looking named ports up in the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"probe port {port!r} is not a number nor a named containerPort")


def run_probe(spec: dict, pod_ip: str, container: dict, env: dict[str, str], timeout: float) -> bool:
    """One probe attempt; True on success. Never raises for probe-level failures."""
    try:
        if "httpGet" in spec:
            return _http_get(spec["httpGet"], pod_ip, container, timeout)
        if "tcpSocket" in spec:
            port = resolve_port(spec["tcpSocket"]["port"], container)
            with socket.create_connection((spec["tcpSocket"].get("host") or pod_ip, port), timeout=timeout):
                return True
        if "exec" in spec:
            result = subprocess.run(
                spec["exec"]["command"], env=env, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            return result.returncode == 0
    except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException):
        return False
    return False  # grpc or unknown handler: unsupported here


def _http_get(get: dict, pod_ip: str, container: dict, timeout: float) -> bool:
    port = resolve_port(get["port"], container)
    host = get.get("host") or pod_ip
    conn: http.client.HTTPConnection
    if get.get("scheme", "HTTP").upper() == "HTTPS":
        # The kubelet does not verify probe certificates either.
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
        headers.setdefault("User-Agent", "kube-probe/testbed")
        conn.request("GET", get.get("path") or "/", headers=headers)
        return 200 <= conn.getresponse().status < 400
    finally:
        conn.close()
