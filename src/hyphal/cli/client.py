"""Locating the control plane's HTTP API and calling it (used by apply/delete/get and others).

Where the API is, first match wins:
  1. `--api URL`;
  2. the environment: `HYPHAL_API`;
  3. the local mesh's run directory: `./.hyphal/mesh.json` (written by `hyphal up`),
     `{"api": "http://127.0.0.1:PORT", "state_dir": "..."}`.
The admin token: `<--state-dir>/admin-token`, else `HYPHAL_ADMIN_TOKEN`, else
`<state_dir>/admin-token` with mesh.json's `state_dir` when the URL came from mesh.json, or
`HYPHAL_STATE_DIR` (then mesh.json's) when it came from `--api` or `HYPHAL_API`.
Only the standard library is used, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MESH_FILE = Path(".hyphal") / "mesh.json"
ADMIN_TOKEN_FILE = "admin-token"


class ClientError(Exception):
    """Something the user must fix before the CLI can talk to the control plane."""


class ApiUnreachable(ClientError):
    """The control plane did not answer at the address we found."""


class ApiError(ClientError):
    """The control plane answered with an error; `errors` holds its messages."""

    def __init__(self, status: int, errors: list[str]) -> None:
        self.status = status
        self.errors = errors
        super().__init__(f"HTTP {status}: " + "; ".join(errors))


@dataclass(frozen=True, slots=True)
class ApiTarget:
    url: str
    token: str | None
    source: str  # where the URL came from, for error messages


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", metavar="URL", help="control plane API, e.g. http://127.0.0.1:15014"
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="control plane state directory (for its admin-token)"
    )


def _read_token(state_dir: str | None) -> str | None:
    if not state_dir:
        return None
    path = Path(state_dir) / ADMIN_TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise ClientError(f"cannot read the admin token {path}: {exc.strerror}") from exc


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
        token = _read_token(str(sd) if sd else None)
    return ApiTarget(url=url.rstrip("/"), token=token, source=source)


class ApiClient:
    """Small JSON-over-HTTP client for `/api/v1/...`."""

    def __init__(self, target: ApiTarget, timeout: float = 15.0) -> None:
        self.target = target
        self.timeout = timeout

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v}
        url = self.target.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        return self._call(urllib.request.Request(url, method="GET"))

    def post(self, path: str, body: bytes, content_type: str = "application/yaml") -> Any:
        req = urllib.request.Request(self.target.url + path, data=body, method="POST")
        req.add_header("Content-Type", content_type)
        return self._call(req)

    def post_json(self, path: str, payload: Any) -> Any:
        return self.post(path, json.dumps(payload).encode(), "application/json")

    def _call(self, req: urllib.request.Request) -> Any:
        if self.target.token:
            req.add_header("Authorization", f"Bearer {self.target.token}")
        req.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _errors_of(exc.code, exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(
                f"control plane at {self.target.url} (from {self.target.source}) is not "
                f"reachable: {reason}. Is `hyphal control` (or `hyphal up`) running?"
            ) from None
        return json.loads(raw) if raw else None


def _errors_of(status: int, raw: bytes) -> list[str]:
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()
        return [text or f"HTTP {status}"]
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        errs = [str(e) for e in body["errors"]]
        if status == 401 and errs:
            errs.append(
                "set HYPHAL_ADMIN_TOKEN, or HYPHAL_STATE_DIR / --state-dir to the control "
                "plane's state directory"
            )
        return errs
    return [json.dumps(body)]
