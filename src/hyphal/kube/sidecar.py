"""The injected sidecar's entry point: render the bootstrap from the pod, then run the proxy.

`python -m hyphal.kube.sidecar --template T --out F -- hyphal proxy --bootstrap F` fills
${POD_NAME}, ${POD_NAMESPACE} and ${POD_IP} in the template (the webhook's annotation,
mounted by the downward API) from the environment, writes F and execs the command.
"""

from __future__ import annotations

import argparse
import os
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PLACEHOLDERS = ("POD_NAME", "POD_NAMESPACE", "POD_IP")


def render(template: str, env: Mapping[str, str]) -> str:
    """The template with the pod's placeholders filled; ValueError naming a missing one."""
    missing = [k for k in PLACEHOLDERS if f"${{{k}}}" in template and not env.get(k)]
    if missing:
        raise ValueError(f"environment variables {', '.join(missing)} are not set: the sidecar "
                         "container needs them from the downward API (see the injected spec)")
    return string.Template(template).safe_substitute({k: env[k] for k in PLACEHOLDERS
                                                      if k in env})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hyphal.kube.sidecar")
    p.add_argument("--template", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else list(args.command)
    try:
        text = render(args.template.read_text(), os.environ)
    except (OSError, ValueError) as exc:
        print(f"hyphal sidecar: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(text)
    if command:
        os.execvp(command[0], command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
