"""Builds the adapter set the reconcile uses: real providers keyed by name, or in-memory fakes.

Traffic providers are looked up by `spec.trafficRouting` key (`router`, `gatewayAPI`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .fakes import FakeEvents, FakeMetrics, FakeNotifier, FakeStatusWriter, FakeTraffic, FakeWorkloads, fake_providers
from .gateway_api import GatewayApiTraffic
from .kube import CallHook, KubeApi
from .kube_events import KubeEvents
from .kube_status import KubeStatusWriter
from .kube_workloads import KubeWorkloads
from .manifests import PodSettings
from .prometheus import PrometheusMetrics, QueryHook
from .protocols import EventRecorder, MetricsProvider, Notifier, StatusWriter, TrafficRouter, Workloads
from .router import RouterTraffic

TRAFFIC_PROVIDERS: dict[str, Callable[[KubeApi], TrafficRouter]] = {
    "router": RouterTraffic,
    "gatewayAPI": GatewayApiTraffic,
}


@dataclass(frozen=True)
class Adapters:
    """Every outside system the reconcile touches, behind its interface."""

    metrics: MetricsProvider
    workloads: Workloads
    traffic: Mapping[str, TrafficRouter]
    events: EventRecorder
    status: StatusWriter
    notifier: Notifier

    def traffic_provider(self, name: str) -> TrafficRouter:
        if name not in self.traffic:
            raise KeyError(f"unknown traffic provider {name!r}; known: {', '.join(sorted(self.traffic))}")
        return self.traffic[name]


def build_adapters(
    api_client: Any,
    *,
    prometheus_timeout: float = 10.0,
    kube_timeout: float = 30.0,
    field_manager: str,
    router_endpoints_source: str = "endpointslices",
    pods: PodSettings = PodSettings(),
    on_call: CallHook | None = None,
    on_query: QueryHook | None = None,
    notifier: Notifier,
) -> Adapters:
    api = KubeApi(api_client, timeout=kube_timeout, on_call=on_call, field_manager=field_manager)
    return Adapters(
        metrics=PrometheusMetrics(timeout=prometheus_timeout, on_query=on_query),
        workloads=KubeWorkloads(api, router_endpoints_source, pods),
        traffic={name: make(api) for name, make in TRAFFIC_PROVIDERS.items()},
        events=KubeEvents(api),
        status=KubeStatusWriter(api),
        notifier=notifier,
    )


@dataclass(frozen=True)
class FakeAdapters(Adapters):
    """The in-memory set, typed as the fakes, so a test reads what they recorded without a cast."""

    metrics: FakeMetrics
    workloads: FakeWorkloads
    traffic: Mapping[str, FakeTraffic]
    events: FakeEvents
    status: FakeStatusWriter
    notifier: FakeNotifier


def build_fake_adapters(auto_ready: bool = True) -> FakeAdapters:
    return FakeAdapters(
        metrics=FakeMetrics(),
        workloads=FakeWorkloads(auto_ready=auto_ready),
        traffic=fake_providers(),
        events=FakeEvents(),
        status=FakeStatusWriter(),
        notifier=FakeNotifier(),
    )
