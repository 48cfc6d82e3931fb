"""Locates the helm and kubectl binaries the tests and the demo drive.

They are the testbed's own builds (e2e/testbed/paths.py find_binaries()); MODELROLLOUT_HELM / MODELROLLOUT_KUBECTL
override them, e.g. to point at a cluster's tools outside the testbed.
"""

from __future__ import annotations

import os
from pathlib import Path


class ToolMissing(RuntimeError):
    """A binary the chart tests or the demo need has not been built yet."""


def _testbed_path(attr: str) -> Path:
    from e2e.testbed import paths  # the testbed owns where its binaries are cached

    return Path(getattr(paths.find_binaries(), attr))


def _find(env: str, attr: str, name: str) -> Path:
    override = os.environ.get(env)
    path = Path(override) if override else _testbed_path(attr)
    if not path.is_file():
        where = f"{env}={override}" if override else str(path)
        raise ToolMissing(f"{name} not found at {where}: run `make testbed-bin` (or set {env} to a {name} binary)")
    return path


def find_helm() -> Path:
    """The helm binary (testbed build, or $MODELROLLOUT_HELM)."""
    return _find("MODELROLLOUT_HELM", "helm", "helm")


def find_kubectl() -> Path:
    """The kubectl binary (testbed build, or $MODELROLLOUT_KUBECTL)."""
    return _find("MODELROLLOUT_KUBECTL", "kubectl", "kubectl")
