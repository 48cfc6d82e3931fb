"""Runs the router's Go unit tests (`go test ./...` in model_server/traffic_router) so the
project's one test command covers them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.router_fixtures import ROUTER_DIR

pytestmark = pytest.mark.unit


def test_go_unit_tests_pass():
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out = subprocess.run([go, "test", "-count=1", "./..."], cwd=ROUTER_DIR, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout
    # every package with logic has tests (a package dropping to "no test files" is a regression)
    for pkg in ["backend", "feedback", "proxy", "settings", "shadow", "source", "split"]:
        assert f"ok  \tmodelrollout.dev/traffic-router/internal/{pkg}" in out.stdout, out.stdout
