"""Adapters: one interface per outside system (protocols), one module per provider, fakes, a factory.

Reconcile only sees the interfaces; `factory.build_adapters` wires the real providers.
"""

from .factory import Adapters, build_adapters, build_fake_adapters
from .kube import KubeApi, KubeError, TakeoverRefused
from .manifests import Owner, ServerTemplate
from .protocols import EventRecorder, MetricsProvider, TrafficRouter, Workloads

__all__ = [
    "Adapters",
    "EventRecorder",
    "KubeApi",
    "KubeError",
    "TakeoverRefused",
    "MetricsProvider",
    "Owner",
    "ServerTemplate",
    "TrafficRouter",
    "Workloads",
    "build_adapters",
    "build_fake_adapters",
]
