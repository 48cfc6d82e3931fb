"""Fixtures of the integration tier, defined once here (pytest finds them; never import them).

The testbed's real API server, the CRD applied from crds/, a stub Prometheus on loopback, a fresh
namespace per test and the operator as a subprocess watching only that namespace.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import config

from e2e import scenario
from rollout_operator.adapters.kube import KubeApi
from tests.support.operator_harness import (
    CRD,
    OperatorProcess,
    TestbedMissing,
    connect_testbed,
    delete_rollouts,
    kubectl,
)
from tests.support.stub_prometheus import StubPrometheus, vector

VERSION_RE = re.compile(r'version="([^"]+)"')


class Gates:
    """What the stub Prometheus says: error rate per version (default healthy), 100 samples."""

    def __init__(self) -> None:
        self.error_rate: dict[str, float] = {}

    def answer(self, query: str):
        if query.startswith("sum(increase("):
            return vector(100)
        found = VERSION_RE.search(query)
        return vector(self.error_rate.get(found.group(1) if found else "", 0.001))


@pytest.fixture(scope="session")
def tb() -> scenario.Cluster:
    # Only the API server (and the pod runner) matter here; the testbed's Prometheus is not used.
    try:
        cluster = connect_testbed()
    except TestbedMissing as err:
        pytest.fail(str(err))
    pods = kubectl(
        cluster, "get", "pods", "-A", "-o", "jsonpath={range .items[*]}{.spec.containers[0].image}{'\\n'}{end}"
    ).stdout
    if "modelrollout/operator:dev" in pods:
        pytest.fail(
            "a helm-installed operator is running on the testbed and would reconcile the "
            "integration tests' namespaces too; `helm uninstall` it (or `make cluster-down`) first"
        )
    return cluster


@pytest.fixture(scope="session")
def crd(tb: scenario.Cluster) -> None:
    kubectl(tb, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl(tb, "wait", "--for=condition=Established", "--timeout=60s", "crd/modelrollouts.modelrollout.dev")


@pytest.fixture(scope="session")
def api(tb: scenario.Cluster) -> KubeApi:
    return KubeApi(config.new_client_from_config(config_file=str(tb.kubeconfig)))


@pytest.fixture(scope="session")
def gates() -> Gates:
    return Gates()


@pytest.fixture(scope="session")
def prom(gates: Gates) -> Iterator[StubPrometheus]:
    with StubPrometheus() as stub:
        stub.responder = gates.answer
        yield stub


@pytest.fixture
def ns(tb: scenario.Cluster, crd: None, gates: Gates) -> Iterator[str]:
    name = f"mr-it-{uuid.uuid4().hex[:6]}"
    kubectl(tb, "create", "namespace", name)
    gates.error_rate.clear()
    yield name
    delete_rollouts(tb, name, operator_running=False)  # the operator fixture already cleaned up
    kubectl(tb, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(tb: scenario.Cluster, ns: str, prom: StubPrometheus, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(tb, ns, prom.url, tmp_path).start()
    yield proc
    delete_rollouts(tb, ns, operator_running=proc.proc is not None and proc.proc.poll() is None)
    proc.stop()
