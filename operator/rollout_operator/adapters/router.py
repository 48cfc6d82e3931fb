"""Traffic provider `router` (default): the built-in router watches the rollout's status.traffic.

So the status write IS the switch (weights, mirror and sticky header): `ensure_traffic` has
nothing else to do.
"""

from __future__ import annotations

from typing import Any

from ..domain.status import TrafficSplit
from .kube import KubeApi


class RouterTraffic:
    """The built-in router provider."""

    name = "router"

    def __init__(self, api: KubeApi) -> None:
        del api  # every provider is built with the API client; this one never calls it

    def ensure_traffic(self, namespace: str, rollout: str, split: TrafficSplit, config: Any) -> bool:
        # The router reads status.traffic, which reconcile writes once per tick: nothing to do here.
        return False
