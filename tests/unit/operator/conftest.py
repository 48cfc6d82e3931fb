"""Fixtures shared by the operator adapter tests: a stub Kubernetes API server on loopback."""

from __future__ import annotations

import pytest

from tests.support.stub_kube import StubKube


@pytest.fixture
def kube():
    with StubKube() as stub:
        yield stub
