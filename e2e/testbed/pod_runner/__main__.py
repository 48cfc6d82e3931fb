"""Entry point of the pod runner daemon: `python -m e2e.testbed.pod_runner --state-dir DIR`.

Started by `python -m e2e.testbed up`; SIGTERM stops every pod process it started, then exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from ..paths import REPO_ROOT
from .api import PodApi
from .images import load_image_map
from .runner import Runner, compute_base_env, stop_orphans
from .worker import RunnerEnv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pod-runner", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True, help="the testbed state dir (.cluster)")
    parser.add_argument("--api-server", required=True, help="API server URL written into pod kubeconfigs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    state = args.state_dir.resolve()
    kubeconfig = state / "kubeconfig"
    if not kubeconfig.exists():
        parser.error(f"--state-dir {state}: no kubeconfig there; start the testbed with `python -m e2e.testbed up`")
    stop_orphans(state / "pids" / "pods")
    env = RunnerEnv(
        state_dir=state,
        api_server=args.api_server,
        ca_pem=(state / "pki" / "ca.crt").read_bytes(),
        base_env=compute_base_env(REPO_ROOT),
    )
    runner = Runner(PodApi(str(kubeconfig)), env, load_image_map())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    threading.Thread(target=runner.watch_forever, args=(state / "pod-runner.ready",), name="watch", daemon=True).start()
    stopping.wait()
    logging.info("stopping all pod processes")
    runner.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
