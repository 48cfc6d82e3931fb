"""A tiny in-memory Kubernetes API over real HTTP on loopback, for adapter and CLI unit tests.

Enough of the API's semantics to catch real mistakes: namespaced paths, server-side apply (as a
merge), JSON merge patch with a resourceVersion precondition (409), label-selector lists, field
selectors on events, generateName, 404s with Status bodies. No schema validation: integration
tests against the real API server cover that.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from rollout_operator.adapters.fakes import apply_merge_patch


class StubKube:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # collection path + "/" + name → object
        self.requests: list[tuple[str, str, str, Any]] = []  # (method, path, content-type, body)
        self.lock = threading.Lock()
        self._rv = 100
        self._names = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StubKube:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def put(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            obj = json.loads(json.dumps(obj))
            obj.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
            self.objects[f"{collection}/{obj['metadata']['name']}"] = obj
            return obj

    def get(self, collection: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(f"{collection}/{name}")

    def writes(self) -> list[tuple[str, str, str, Any]]:
        return [r for r in self.requests if r[0] != "GET"]

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def api_client(self) -> Any:
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return client.ApiClient(config)

    # --- request handling -------------------------------------------------------------
    def handle(self, method: str, raw_path: str, content_type: str, body: Any) -> tuple[int, Any]:
        url = urlparse(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/")
        with self.lock:
            self.requests.append((method, path, content_type, body))
            sub = ""
            if path.endswith("/status") and path.count("/") > 6:
                path, sub = path[: -len("/status")], "status"
            collection, _, name = path.rpartition("/")
            if method == "GET" and self._is_collection(path):
                items = [o for k, o in self.objects.items() if k.rsplit("/", 1)[0] == path]
                return 200, {"items": [o for o in items if _matches(o, query)]}
            if method == "POST":
                return self._create(path, body)
            obj = self.objects.get(path)
            if method == "GET":
                return (200, obj) if obj else _not_found(name)
            if method == "DELETE":
                return (200, self.objects.pop(path)) if obj else _not_found(name)
            if method == "PATCH":
                return self._patch(path, collection, name, obj, content_type, body, sub)
        return 405, {"message": "method not allowed"}

    @staticmethod
    def _is_collection(path: str) -> bool:
        parts = path.strip("/").split("/")
        return "namespaces" in parts and len(parts) - parts.index("namespaces") == 3

    def _create(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        meta = body.setdefault("metadata", {})
        if "name" not in meta:
            self._names += 1
            meta["name"] = f"{meta.get('generateName', 'x-')}{self._names:05d}"
        key = f"{path}/{meta['name']}"
        if key in self.objects:
            return 409, {"message": f"{meta['name']} already exists", "reason": "AlreadyExists"}
        meta["resourceVersion"] = self._next_rv()
        self.objects[key] = body
        return 201, body

    def _patch(
        self,
        path: str,
        collection: str,
        name: str,
        obj: dict[str, Any] | None,
        content_type: str,
        body: dict[str, Any],
        sub: str,
    ) -> tuple[int, Any]:
        if content_type.startswith("application/apply-patch"):
            merged = apply_merge_patch(obj or {}, body)
        else:
            if obj is None:
                return _not_found(name)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != obj["metadata"]["resourceVersion"]:
                return 409, {
                    "message": "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                    "reason": "Conflict",
                }
            if sub == "status":  # the status subresource ignores everything but status
                body = {"status": body.get("status")}
            merged = apply_merge_patch(obj, body)
        merged.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        self.objects[path] = merged
        return 200, merged

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                code, answer = stub.handle(self.command, self.path, self.headers.get("Content-Type", ""), body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


def _not_found(name: str) -> tuple[int, dict[str, Any]]:
    return 404, {"kind": "Status", "message": f'"{name}" not found', "reason": "NotFound", "code": 404}


def _matches(obj: dict[str, Any], query: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels", {})
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            return False
    return True
