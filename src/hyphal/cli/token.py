"""`hyphal token create`: print a bootstrap token for a workload identity."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `30m`, `24h`, `7d` or plain seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 24h)"
        )
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return dt.timedelta(seconds=seconds)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("token", help="bootstrap tokens for workloads")
    tsub = p.add_subparsers(dest="token_command", metavar="SUBCOMMAND")
    c = tsub.add_parser(
        "create",
        help="print a bootstrap token proving a namespace and service account",
        description="Print a bootstrap token (a JWT signed with STATE_DIR/token-key) that a "
        "sidecar presents to the CA to get its certificate.",
    )
    c.add_argument("--state-dir", required=True, type=Path, help="the control plane's state dir")
    c.add_argument("--namespace", "-n", required=True)
    c.add_argument("--service-account", "--sa", required=True, dest="service_account")
    c.add_argument("--ttl", type=parse_duration, default=parse_duration("24h"), help="e.g. 24h")
    c.add_argument("--trust-domain", default="cluster.local")
    c.set_defaults(func=run_create)

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)


def run_create(args: argparse.Namespace) -> int:
    from hyphal.control.ca.tokens import TokenIssuer

    try:
        issuer = TokenIssuer.load_or_create(args.state_dir, args.trust_domain)
        token = issuer.mint(args.namespace, args.service_account, args.ttl)
    except (OSError, ValueError) as exc:
        print(f"hyphal token create: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
