"""Run every benchmark once with its default, bounded settings (what `make bench` runs).

Each benchmark prints its own numbers; docs/benchmarks.md records them with the machine and
the load they ran under. Benchmarks are not tests: nothing here asserts a target.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, arguments): each run is bounded in time by its own flags.
RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bench_resilience.py", ("--n", "20000")),
    ("bench_ca.py", ("--seconds", "3")),
    ("bench_xds.py", ("--clients", "100,1000", "--rounds", "3")),
    ("bench_hotpath.py", ()),
    ("bench_proxy.py", ("--duration", "5", "--runs", "3")),
)


def main() -> int:
    only = set(sys.argv[1:])
    failed: list[str] = []
    for script, args in RUNS:
        if only and script.removesuffix(".py") not in only and script not in only:
            continue
        print(f"\n== {script} {' '.join(args)}", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / script), *args])
        print(f"== {script}: exit {rc} after {time.monotonic() - started:.0f}s", flush=True)
        if rc != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
