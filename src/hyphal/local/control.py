"""Talking to the local control plane: readiness, its admin token, minting bootstrap tokens."""

from __future__ import annotations

import time
from pathlib import Path

from hyphal.control.client import ADMIN_TOKEN_FILE, ApiClient, ApiError, ApiTarget, ClientError


class ControlPlaneError(Exception):
    """The control plane refused or could not serve what the runner asked of it."""


def admin_token(state_dir: Path, timeout: float = 10.0) -> str:
    """`<state-dir>/admin-token`, waiting for the control plane to create it on first start."""
    path = state_dir / ADMIN_TOKEN_FILE
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
    who = f"{namespace}/{service_account}"
    try:
        reply = local_api(api, token, timeout=5.0).post_json("/api/v1/tokens", payload)
    except ApiError as exc:
        raise ControlPlaneError(
            f"the control plane refused a bootstrap token for {who}: {exc}"
        ) from exc
    except ClientError as exc:
        raise ControlPlaneError(f"could not mint a bootstrap token for {who}: {exc}") from exc
    value = reply.get("token") if isinstance(reply, dict) else None
    if not isinstance(value, str) or not value:
        raise ControlPlaneError(
            f"POST {api}/api/v1/tokens answered without a token: {str(reply)[:200]}"
        )
    return value


def local_api(api: str, token: str | None, timeout: float) -> ApiClient:
    """The API client for the control plane this run started (loopback: no HTTP_PROXY)."""
    return ApiClient(
        ApiTarget(url=api, token=token, source="the run directory"),
        timeout=timeout,
        use_env_proxy=False,
        unauthorized_hint=None,
    )
