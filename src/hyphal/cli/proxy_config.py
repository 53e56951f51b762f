"""`hyphal proxy-config WORKLOAD [listeners|routes|clusters|endpoints|all]`: live xDS config.

Shows what one sidecar has ACKed, as its admin endpoint reports it.
"""

from __future__ import annotations

import argparse
import json
import sys

from hyphal.local import configdump
from hyphal.local.observe import NoSuchReplica, config_dump, find_replica
from hyphal.local.probe import HttpError
from hyphal.local.render import table
from hyphal.local.rundir import RunDir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy-config", help="show a sidecar's config (from its /config_dump)")
    p.add_argument("workload", metavar="WORKLOAD")
    p.add_argument("section", nargs="?", default="all",
                   choices=(*configdump.SECTIONS, "all"))
    p.add_argument("--replica", type=int, default=None, help="replica index (default 0)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument(
        "--run-dir", default=".hyphal", help="run directory `up` used (default: .hyphal)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        state = RunDir(args.run_dir).require_state()
        r = find_replica(state, args.workload, args.replica)
        dump = config_dump(r)
    except (FileNotFoundError, NoSuchReplica) as exc:
        print(f"hyphal proxy-config: {exc}", file=sys.stderr)
        return 1
    except (HttpError, ValueError) as exc:
        print(f"hyphal proxy-config: the sidecar of {args.workload} did not answer ({exc}); "
              f"is it running? See `hyphal status` and `hyphal logs {args.workload} --sidecar`",
              file=sys.stderr)
        return 1
    sections = configdump.SECTIONS if args.section == "all" else (args.section,)
    if args.output == "json":
        if args.section == "all":
            print(json.dumps(dump, indent=2))
        else:
            print(json.dumps({s: [dict(zip(configdump.HEADERS[s], row, strict=False))
                                  for row in configdump.ROWS[s](dump)] for s in sections},
                             indent=2))
        return 0
    for i, s in enumerate(sections):
        if len(sections) > 1:
            print(("\n" if i else "") + s.upper())
        print(table(configdump.HEADERS[s], configdump.ROWS[s](dump)))
    return 0
