"""Small blocking HTTP helpers for talking to local admin and API ports (never through a proxy)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

# An opener with no proxy handler: HTTP_PROXY in our own environment must not apply here.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HttpError(Exception):
    """A local endpoint answered with an error status or could not be reached."""


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise HttpError(f"{method} {url}: {exc}") from exc


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> Any:
    status, body = request(url, headers=headers, timeout=timeout)
    if status != 200:
        raise HttpError(f"GET {url}: HTTP {status}: {body[:200].decode(errors='replace')}")
    return json.loads(body)


def is_ready(url: str, timeout: float = 1.0) -> bool:
    try:
        return request(url, timeout=timeout)[0] == 200
    except HttpError:
        return False
