"""`hyphal status`: each replica of the local mesh — processes, health, identity, cert, config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hyphal.local.observe import mesh_view
from hyphal.local.render import table
from hyphal.local.rundir import RunDir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show the local mesh: replicas, pids, identity, config")
    p.add_argument(
        "--run-dir", default=".hyphal", help="run directory `up` used (default: .hyphal)"
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


def _proc(p: dict[str, Any]) -> str:
    text = f"{p['pid'] or '-'} {p['state']}"
    if p["restarts"]:
        text += f" restarts={p['restarts']}"
    if p["exit_code"] is not None:
        text += f" exit={p['exit_code']}"
    return text


def _versions(v: dict[str, str]) -> str:
    if not v:
        return "-"
    short = {"listeners": "L", "routes": "R", "clusters": "C", "endpoints": "E", "secrets": "S"}
    return " ".join(f"{short.get(k, k)}:{val[:8]}" for k, val in sorted(v.items()))


def run(args: argparse.Namespace) -> int:
    try:
        state = RunDir(args.run_dir).require_state()
    except FileNotFoundError as exc:
        print(f"hyphal status: {exc}", file=sys.stderr)
        return 1
    view = mesh_view(state)
    if args.output == "json":
        print(json.dumps(view, indent=2))
        return 0
    c = view["control"]
    cs = c["status"]
    print(f"mesh: {view['phase']}; supervisor pid {view['supervisor']['pid']} "
          f"({'alive' if view['supervisor']['alive'] else 'not running'}); "
          f"control plane pid {c['pid']} ({'ready' if c['ready'] else 'NOT READY: ' + c['state']})"
          f" at {view['api']}"
          + (f" ({cs['error']})" if "error" in cs else ""))
    rows = []
    for r in view["replicas"]:
        rows.append([r["workload"], r["replica"], _proc(r["app"]), _proc(r["sidecar"]),
                     "yes" if r["ready"] else "no", r["identity"], r["cert_expiry"],
                     _versions(r["config_versions"]), r["sync"]])
    print(table(["WORKLOAD", "REPLICA", "APP (pid state)", "SIDECAR (pid state)", "READY",
                 "IDENTITY", "CERT EXPIRES", "ACKED CONFIG", "CONTROL PLANE"], rows))
    return 0
