"""Pod process output written in the CRI log format (as under /var/log/pods on a node).

kwok's server reads these files for `kubectl logs`; people can read them directly too:
"<RFC3339 time> <stdout|stderr> <F|P> <line>".
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from pathlib import Path
from typing import IO


def format_cri_line(ts: dt.datetime, stream: str, chunk: bytes) -> bytes:
    """One CRI log line; P marks a partial line (no newline yet), F a full one."""
    tag = b"F" if chunk.endswith(b"\n") else b"P"
    stamp = ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} ".encode() + tag + b" " + chunk.rstrip(b"\n") + b"\n"


def _copy(source: IO[bytes], stream: str, log_path: Path) -> None:
    with open(log_path, "ab", buffering=0) as out:
        for chunk in iter(lambda: source.readline(65536), b""):
            out.write(format_cri_line(dt.datetime.now(dt.UTC), stream, chunk))
    source.close()


def spawn_with_cri_log(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen:
    """Starts argv in its own session; stdout/stderr are appended to log_path in CRI format."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=cwd,
    )
    for source, stream in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
        threading.Thread(
            target=_copy, args=(source, stream, log_path), daemon=True, name=f"log-{proc.pid}-{stream}"
        ).start()
    return proc
