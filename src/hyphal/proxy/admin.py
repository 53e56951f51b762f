"""The sidecar's admin HTTP listener on 127.0.0.1: readiness, config dump, stats, quit.

Not on the request path: a small asyncio Protocol with httptools, one request per connection
(`Connection: close`). Endpoints:

- `GET /ready`            200 once a config is applied and a certificate is held, else 503
- `GET /healthz`          200 while the process runs
- `GET /config_dump`      JSON: xDS versions and ACK/NACK state, compiled config, certificate
- `GET /stats/prometheus` the data plane's counters (Prometheus text format)
- `POST /quitquitquit`    drain, then exit
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httptools

from hyphal.proxy.certs import CertInfo
from hyphal.proxy.compile.types import KIND
from hyphal.proxy.xds_client import XdsStatus

__all__ = ["AdminServer", "AdminSources", "config_dump", "to_jsonable"]

log = logging.getLogger("hyphal.proxy.admin")


@dataclass(frozen=True, slots=True)
class AdminSources:
    """Where the admin endpoints read from (callables, so the admin holds no state)."""

    ready: Callable[[], tuple[bool, str]]
    config_dump: Callable[[], dict[str, Any]]
    stats: Callable[[], str]
    quit: Callable[[], None]


def to_jsonable(value: object) -> Any:
    """Runtime tables as plain JSON: dataclasses by field (hidden `repr=False` caches
    skipped), enums by value, regexes by pattern, sets sorted, bytes as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def config_dump(
    status: XdsStatus, config: object | None, cert: CertInfo | None, trust_bundle_roots: int = 0
) -> dict[str, Any]:
    """The `/config_dump` document."""
    xds = {
        KIND.get(t.type_url, t.type_url): {
            "type_url": t.type_url,
            "version": t.version,
            "nonce": t.nonce,
            "state": t.state,
            "last_nack": t.last_nack,
            "subscribed": list(t.names),
            "resources": t.count,
        }
        for t in status.types
    }
    cfg = to_jsonable(config) if config is not None else None
    return {
        "xds": {
            "connected": status.connected,
            "applied_configs": status.applied_count,
            "last_applied_at": status.last_applied_at,
            "waiting_for": list(status.warming),
            "types": xds,
        },
        "config": cfg,
        "certificate": to_jsonable(cert) if cert is not None else None,
        "trust_bundle_roots": trust_bundle_roots,
    }


class _AdminProtocol(asyncio.Protocol):
    def __init__(self, sources: AdminSources) -> None:
        self._sources = sources
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they quack the same.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b"bad request\n", "text/plain")

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode()
        path = httptools.parse_url(self._url).path.decode()
        try:
            self._dispatch(method, path)
        except Exception:  # the admin must answer even when a source fails
            log.exception("admin %s %s failed", method, path)
            self._send(500, b"internal error; see the sidecar log\n", "text/plain")

    def _dispatch(self, method: str, path: str) -> None:
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/ready":
            ok, why = self._sources.ready()
            self._send(
                200 if ok else 503,
                (why or ("ready" if ok else "not ready")).encode() + b"\n",
                "text/plain",
            )
        elif path == "/config_dump":
            body = json.dumps(self._sources.config_dump(), indent=1, sort_keys=True).encode()
            self._send(200, body + b"\n", "application/json")
        elif path in ("/stats/prometheus", "/stats", "/metrics"):
            self._send(200, self._sources.stats().encode(), "text/plain; version=0.0.4")
        elif path == "/quitquitquit":
            if method != "POST":
                self._send(405, b"use POST\n", "text/plain")
                return
            self._send(200, b"draining, then exiting\n", "text/plain")
            asyncio.get_running_loop().call_soon(self._sources.quit)
        else:
            self._send(
                404,
                b"unknown admin path; try /ready /healthz /config_dump "
                b"/stats/prometheus POST /quitquitquit\n",
                "text/plain",
            )

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self._done = True
        if self._transport is None or self._transport.is_closing():
            return
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }.get(status, "")
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self._transport.write(head + body)
        self._transport.close()


class AdminServer:
    """Listens on 127.0.0.1:port (0 = any free port; `port` is the bound one after `start`)."""

    def __init__(self, sources: AdminSources, port: int = 0, host: str = "127.0.0.1") -> None:
        self._sources = sources
        self._host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _AdminProtocol(self._sources), self._host, self.port
            )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"admin port {self._host}:{self.port} is not available: {exc.strerror}; "
                "pick another admin_port in the bootstrap",
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("admin listening on %s:%d", self._host, self.port)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
