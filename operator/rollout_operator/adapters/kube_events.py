"""Event recorder on the Kubernetes API: core/v1 Events on the ModelRollout (`kubectl describe` shows them).

An event that cannot be posted is logged and dropped: events explain decisions, they never block them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .kube import EVENTS, KubeApi, KubeError
from .manifests import Owner

COMPONENT = "modelrollout-operator"
MAX_MESSAGE = 1024  # the API server rejects longer event messages
log = logging.getLogger(__name__)


def compute_event(
    owner: Owner, type_: str, reason: str, message: str, now: datetime, instance: str = ""
) -> dict[str, Any]:
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{owner.name}.", "namespace": owner.namespace},
        "involvedObject": {
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "namespace": owner.namespace,
            "uid": owner.uid,
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance or COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class KubeEvents:
    """Posts one Event per call; the clock is injected for tests."""

    def __init__(self, api: KubeApi, clock: Callable[[], datetime] | None = None) -> None:
        self._api = api
        self._clock = clock or (lambda: datetime.now(UTC))
        self._instance = socket.gethostname()

    def emit(self, owner: Owner, type_: str, reason: str, message: str) -> None:
        event = compute_event(owner, type_, reason, message, self._clock(), self._instance)
        try:
            self._api.create(EVENTS, owner.namespace, event)
        except KubeError as err:
            log.warning("could not post event %s on %s/%s: %s", reason, owner.namespace, owner.name, err)
