"""Unit tests of the testbed's API-server restart (e2e/testbed/cluster.py `restart_apiserver`):
it refuses, leaving the running process alone, when there is nothing to restart or the process
runs other flags than `up` would give. The restart itself runs on the testbed in
e2e/tests/test_chaos.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from e2e.testbed import cluster, paths, procs

pytestmark = pytest.mark.unit


def _layout(tmp_path: Path) -> paths.Layout:
    return paths.Layout(state_dir=tmp_path / "state", ports=paths.Ports().shifted(30000), pod_cidr="198.18.0.0/16")


def test_read_cmdline_is_the_argv_and_none_once_the_pid_is_gone(tmp_path):
    lay = _layout(tmp_path)
    argv = [sys.executable, "-c", "import time; time.sleep(30)", "two words", ""]
    proc = procs.spawn("sleeper", argv, lay.logs_dir / "sleeper.log", lay.pids_dir)
    try:
        assert procs.read_cmdline(proc.pid) == argv
    finally:
        proc.kill()
        proc.wait()
    assert procs.read_cmdline(proc.pid) is None


def test_restart_refuses_without_a_running_api_server(tmp_path):
    lay = _layout(tmp_path)
    with pytest.raises(cluster.TestbedError, match=r"kube-apiserver is not running in .*nothing to restart"):
        cluster.restart_apiserver(paths.find_binaries(), lay)


def test_restart_refuses_a_process_with_other_flags_and_leaves_it_running(tmp_path):
    lay = _layout(tmp_path)
    # Something else holds the API server's pid file: a restart would change what runs there.
    proc = procs.spawn(
        "kube-apiserver",
        [sys.executable, "-c", "import time; time.sleep(30)"],
        lay.logs_dir / "kube-apiserver.log",
        lay.pids_dir,
    )
    try:
        with pytest.raises(cluster.TestbedError, match=r"not the flags `up` gives.*refusing to restart"):
            cluster.restart_apiserver(paths.find_binaries(), lay)
        assert procs.read_live_pid(lay.pids_dir / "kube-apiserver.pid") == proc.pid
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
