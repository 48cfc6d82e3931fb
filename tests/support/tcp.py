"""Byte relays for the tests' TCP proxies (a Prometheus that can be cut off, an API-server path
that can be broken): copy until either side closes, then shut both down."""

from __future__ import annotations

import socket


def relay(src: socket.socket, dst: socket.socket) -> None:
    """Copies src → dst until src ends or either side fails, then shuts both sockets down so the
    relay running the other way ends too."""
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
