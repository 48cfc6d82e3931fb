"""A total deadline for one outside HTTP call, for both Prometheus (http.client) and Kubernetes (urllib3).

Socket timeouts bound each read, not the whole answer: a server can send one byte per read forever,
in the headers or the body. A watchdog shuts the call's sockets down at the deadline, which ends
whatever read or write is waiting; the caller then sees `expired` and reports DeadlineExceeded.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

# Which Deadline watches a socket now. A pooled connection outlives one call: the next call on
# it takes the socket over, so an old deadline firing late never shuts down a newer call's read.
_owners: dict[socket.socket, Deadline] = {}
_owners_lock = threading.Lock()
_current = threading.local()  # the Deadline of the call this thread is making, for urllib3 hooks


class DeadlineExceeded(Exception):
    """The whole call took longer than its total deadline (e.g. an answer trickling in)."""


class Deadline:
    """`with Deadline(seconds) as d:` bounds the calls made inside; `d.watch(sock)` adds a socket
    to shut down at the deadline (sockets opened through `install_on_pool_manager` join by
    themselves). After the block, `d.expired` says whether it fired."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._expired = threading.Event()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    @property
    def expired(self) -> bool:
        return self._expired.is_set()

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"no complete answer within {self.seconds:.3g}s (total deadline)")

    def __enter__(self) -> Deadline:
        self._outer = getattr(_current, "deadline", None)
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._timer.cancel()
        _current.deadline = self._outer
        with _owners_lock:
            for sock in [s for s, owner in _owners.items() if owner is self]:
                del _owners[sock]

    def watch(self, sock: socket.socket | None) -> None:
        """Shut `sock` down at the deadline (at once if it already passed)."""
        if sock is None:
            return
        with _owners_lock:
            _owners[sock] = self
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with _owners_lock:  # held while shutting down: no other call can take a socket over meanwhile
            self._expired.set()
            for sock, owner in _owners.items():
                if owner is self:
                    _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed: the call ended as the deadline passed
        pass


def watch_in_current_deadline(sock: socket.socket | None) -> None:
    """Called by the urllib3 connection hook: the socket joins the deadline of this thread's call."""
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedConnection:
    """Mixed into urllib3's connection classes: a socket joins the calling thread's deadline when
    it connects and each time a pooled connection starts another request."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        watch_in_current_deadline(self.sock)  # type: ignore[attr-defined]

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch_in_current_deadline(self.sock)  # type: ignore[attr-defined]  # None until connected
        return super().request(*args, **kwargs)  # type: ignore[misc]


def install_on_pool_manager(pool_manager: Any) -> None:
    """Makes every connection `pool_manager` (urllib3's PoolManager, ProxyManager or
    SOCKSProxyManager) opens report its socket to the calling thread's Deadline.

    urllib3 has no total deadline (its docs suggest a watcher thread) and no hook that hands out
    the socket of a call, so this subclasses the pool classes the manager builds
    (`pool_classes_by_scheme`, each with its `ConnectionCls`): the one place that depends on
    urllib3's structure (2.x); tests/unit/operator/test_deadline.py fails if it stops working."""
    classes = {}
    for scheme, pool in pool_manager.pool_classes_by_scheme.items():
        conn = pool.ConnectionCls
        watched = type(f"Watched{conn.__name__}", (_WatchedConnection, conn), {})
        classes[scheme] = type(f"Watched{pool.__name__}", (pool,), {"ConnectionCls": watched})
    pool_manager.pool_classes_by_scheme = classes
    pool_manager.clear()  # pools made before this point would still use the plain classes
