"""Helpers that run the real router binary and stand-in backends on loopback for router tests.

Used by tests/unit/test_router_process.py, test_router_mirror.py and tests/integration/test_router_k8s.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
ROUTER_DIR = REPO / "model_server" / "traffic_router"
BACKEND_SCRIPT = Path(__file__).resolve().parent / "router_backend.py"


def build_router() -> Path:
    """Builds (or reuses the cached) router binary via the project's build script;
    $MODELROLLOUT_ROUTER_BINARY points the tests at another build (e.g. one built with -race)."""
    if os.environ.get("MODELROLLOUT_ROUTER_BINARY"):
        return Path(os.environ["MODELROLLOUT_ROUTER_BINARY"])
    out = subprocess.run([str(ROUTER_DIR / "build.sh")], check=True, capture_output=True, text=True, timeout=900)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Backend:
    version: str
    proc: subprocess.Popen
    port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hits(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", "/hits")
        return json.loads(conn.getresponse().read())["hits"]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def start_backend(version: str, *extra: str) -> Backend:
    proc = subprocess.Popen(
        [sys.executable, str(BACKEND_SCRIPT), "--version", version, *extra], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None  # PIPE just above
    port = int(proc.stdout.readline())
    return Backend(version, proc, port)


def write_static(
    path: Path,
    traffic: dict | None = None,
    endpoints: dict | None = None,
    sticky: str | None = None,
    not_ready: dict | None = None,
) -> None:
    """Writes the --static-config file atomically (rename) so the router never reads half a file.
    `not_ready` lists endpoints as an EndpointSlice lists pods failing their readiness probe."""
    doc: dict = {}
    if traffic is not None:
        doc["traffic"] = traffic
    if endpoints is not None:
        doc["endpoints"] = endpoints
    if not_ready is not None:
        doc["notReadyEndpoints"] = not_ready
    if sticky is not None:
        doc["stickyHeader"] = sticky
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def weights(stable: str, stable_w: int, candidate: str | None = None, mirror: tuple[str, int] | None = None) -> dict:
    t: dict = {"stable": {"version": stable, "weight": stable_w}}
    if candidate:
        t["candidate"] = {"version": candidate, "weight": 100 - stable_w}
    if mirror:
        t["mirror"] = {"version": mirror[0], "percent": mirror[1]}
    return t


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Client:
    """One keep-alive connection to the router (one per thread: http.client is not thread-safe)."""

    port: int
    conn: http.client.HTTPConnection | None = field(default=None)

    def post(
        self,
        path: str = "/v1/models/m:predict",
        body: bytes = b'{"instances": []}',
        headers: dict[str, str] | None = None,
    ) -> Response:
        return self.request("POST", path, body, headers)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


@dataclass
class RouterProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    def client(self) -> Client:
        return Client(self.port)

    def logs(self) -> str:
        return self.log_path.read_text()

    def log_records(self) -> Iterator[dict]:
        for line in self.logs().splitlines():
            if line.startswith("{"):
                yield json.loads(line)

    def is_ready(self) -> bool:
        try:
            return Client(self.port).request("GET", "/readyz").status == 200
        except OSError:
            return False

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Waits for /healthz (the process answers), whether or not it is ready."""
        wait_for(
            lambda: self._answers("/healthz"),
            "the router to listen",
            timeout,
            every=0.05,
            describe=self.logs,
            gone=self._exited,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(self.is_ready, "the router to be ready", timeout, every=0.05, describe=self.logs, gone=self._exited)

    def _answers(self, path: str) -> bool:
        try:
            return Client(self.port).request("GET", path).status == 200
        except OSError:
            return False

    def _exited(self) -> str | None:
        if self.proc.poll() is None:
            return None
        return f"router exited with {self.proc.returncode}:\n{self.logs()}"

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Samples keyed by (name, sorted label items)."""
        text = Client(self.port).request("GET", "/metrics").body.decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return sum(v for (n, lbls), v in self.metrics().items() if n == name and set(labels.items()) <= set(lbls))

    def wait_metric(self, name: str, value: float, timeout: float = 10.0, **labels: str) -> None:
        wait_for(
            lambda: self.metric(name, **labels) == value,
            f"{name}{labels} to reach {value}",
            timeout,
            every=0.05,
            describe=lambda: f"now {self.metric(name, **labels)}",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_router(
    binary: Path, tmp: Path, *args: str, env: dict[str, str] | None = None, rollout: str = "speech"
) -> RouterProcess:
    port = free_port()
    log_path = tmp / f"router-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_") and k != "KUBECONFIG"}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [str(binary), f"--rollout={rollout}", "--host=127.0.0.1", f"--port={port}", *args],
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("w"),
        env=full_env,
    )
    return RouterProcess(proc, port, log_path)
