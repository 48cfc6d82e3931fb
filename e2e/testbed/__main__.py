"""Command line of the local testbed: `python -m e2e.testbed up|down|status|env|restart-apiserver`.

`up` starts etcd, the control plane, kwok, Prometheus, the pod runner and (real mode) the
node: containerd, kubelet, kube-proxy; `down` removes it all, host changes included;
`restart-apiserver` stops the API server and starts it again with the same flags (etcd, and
so every object, stays).
"""

from __future__ import annotations

import argparse
import sys

from .cluster import TestbedError, down, is_up, restart_apiserver, status, up
from .paths import default_layout, find_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.testbed", description=__doc__)
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "env", "restart-apiserver"],
        help="up: start (idempotent); down: stop and remove state; "
        "status: process table; env: shell exports for kubectl/helm; "
        "restart-apiserver: stop the API server and start it again with the same flags",
    )
    args = parser.parse_args(argv)
    try:
        layout = default_layout()
        binaries = find_binaries()
        if args.command == "up":
            up(binaries, layout)
        elif args.command == "down":
            down(layout)
        elif args.command == "restart-apiserver":
            r = restart_apiserver(binaries, layout)
            print(
                f"kube-apiserver restarted: pid {r.old_pid} -> {r.new_pid}; stopping took "
                f"{r.stopped_at - r.stopping_at:.1f}s, ready {r.ready_at - r.stopped_at:.1f}s after that"
            )
        elif args.command == "status":
            for name, pid in status(layout).items():
                print(f"{name:25} {'running, pid ' + str(pid) if pid else 'not running'}")
            return 0 if is_up(layout) else 1
        else:
            print(
                f"export KUBECONFIG={layout.kubeconfig}\n"
                f"export PATH={binaries.kubectl.parent}:{binaries.helm.parent}:$PATH"
            )
    except (TestbedError, ValueError) as exc:
        print(f"testbed {args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
