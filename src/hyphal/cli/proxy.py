"""`hyphal proxy --bootstrap FILE`: run a sidecar (exit 2: bad bootstrap, 3: cannot start)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy", help="run a sidecar proxy from a bootstrap file")
    p.add_argument(
        "--bootstrap",
        required=True,
        metavar="FILE",
        help="the sidecar's bootstrap JSON (see docs/xds-conventions.md)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from hyphal.proxy.bootstrap import BootstrapError, load_bootstrap

    try:
        bootstrap = load_bootstrap(args.bootstrap)
    except BootstrapError as exc:
        print(f"hyphal proxy: {exc}", file=sys.stderr)
        return 2

    from hyphal.proxy.server import ProxyStartError, run_proxy

    try:
        import uvloop

        return uvloop.run(run_proxy(bootstrap))
    except ProxyStartError as exc:
        print(f"hyphal proxy: {exc}", file=sys.stderr)
        return 3
    except BootstrapError as exc:  # token or root file unreadable at start
        print(f"hyphal proxy: {exc}", file=sys.stderr)
        return 2
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(run_proxy(bootstrap))
