"""`hyphal down`: stop the local mesh that `hyphal up` started (idempotent)."""

from __future__ import annotations

import argparse

from hyphal.local.rundir import RunDir
from hyphal.local.teardown import stop_mesh


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("down", help="stop the local mesh (apps, sidecars, control plane)")
    p.add_argument(
        "--run-dir", default=".hyphal", help="run directory `up` used (default: .hyphal)"
    )
    p.add_argument("--grace", type=float, default=5.0,
                   help="seconds between SIGTERM and SIGKILL (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = stop_mesh(RunDir(args.run_dir), grace=args.grace)
    for line in report.lines():
        print(line)
    return 0
