"""A small keep-alive HTTP/1.1 client that enters the mesh through a sidecar's outbound port.

Requests are sent in proxy form (`GET http://product:8080/path`), as an app with HTTP_PROXY
would send them, over one reused connection. Used by the demo and the e2e tests.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any, Self


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class MeshClient:
    """Proxy-form HTTP through 127.0.0.1:`proxy_port` (a sidecar's `outbound_http` listener)."""

    __slots__ = ("_conn", "_port", "_timeout")

    def __init__(self, proxy_port: int, timeout: float = 10.0) -> None:
        self._port = proxy_port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, url: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Response:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"content-type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        for attempt in (0, 1):
            conn = self._conn or http.client.HTTPConnection("127.0.0.1", self._port,
                                                            timeout=self._timeout)
            self._conn = conn
            try:
                conn.request(method, url, body=data, headers=hdrs)
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
                continue  # the proxy closed an idle keep-alive connection: retry once, fresh
            out = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
            if resp.will_close:
                self.close()
            return out
        raise AssertionError("unreachable")

    def get(self, url: str) -> Response:
        return self.request("GET", url)

    def post(self, url: str, body: Any = None) -> Response:
        return self.request("POST", url, body)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def xfcc_uri(header: str) -> str | None:
    """The caller's SPIFFE id from an x-forwarded-client-cert value (`...;URI=spiffe://...`)."""
    last = header.split(",")[-1]
    for part in last.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "uri":
            return value.strip().strip('"')
    return None
