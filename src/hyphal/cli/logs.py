"""`hyphal logs WORKLOAD`: print (or follow) an app's or its sidecar's log from the run dir."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hyphal.local.observe import NoSuchReplica, find_replica
from hyphal.local.rundir import RunDir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("logs", help="show a workload's log (or its sidecar's, or 'control')")
    p.add_argument("workload", metavar="WORKLOAD",
                   help="workload name; also 'control' or 'supervisor'")
    p.add_argument("--replica", type=int, default=None, help="replica index (default 0)")
    p.add_argument("--sidecar", action="store_true", help="the sidecar's log instead of the app's")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N lines")
    p.add_argument(
        "--run-dir", default=".hyphal", help="run directory `up` used (default: .hyphal)"
    )
    p.set_defaults(func=run)


def log_path(run_dir: RunDir, workload: str, replica: int | None, sidecar: bool) -> Path:
    if workload in ("control", "supervisor"):
        return run_dir.logs / f"{workload}.log"
    state = run_dir.require_state()
    r = find_replica(state, workload, replica)
    return Path(r["sidecar_log"] if sidecar else r["app_log"])


def run(args: argparse.Namespace) -> int:
    try:
        path = log_path(RunDir(args.run_dir), args.workload, args.replica, args.sidecar)
    except (FileNotFoundError, NoSuchReplica) as exc:
        print(f"hyphal logs: {exc}", file=sys.stderr)
        return 1
    if not path.exists():
        print(f"hyphal logs: {path} does not exist yet (the process has not started)",
              file=sys.stderr)
        return 1
    with open(path, "rb") as fh:
        data = fh.read()
        if args.tail is not None:
            data = b"\n".join(data.splitlines()[-args.tail:]) + b"\n"
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        if not args.follow:
            return 0
        try:
            while True:
                chunk = fh.read()
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
        except (KeyboardInterrupt, BrokenPipeError):
            return 0
