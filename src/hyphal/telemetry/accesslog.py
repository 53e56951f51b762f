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

        The hot path's encoder: the fields that repeat from request to request (method and
        authority; protocol to upstream host; status and reason) are cached encoded, the
        rest is one format. Only enabled logs are called (the caller checks `enabled`)."""
        key = (method, authority, version, peer, identity, listener, route, cluster, upstream)
        runs = _RUNS.get(key)
        if runs is None:
            protocol = "HTTP/1.1" if version == b"1.1" else f"HTTP/{version.decode()}"
            runs = _runs(key, method.decode("latin-1"), authority, protocol, peer,
                         identity or "-", listener, route, cluster, upstream)
        line = _line(start_wall, request_id.decode("latin-1") or "-", path, runs,
                     _OUTCOMES.get((status, reason)) or _outcome(status, reason), bytes_in,
                     bytes_out, duration_ms, upstream_ms)
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


# Encoded runs of fields that repeat from request to request, by the values they encode:
# (method and authority, before the path; protocol to upstream host, after it) and (status
# and reason). Bounded: clients choose some of these values.
_RUNS: dict[tuple[object, ...], tuple[str, str]] = {}
_OUTCOMES: dict[tuple[int, str], str] = {}


def _runs(key: tuple[object, ...], method: str, authority: str, protocol: str, peer: str,
          identity: str, listener: str, route: str, cluster: str,
          upstream: str) -> tuple[str, str]:
    q = _quote
    if len(_RUNS) > 4096:
        _RUNS.clear()
    runs = _RUNS[key] = (
        f'"method":{q(method)},"authority":{q(authority)},',
        f'"protocol":{q(protocol)},"downstream_peer":{q(peer)},'
        f'"downstream_identity":{q(identity)},"listener":{q(listener)},'
        f'"route":{q(route)},"cluster":{q(cluster)},"upstream_host":{q(upstream)},')
    return runs


def _outcome(status: int, reason: str) -> str:
    if len(_OUTCOMES) > 1024:
        _OUTCOMES.clear()
    text = _OUTCOMES[(status, reason)] = f'"status":{status},"reason":{_quote(reason)},'
    return text


def _line(start_wall: float, request_id: str, path: str, runs: tuple[str, str], outcome: str,
          bytes_in: int, bytes_out: int, duration_ms: float, upstream_ms: float) -> str:
    """The line around the cached runs (`_runs`, `_outcome`); a negative `upstream_ms` is
    null. The timestamp's seconds are cached as in `iso_time`."""
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
        f'"request_id":{_quote(request_id)},{runs[0]}"path":{_quote(path)},{runs[1]}{outcome}'
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
    key = (method, authority, protocol, peer, identity, listener, route, cluster, upstream)
    runs = _RUNS.get(key) or _runs(key, method, authority, protocol, peer, identity, listener,
                                   route, cluster, upstream)
    return _line(start_wall, request_id, path, runs,
                 _OUTCOMES.get((status, reason)) or _outcome(status, reason), bytes_in,
                 bytes_out, duration_ms, -1.0 if upstream_ms is None else upstream_ms).encode()
