"""Access log: one JSON line per request, buffered, flushed cheaply (size or timer)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from typing import IO, Any

FIELDS: tuple[str, ...] = (
    "start_time", "request_id", "method", "authority", "path", "protocol",
    "downstream_peer", "downstream_identity", "listener", "route", "cluster",
    "upstream_host", "status", "reason", "bytes_received", "bytes_sent", "duration_ms",
    "upstream_service_time_ms",
)


class AccessLog:
    """`path` "-" is stdout, None disables logging. Lines are flushed when 64 KiB are buffered,
    every `flush_interval_s` while a loop runs, and on `close`.

    Lines are buffered as text and encoded once per flush (every line is ASCII: strings go
    through the JSON encoder's ASCII escaping), so a request costs no syscall and no encode."""

    __slots__ = ("_buffer", "_handle", "_interval", "_own", "_size", "_timer", "enabled")

    def __init__(self, path: str | None = "-", flush_interval_s: float = 1.0) -> None:
        self._own = False
        self._handle: IO[bytes] | None
        if path is None:
            self._handle = None
        elif path == "-":
            self._handle = sys.stdout.buffer
        else:
            self._handle = open(path, "ab")  # noqa: SIM115 - closed in close()
            self._own = True
        self.enabled = self._handle is not None
        self._buffer: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._interval = flush_interval_s

    def log(self, entry: dict[str, Any]) -> None:
        if self._handle is None:
            return
        path = entry.get("path")
        if path.__class__ is str and "eyJ" in path:
            entry = {**entry, "path": redact(path)}
        self._add(_encode(entry))

    def http(self, start_wall: float, request_id: bytes, method: bytes, authority: str,
             path: str, version: bytes, peer: str, identity: str | None, listener: str,
             route: str, cluster: str, upstream: str, status: int, reason: str,
             bytes_in: int, bytes_out: int, duration_ms: float, upstream_ms: float) -> None:
        """One HTTP/1.1 exchange, as `http_line` encodes it, from the exchange's raw values
        (`upstream_ms` < 0: no upstream response; `identity` None: a plaintext peer).

        The hot path's encoder: the run of fields that repeat from request to request
        (protocol to upstream host) and the method are cached encoded; the rest is one
        format. Only enabled logs are called (the caller checks `enabled`)."""
        key = (version, peer, identity, listener, route, cluster, upstream)
        middle = _MIDDLE.get(key)
        if middle is None:
            protocol = "HTTP/1.1" if version == b"1.1" else f"HTTP/{version.decode()}"
            middle = _middle(key, protocol, peer, identity or "-", listener, route, cluster,
                             upstream)
        line = _line(start_wall, request_id.decode("latin-1") or "-",
                     _METHODS.get(method) or _method(method), authority, path, middle,
                     status, reason, bytes_in, bytes_out, duration_ms, upstream_ms)
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= 65536:
            self.flush()
        elif self._timer is None:
            self._arm()

    def _add(self, line: str) -> None:
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= 65536:
            self.flush()
        elif self._timer is None:
            self._arm()

    def _arm(self) -> None:
        """Flush within `flush_interval_s`; at once when no loop runs."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._timer = loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if self._handle is None or not self._buffer:
            return
        data = "".join(self._buffer).encode()
        self._buffer.clear()
        self._size = 0
        try:
            self._handle.write(data)
            self._handle.flush()
        except (OSError, ValueError):
            pass  # a full disk or closed stdout must not stop traffic

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self._own and self._handle is not None:
            self._handle.close()
        self._handle = None


_quote: Callable[[str], str] = getattr(json.encoder, "encode_basestring_ascii", json.dumps)


# A JWS compact serialization (every JWT: RequestAuthentication tokens, bootstrap tokens).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def redact(path: str) -> str:
    """`path` with every JWT in it (`?access_token=...`, any parameter or segment) replaced by
    `REDACTED`: access logs are read by more people than may hold the tokens."""
    return _JWT.sub("REDACTED", path) if "eyJ" in path else path


def _encode(entry: dict[str, Any]) -> str:
    """json.dumps(entry) for flat dicts of str/int/float/None, about 3x cheaper."""
    parts = []
    for key, value in entry.items():
        if value.__class__ is str:
            parts.append(f'"{key}":{_quote(value)}')
        elif value is None:
            parts.append(f'"{key}":null')
        elif value.__class__ is int or value.__class__ is float:
            parts.append(f'"{key}":{value!r}')
        else:
            parts.append(f'"{key}":{json.dumps(value)}')
    return "{" + ",".join(parts) + "}\n"


_second_cache: list[Any] = [-1, ""]
_MILLIS: tuple[str, ...] = tuple(f"{n:03d}" for n in range(1000))


def iso_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds; the seconds part is cached (one format per second)."""
    whole = int(epoch)
    if _second_cache[0] != whole:
        _second_cache[0] = whole
        _second_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    millis = int((epoch - whole) * 1000)
    return f"{_second_cache[1]}.{_MILLIS[millis] if 0 <= millis < 1000 else f'{millis:03d}'}Z"


# Encoded runs of repeating fields by (version or protocol, peer, identity, listener, route,
# cluster, upstream), and quoted methods: bounded (clients choose some of these values).
_MIDDLE: dict[tuple[object, ...], str] = {}
_METHODS: dict[bytes, str] = {}


def _middle(key: tuple[object, ...], protocol: str, peer: str, identity: str, listener: str,
            route: str, cluster: str, upstream: str) -> str:
    q = _quote
    if len(_MIDDLE) > 4096:
        _MIDDLE.clear()
    middle = _MIDDLE[key] = (
        f'"protocol":{q(protocol)},"downstream_peer":{q(peer)},'
        f'"downstream_identity":{q(identity)},"listener":{q(listener)},'
        f'"route":{q(route)},"cluster":{q(cluster)},"upstream_host":{q(upstream)},')
    return middle


def _method(method: bytes) -> str:
    if len(_METHODS) > 256:
        _METHODS.clear()
    quoted = _METHODS[method] = _quote(method.decode("latin-1"))
    return quoted


def _line(start_wall: float, request_id: str, method: str, authority: str, path: str,
          middle: str, status: int, reason: str, bytes_in: int, bytes_out: int,
          duration_ms: float, upstream_ms: float) -> str:
    """The line around the cached parts: `method` and `middle` come encoded; a negative
    `upstream_ms` is null. The timestamp's seconds are cached as in `iso_time`."""
    q = _quote
    if "eyJ" in path:
        path = redact(path)
    whole = int(start_wall)
    if _second_cache[0] != whole:
        _second_cache[0] = whole
        _second_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    millis = int((start_wall - whole) * 1000)
    return (
        f'{{"start_time":"{_second_cache[1]}.'
        f'{_MILLIS[millis] if 0 <= millis < 1000 else f"{millis:03d}"}Z",'
        f'"request_id":{q(request_id)},"method":{method},"authority":{q(authority)},'
        f'"path":{q(path)},{middle}"status":{status},"reason":{q(reason)},'
        f'"bytes_received":{bytes_in},"bytes_sent":{bytes_out},"duration_ms":{duration_ms:.3f},'
        f'"upstream_service_time_ms":{"null" if upstream_ms < 0 else format(upstream_ms, ".3f")}'
        '}\n')


def http_line(start_wall: float, request_id: str, method: str, authority: str, path: str,
              protocol: str, peer: str, identity: str, listener: str, route: str,
              cluster: str, upstream: str, status: int, reason: str, bytes_in: int,
              bytes_out: int, duration_ms: float, upstream_ms: float | None) -> bytes:
    """One HTTP access-log line with the `FIELDS` keys in order: the same JSON as `log`
    builds from a dict, in one format call, from decoded values (`AccessLog.http` is the
    request path's form of it)."""
    key = (protocol, peer, identity, listener, route, cluster, upstream)
    middle = _MIDDLE.get(key) or _middle(key, protocol, peer, identity, listener, route,
                                        cluster, upstream)
    return _line(start_wall, request_id, _quote(method), authority, path, middle, status,
                 reason, bytes_in, bytes_out, duration_ms,
                 -1.0 if upstream_ms is None else upstream_ms).encode()
