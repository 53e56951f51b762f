"""The `hyphal` command: one module per subcommand, dispatched here."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each module named here exposes `register(subparsers) -> None`; the parser it adds sets
# `func(args) -> int` as its default. Modules are imported lazily so that a slow import
# (grpc, uvloop) is paid only by the commands that need it.
COMMANDS: dict[str, str] = {
    "control": "hyphal.cli.control",
    "proxy": "hyphal.cli.proxy",
    "validate": "hyphal.cli.validate",
    "apply": "hyphal.cli.resources",
    "delete": "hyphal.cli.resources",
    "get": "hyphal.cli.resources",
    "token": "hyphal.cli.token",
    "up": "hyphal.cli.up",
    "down": "hyphal.cli.down",
    "status": "hyphal.cli.status",
    "proxy-config": "hyphal.cli.proxy_config",
    "logs": "hyphal.cli.logs",
    "version": "hyphal.cli.version",
    "stat": "hyphal.cli.stat",
    "graph": "hyphal.cli.stat",
    "tap": "hyphal.cli.tap",
    "check": "hyphal.cli.check",
    "install": "hyphal.cli.install",
    "ca": "hyphal.cli.ca",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyphal", description="hyphal service mesh")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    seen: set[str] = set()
    for name, module_name in COMMANDS.items():
        if module_name in seen:
            continue
        if wanted is not None and COMMANDS[wanted] != module_name:
            # Only the chosen command's module is imported; others get a placeholder entry.
            sub.add_parser(name, add_help=False)
            continue
        seen.add(module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hyphal get ... | head`: the reader left; say nothing more, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
