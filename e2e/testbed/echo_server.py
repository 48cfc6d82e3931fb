"""Tiny HTTP server behind the image `modelrollout/testbed-echo:dev`, for testbed self-tests.

GET / answers who it is (pod, address); /healthz and /readyz for probes (POST /readyz?ready=0
turns readiness off); /metrics exposes a request counter; GET /api?path=P calls the API server
with the pod's own credentials ($KUBECONFIG) and reports the HTTP status (RBAC self-tests).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import ssl
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class EchoState:
    def __init__(self) -> None:
        self.ready = True
        self.requests = 0
        self.lock = threading.Lock()


class EchoHandler(BaseHTTPRequestHandler):
    state: EchoState
    host: str
    port: int

    def log_message(self, fmt, *args):  # one line per request in the pod log
        print(f"{self.address_string()} {fmt % args}", flush=True)

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server naming
        url = urlparse(self.path)
        with self.state.lock:
            self.state.requests += 1
        if url.path == "/healthz":
            self._send(200, b"ok\n")
        elif url.path == "/readyz":
            self._send(200, b"ready\n") if self.state.ready else self._send(503, b"not ready\n")
        elif url.path == "/api":
            self._api(parse_qs(url.query).get("path", [""])[0])
        elif url.path == "/metrics":
            text = (
                "# HELP echo_requests_total HTTP requests served.\n# TYPE echo_requests_total counter\n"
                f"echo_requests_total {self.state.requests}\n"
            )
            self._send(200, text.encode(), "text/plain; version=0.0.4")
        else:
            self._send(200, json.dumps(self._identity()).encode() + b"\n", "application/json")

    def _identity(self) -> dict:
        return {
            "pod": os.environ.get("POD_NAME", ""),
            "namespace": os.environ.get("POD_NAMESPACE", ""),
            "host": self.host,
            "port": self.port,
            "path": self.path,
            "pid": os.getpid(),
            "message": os.environ.get("ECHO_MESSAGE", ""),
            "in_cluster_env": "KUBERNETES_SERVICE_HOST" in os.environ,
            "has_kubeconfig": bool(os.environ.get("KUBECONFIG")),
        }

    def _api(self, api_path: str) -> None:
        if not api_path.startswith("/"):
            self._send(400, b"query parameter path must be an absolute API path\n")
            return
        self._send(200, json.dumps({"status": call_api_as_pod(api_path)}).encode(), "application/json")

    def do_POST(self):  # noqa: N802
        url = urlparse(self.path)
        if url.path != "/readyz":
            self._send(404, b"not found\n")
            return
        value = parse_qs(url.query).get("ready", [""])[0]
        if value not in ("0", "1"):
            self._send(400, b"query parameter ready must be 0 or 1\n")
            return
        self.state.ready = value == "1"
        self._send(200, b"ok\n")


def make_handler(state: EchoState, host: str, port: int) -> type[EchoHandler]:
    return type("BoundEchoHandler", (EchoHandler,), {"state": state, "host": host, "port": port})


def call_api_as_pod(api_path: str) -> int:
    """GET api_path with the token and CA from $KUBECONFIG; returns the HTTP status code."""
    import yaml  # only this endpoint needs it

    config = yaml.safe_load(open(os.environ["KUBECONFIG"]))
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    with tempfile.NamedTemporaryFile("wb", suffix=".crt") as ca:
        ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        ca.flush()
        ctx = ssl.create_default_context(cafile=ca.name)
    req = urllib.request.Request(cluster["server"] + api_path, headers={"Authorization": f"Bearer {user['token']}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (the pod IP)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port to bind")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(EchoState(), args.host, args.port))
    # SIGTERM -> clean shutdown, like a well-behaved container.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"echo server listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
