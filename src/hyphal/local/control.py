"""Talking to the local control plane: readiness, its admin token, minting bootstrap tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hyphal.local.probe import HttpError, request


class ControlPlaneError(Exception):
    """The control plane refused or could not serve what the runner asked of it."""


def admin_token(state_dir: Path, timeout: float = 10.0) -> str:
    """`<state-dir>/admin-token`, waiting for the control plane to create it on first start."""
    path = state_dir / "admin-token"
    deadline = time.monotonic() + timeout
    while True:
        try:
            token = path.read_text().strip()
            if token:
                return token
        except FileNotFoundError:
            pass
        if time.monotonic() >= deadline:
            raise ControlPlaneError(
                f"{path} did not appear within {timeout:.0f}s: is the control plane running?"
                " See its log in the run directory's logs/control.log"
            )
        time.sleep(0.05)


def mint_token(
    api: str, token: str, namespace: str, service_account: str, ttl_seconds: float | None = None
) -> str:
    """A bootstrap token (JWT) for ns/sa from `POST /api/v1/tokens`."""
    payload: dict[str, object] = {"namespace": namespace, "service_account": service_account}
    if ttl_seconds is not None:
        payload["ttl_seconds"] = ttl_seconds
    try:
        status, body = request(
            f"{api}/api/v1/tokens",
            method="POST",
            body=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=5.0,
        )
    except HttpError as exc:
        raise ControlPlaneError(
            f"could not mint a bootstrap token for {namespace}/{service_account}: {exc}"
        ) from exc
    if status != 200:
        raise ControlPlaneError(
            f"the control plane refused a bootstrap token for {namespace}/{service_account}: "
            f"HTTP {status}: {body[:300].decode(errors='replace')}"
        )
    value = json.loads(body).get("token")
    if not isinstance(value, str) or not value:
        raise ControlPlaneError(
            f"POST {api}/api/v1/tokens answered without a token: {body[:200]!r}"
        )
    return value
