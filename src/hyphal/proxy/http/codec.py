"""Sans-I/O HTTP/1.1 readers over httptools: bytes in, frozen events out, limits enforced.

Theory of operation: the server feeds every received chunk to `RequestReader.feed` and acts
on the returned events in order (`RequestHead`, `Body`*, `MessageEnd`, repeated for pipelined
requests; `Upgrade` hands the remaining bytes to a tunnel; `ParseError` is terminal: answer
its status and close). `ResponseReader` does the same for an upstream's responses. llhttp
(inside httptools 0.9) already refuses the smuggling shapes (CL+TE, duplicate CL, a non-chunked
final Transfer-Encoding, bad chunk sizes, obs-fold, bare LF, invalid token chars); this layer
adds size limits, version checks and Host rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httptools

from hyphal.proxy.http.headers import Headers


@dataclass(frozen=True, slots=True)
class Limits:
    max_uri: int = 8192
    max_header_bytes: int = 32768
    max_headers: int = 100


@dataclass(slots=True)  # not frozen: built per request, and frozen init costs 3x; never mutated
class RequestHead:
    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    keep_alive: bool
    chunked: bool
    content_length: int | None
    upgrade: bool
    expect_continue: bool
    host: bytes | None
    # The Connection header's value(s) when present (its tokens name more hop-by-hop
    # headers); None lets the head builder skip looking for them.
    connection: bytes | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)  # not frozen, as RequestHead; never mutated
class ResponseHead:
    status: int
    reason: bytes
    version: bytes
    headers: Headers
    chunked: bool
    content_length: int | None
    connection: bytes | None = None  # as RequestHead.connection


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd:
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class Upgrade:
    rest: bytes


@dataclass(frozen=True, slots=True)
class ParseError:
    status: int
    detail: str


Event = RequestHead | ResponseHead | Body | MessageEnd | Upgrade | ParseError

# Frozen, so one instance of each serves every message.
END_KEEP_ALIVE = MessageEnd(True)
END_CLOSE = MessageEnd(False)
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}


# Lengths of content-length, transfer-encoding, host, connection, expect.
_LOOK_AT = frozenset({14, 17, 4, 10, 6})


class _Limit(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Reader:
    __slots__ = (
        "_chunked",
        "_connection",
        "_content_length",
        "_events",
        "_expect",
        "_failed",
        "_headers",
        "_host",
        "_hosts",
        "_parser",
        "_url",
        "limits",
    )

    _parser: Any

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._events: list[Event] = []
        self._failed = False
        self._reset_message()

    def _reset_message(self) -> None:
        self._headers: Headers = []
        self._chunked = False
        self._content_length: int | None = None
        self._url = b""
        self._connection: bytes | None = None
        self._host: bytes | None = None
        self._hosts = 0
        self._expect: bytes | None = None

    # httptools callbacks (no on_message_begin: the state is reset right after each head,
    # which saves a callback per message) ---------------------------------------------
    def _check_limits(self) -> None:
        """Header count and size limits, checked once per head (in `on_headers_complete`)
        and after every chunk of an unfinished head (`feed`), not per header."""
        headers = self._headers
        limits = self.limits
        if len(headers) > limits.max_headers:
            raise _Limit(431, "too many request headers")
        size = 4 * len(headers)
        for name, value in headers:
            size += len(name) + len(value)
        if size > limits.max_header_bytes:
            raise _Limit(431, "request headers exceed the size limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only a few headers need a look; their lengths are distinct enough to gate on.
        size = len(name)
        if size in _LOOK_AT:
            lower = name.lower()
            if lower == b"transfer-encoding":
                # llhttp already insists that chunked is last and alone with CL.
                self._chunked = value.strip().lower().endswith(b"chunked")
            elif lower == b"content-length":
                self._content_length = int(value)
            elif lower == b"host":
                self._host = value
                self._hosts += 1
            elif lower == b"connection":
                self._connection = (value if self._connection is None
                                    else self._connection + b"," + value)
            elif lower == b"expect":
                self._expect = value
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._events.append(Body(bytes(body)))

    def feed(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        try:
            self._parser.feed_data(data)
            if self._headers:  # a head still in progress after this chunk
                self._check_limits()
        except _Limit as exc:
            self._failed = True
            self._events.append(ParseError(exc.status, exc.detail))
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0])
            self._events.append(Upgrade(bytes(data[offset:])))
            self._failed = True
        except httptools.HttpParserCallbackError as exc:
            self._failed = True
            cause = exc.__context__
            if isinstance(cause, _Limit):
                self._events.append(ParseError(cause.status, cause.detail))
            else:
                self._events.append(ParseError(400, f"malformed message: {cause or exc}"))
        except httptools.HttpParserError as exc:
            self._failed = True
            self._events.append(ParseError(400, f"malformed message: {exc}"))
        events = self._events
        self._events = []
        return events


class RequestReader(_Reader):
    """Parses requests from a downstream connection."""

    __slots__ = ()

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits or Limits())
        self._parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_uri:
            raise _Limit(414, "request URI exceeds the size limit")

    def on_headers_complete(self) -> None:
        self._check_limits()
        parser = self._parser
        text = parser.get_http_version()
        version = _VERSIONS.get(text)
        if version is None:
            raise _Limit(505 if text.startswith("2") else 400,
                         f"HTTP/{text} is not supported; use HTTP/1.1")
        if self._hosts > 1:
            raise _Limit(400, "more than one Host header")
        host = self._host
        expect = self._expect is not None
        if expect and self._expect.lower() != b"100-continue":  # type: ignore[union-attr]
            raise _Limit(417, "unsupported Expect header; only 100-continue is understood")
        if host is None and version == b"1.1":
            raise _Limit(400, "HTTP/1.1 request without a Host header")
        self._events.append(RequestHead(
            parser.get_method(), self._url, version, self._headers,
            parser.should_keep_alive(), self._chunked, self._content_length,
            parser.should_upgrade(), expect, host, self._connection,
        ))
        self._reset_message()  # the head owns the header list; empty = no head pending

    def on_message_complete(self) -> None:
        # should_keep_alive() is only right inside this callback.
        self._events.append(END_KEEP_ALIVE if self._parser.should_keep_alive() else END_CLOSE)


class ResponseReader(_Reader):
    """Parses responses from an upstream connection. Call `expect_head()` before a response
    to a HEAD request (its Content-Length describes no body)."""

    __slots__ = ("_head_request", "_status_reason", "stale")

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits or Limits(max_header_bytes=65536, max_headers=200))
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = False
        self._status_reason = b""
        # Set when the parser had to be abandoned mid-message (HEAD): the connection
        # cannot be reused.
        self.stale = False

    def expect_head(self) -> None:
        self._head_request = True

    def on_status(self, status: bytes) -> None:
        self._status_reason += status

    def _reset_message(self) -> None:
        super()._reset_message()
        self._status_reason = b""

    def on_headers_complete(self) -> None:
        self._check_limits()
        parser = self._parser
        status = parser.get_status_code()
        text = parser.get_http_version()
        self._events.append(ResponseHead(
            status, self._status_reason or b"-", _VERSIONS.get(text) or text.encode(),
            self._headers, self._chunked, self._content_length, self._connection,
        ))
        self._reset_message()
        if self._head_request and status >= 200:
            self._head_request = False
            self._events.append(END_CLOSE)
            self.stale = True
            raise _Limit(0, "head response done")

    def on_message_complete(self) -> None:
        self._events.append(END_KEEP_ALIVE if self._parser.should_keep_alive() else END_CLOSE)

    def feed(self, data: bytes) -> list[Event]:
        events = super().feed(data)
        if self.stale and events and isinstance(events[-1], ParseError) and events[-1].status == 0:
            events.pop()
        return events
