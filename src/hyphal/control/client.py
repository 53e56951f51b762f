"""Calling the control plane's HTTP API (`/api/v1/...`) with its admin token.

One client for everything that talks to the API: the CLI's apply/delete/get, and the local
runner minting bootstrap tokens and reading `/api/v1/status`. Only the standard library is
used, so the commands that import it start fast.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADMIN_TOKEN_FILE = "admin-token"
"""The admin token's file name inside the control plane's state directory."""

TOKEN_HINT = (
    "set HYPHAL_ADMIN_TOKEN, or HYPHAL_STATE_DIR / --state-dir to the control plane's state "
    "directory"
)

# Loopback callers (the local runner) must not be sent through HTTP_PROXY: in a mesh that
# variable may point at a sidecar.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def read_admin_token(state_dir: str | Path | None) -> str | None:
    """`<state_dir>/admin-token`, or None when there is no state dir or no such file."""
    if not state_dir:
        return None
    path = Path(state_dir) / ADMIN_TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise ClientError(f"cannot read the admin token {path}: {exc.strerror}") from exc


class ApiClient:
    """Small JSON-over-HTTP client for `/api/v1/...`.

    `use_env_proxy=False` ignores HTTP_PROXY/HTTPS_PROXY (for loopback callers);
    `unauthorized_hint` is appended to a 401's errors to say where a token comes from.
    """

    def __init__(
        self,
        target: ApiTarget,
        timeout: float = 15.0,
        *,
        use_env_proxy: bool = True,
        unauthorized_hint: str | None = TOKEN_HINT,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._open = urllib.request.urlopen if use_env_proxy else _NO_PROXY.open
        self._hint = unauthorized_hint

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
            with self._open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _errors_of(exc.code, exc.read(), self._hint)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(
                f"control plane at {self.target.url} (from {self.target.source}) is not "
                f"reachable: {reason}. Is `hyphal control` (or `hyphal up`) running?"
            ) from None
        return json.loads(raw) if raw else None


def _errors_of(status: int, raw: bytes, hint: str | None) -> list[str]:
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()
        return [text or f"HTTP {status}"]
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        errs = [str(e) for e in body["errors"]]
        if status == 401 and errs and hint:
            errs.append(hint)
        return errs
    return [json.dumps(body)]
