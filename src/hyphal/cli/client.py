"""Locating the control plane's HTTP API and calling it (used by apply/delete/get and others).

Where the API is, first match wins:
  1. `--api URL`;
  2. the environment: `HYPHAL_API`;
  3. the local mesh's run directory: `./.hyphal/mesh.json` (written by `hyphal up`),
     `{"api": "http://127.0.0.1:PORT", "state_dir": "..."}`.
The admin token: `<--state-dir>/admin-token`, else `HYPHAL_ADMIN_TOKEN`, else
`<state_dir>/admin-token` with mesh.json's `state_dir` when the URL came from mesh.json, or
`HYPHAL_STATE_DIR` (then mesh.json's) when it came from `--api` or `HYPHAL_API`.
The client itself is `hyphal.control.client` (re-exported here); only the standard library is
used, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyphal.control.client import ADMIN_TOKEN_FILE as ADMIN_TOKEN_FILE
from hyphal.control.client import ApiClient as ApiClient
from hyphal.control.client import ApiError as ApiError
from hyphal.control.client import ApiTarget as ApiTarget
from hyphal.control.client import ApiUnreachable as ApiUnreachable
from hyphal.control.client import ClientError as ClientError
from hyphal.control.client import read_admin_token

MESH_FILE = Path(".hyphal") / "mesh.json"


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", metavar="URL", help="control plane API, e.g. http://127.0.0.1:15014"
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="control plane state directory (for its admin-token)"
    )


def locate(
    api: str | None = None,
    state_dir: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ApiTarget:
    """Find the API URL and admin token, or raise ClientError saying how to point at one."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    mesh: dict[str, Any] = {}
    mesh_path = cwd / MESH_FILE
    if mesh_path.is_file():
        try:
            loaded = json.loads(mesh_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ClientError(f"{mesh_path}: not readable JSON ({exc})") from exc
        if isinstance(loaded, dict):
            mesh = loaded
    if api:
        url, source = api, "--api"
    elif env.get("HYPHAL_API"):
        url, source = env["HYPHAL_API"], "HYPHAL_API"
    elif mesh.get("api"):
        url, source = str(mesh["api"]), str(mesh_path)
    else:
        raise ClientError(
            "no control plane found: pass --api URL, set HYPHAL_API, or run this in the "
            f"directory where `hyphal up` was started (it writes {MESH_FILE})"
        )
    token = None if state_dir else (env.get("HYPHAL_ADMIN_TOKEN") or None)
    if token is None:
        # A URL from mesh.json goes with mesh.json's state dir, not with a stray environment.
        sd: Any
        if state_dir:
            sd = state_dir
        elif source == str(mesh_path):
            sd = mesh.get("state_dir")
        else:
            sd = env.get("HYPHAL_STATE_DIR") or mesh.get("state_dir")
        token = read_admin_token(str(sd) if sd else None)
    return ApiTarget(url=url.rstrip("/"), token=token, source=source)
