"""Traffic provider `router` (default): the built-in router watches the rollout's status.traffic.

So the status write IS the switch; `ensure_traffic` has nothing else to do, and reading back
means reading status.traffic of the ModelRollout from the API server.
"""

from __future__ import annotations

from typing import Any

from .kube import MODEL_ROLLOUTS, KubeApi
from ..domain.status import TrafficSplit
from ..domain.status import status_from_dict


class RouterTraffic:
    """The built-in router provider."""

    name = "router"

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def ensure_traffic(self, namespace: str, rollout: str, split: TrafficSplit, config: Any) -> bool:
        # The router reads status.traffic, which reconcile writes once per tick: nothing to do here.
        return False

    def fetch_traffic(self, namespace: str, rollout: str, config: Any) -> TrafficSplit | None:
        obj = self._api.get(MODEL_ROLLOUTS, namespace, rollout)
        split = status_from_dict((obj or {}).get("status")).traffic
        return split if split.stable is not None else None
