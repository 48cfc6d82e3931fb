"""Fixtures for the e2e tier: the running testbed, the helm-installed operator, a fresh
namespace per test, and helpers to reach a rollout's front door.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from e2e import scenario

# Chart values for the e2e tier: the testbed's Prometheus as the operator's default (added by
# the fixture) and a short tick so decisions follow checks quickly (the analysis interval still
# governs checks). Routers use the default EndpointSlices source, as on a real cluster.
# Cluster-wide (the chart's opt-in): every test makes a fresh namespace for its rollouts.
OPERATOR_VALUES = {"operator": {"tickInterval": 0.5, "logLevel": "debug", "clusterWide": True}}


@pytest.fixture(scope="session")
def cluster() -> scenario.Cluster:
    return scenario.ensure_testbed(start=True)


@pytest.fixture(scope="session")
def api(cluster: scenario.Cluster) -> client.ApiClient:
    return cluster.api()


@pytest.fixture(scope="session")
def operator(cluster: scenario.Cluster) -> dict:
    """The operator installed with the real chart through `helm upgrade --install`."""
    values = {"operator": {**OPERATOR_VALUES["operator"], "prometheusUrl": cluster.prometheus_url}}
    scenario.ensure_operator(cluster, values)
    return values


@pytest.fixture
def namespace(cluster: scenario.Cluster, api: client.ApiClient, operator: dict):
    """A fresh namespace per test, deleted afterwards (with everything the operator made)."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    scenario.ensure_namespace(cluster, name)
    yield name
    client.CoreV1Api(api).delete_namespace(name)


def front_door(api: client.ApiClient, namespace: str, service: str):
    """A resolver for the LoadRunner: http://<ready endpoint> of the Service, or None."""

    def resolve() -> str | None:
        addresses = scenario.fetch_ready_addresses(api, namespace, service)
        return f"http://{addresses[0]}" if addresses else None

    return resolve
