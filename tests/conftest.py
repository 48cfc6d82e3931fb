"""Fixtures used by more than one tier (each tier's own are in its conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.router_fixtures import build_router


@pytest.fixture(scope="session")
def router_bin() -> Path:
    """The router binary, built (or taken from the build cache) once per session."""
    return build_router()
