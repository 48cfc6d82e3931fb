"""Starting and stopping the testbed's daemons as process groups tracked by pid files.

A pid file holds "<pid> <start-time>" so `down` from a fresh shell never signals a recycled pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def read_start_time(pid: int) -> str | None:
    """The process start time from /proc (field 22), or None if the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are space separated.
    return stat.rsplit(")", 1)[1].split()[19]


def read_cmdline(pid: int) -> list[str] | None:
    """The process's argv from /proc, or None if the pid is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def write_pidfile(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {read_start_time(pid) or '?'}\n")


def read_live_pid(path: Path) -> int | None:
    """The pid recorded in `path` if that very process still runs (not a zombie), else None."""
    try:
        pid_s, start = path.read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    if read_start_time(pid) != start:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid


def spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    pids_dir: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Starts `argv` in its own session (so `down` can signal the whole group), logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    write_pidfile(pids_dir / f"{name}.pid", proc.pid)
    return proc


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def stop_pidfile(path: Path, grace_s: float) -> bool:
    """SIGTERM the recorded process group, SIGKILL after `grace_s`; removes the pid file.

    Returns True if a live process was found.
    """
    pid = read_live_pid(path)
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while read_live_pid(path) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if read_live_pid(path) is not None:
            _signal_group(pid, signal.SIGKILL)
            while read_live_pid(path) is not None and time.monotonic() < deadline + 5:
                time.sleep(0.05)
    path.unlink(missing_ok=True)
    return pid is not None
