"""`hyphal version`: print the version."""

from __future__ import annotations

import argparse

from hyphal import __version__


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("version", help="print hyphal's version")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"hyphal {__version__}")
    return 0
