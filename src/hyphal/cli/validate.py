"""`hyphal validate DIR|FILE...`: load and check resources; report every error, exit 1 on any."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check resource files without applying them",
        description="Load every *.yaml/*.yml/*.json in the given files and directories, check "
        "each resource and the references between them, and print every problem found.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="DIR|FILE")
    p.add_argument(
        "--domain", default="cluster.local", help="cluster domain for host names (cluster.local)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hyphal.config import ConfigErrors, load_paths, validate

    try:
        rs = load_paths(args.paths)
    except ConfigErrors as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        return 1
    errors = validate(rs, domain=args.domain)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"ok: {len(rs)} resources")
    return 0
