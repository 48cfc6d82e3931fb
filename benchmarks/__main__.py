"""`make bench`: runs every benchmarks/bench_*.py in turn, each in its own process.

Separate processes keep one benchmark's threads, imports and environment (e.g. BLAS threads) out of the next.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for path in sorted(here.glob("bench_*.py")):
        print(f"== {path.stem}", flush=True)
        rc = subprocess.run([sys.executable, "-m", f"benchmarks.{path.stem}"], cwd=here.parent).returncode
        if rc != 0:
            failed.append(path.stem)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
