"""A controllable model-server stand-in for router tests, run as a subprocess so a test can kill -9 it.

Answers KServe v1 (`:predict`) and v2 (`/infer`) with a fixed label, status, delay and (optional)
segments, or holds answers until the test releases them; GET /hits counts.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def parse_segments(spec: str) -> list[dict]:
    """`yes@0.1-0.6,no@1.2-1.7` -> the model server's segment objects."""
    out = []
    for item in filter(None, spec.split(",")):
        label, span = item.split("@")
        start, end = (float(x) for x in span.split("-"))
        out.append({"start_s": start, "end_s": end, "label": label, "confidence": 0.9})
    return out


HOLD_LIMIT_S = 30.0


def wait_for_file(path: Path) -> None:
    """Holds a request until the test releases it by creating `path` (bounded)."""
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def build_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()
    hits = {"n": 0}
    segments = parse_segments(args.segments) if args.segments is not None else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms delayed-ACK stalls

        def do_GET(self) -> None:
            with lock:
                self._send(200, {"hits": hits["n"], "version": args.version})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                hits["n"] += 1
            if args.delay:
                time.sleep(args.delay)
            if args.hold_until:
                wait_for_file(Path(args.hold_until))
            if args.status != 200:
                self._send(args.status, {"error": f"{args.version} refuses: bad input"})
                return
            if self.path.startswith("/v2/"):
                outputs = [
                    {"name": "label", "datatype": "BYTES", "shape": [1], "data": [args.label]},
                    {"name": "confidence", "datatype": "FP32", "shape": [1], "data": [args.confidence]},
                ]
                if segments is not None:
                    outputs.append(
                        {"name": "segments", "datatype": "BYTES", "shape": [1], "data": [json.dumps(segments)]}
                    )
                self._send(200, {"model_name": "m", "model_version": args.version, "outputs": outputs})
                return
            prediction = {"label": args.label, "confidence": args.confidence}
            if segments is not None:
                prediction["segments"] = segments
            self._send(200, {"predictions": [prediction], "echo_bytes": len(body), "served_by": args.version})

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if args.version_header:
                self.send_header("X-Model-Version", args.version_header)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    return Handler


class Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a test opening 8 connections at once on a busy
    # machine overflowed it, the dropped SYN outlived the router's 1 s --connect-timeout and the
    # request failed (seen in test_weight_change_applies_without_dropping_in_flight_requests).
    request_queue_size = 128
    daemon_threads = True


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--version", required=True)
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--hold-until", default="", help="answer POSTs only once this file exists (at most HOLD_LIMIT_S)")
    p.add_argument("--label", default="yes")
    p.add_argument("--confidence", type=float, default=0.9)
    p.add_argument("--version-header", default="")
    p.add_argument(
        "--segments",
        default=None,
        help="segments per prediction, e.g. yes@0.1-0.6,no@1.2-1.7 ('' = an empty list); unset = none",
    )
    args = p.parse_args()
    server = Server(("127.0.0.1", 0), build_handler(args))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
