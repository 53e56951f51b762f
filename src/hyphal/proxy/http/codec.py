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

from hyphal.proxy.http.headers import HOP_BY_HOP, REQUEST_REPLACED, Headers


@dataclass(frozen=True, slots=True)
class Limits:
    max_uri: int = 8192
    max_header_bytes: int = 32768
    max_headers: int = 100


# A head's header lines exactly as received, for the hop's rebuild to copy instead of
# re-serialising every header (the hot path: most heads arrive whole in one read). A plain
# tuple (cheapest to build, once per head): (block, headers, drop, request_id, xff, cl_at).
# `block` is the header lines, each ending in CRLF (no start line, no final empty line);
# llhttp validated every line, and they are `headers`, one for one, in order. It describes a
# head only while `head.headers is headers` (a filter or the deadline rewrite that replaces
# the list leaves it stale). `drop` lists, ascending, the indices of the headers the rebuild
# removes: for a request the names in REQUEST_REPLACED except x-request-id (kept), for a
# response the hop-by-hop ones. `request_id` and `xff` are a request's last x-request-id and
# x-forwarded-for values (None: none); `cl_at` is the index of a response's Content-Length
# (-1: none).
RawLines = tuple[bytes, Headers, list[int], bytes | None, bytes | None, int]


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
    raw: RawLines | None = None  # the header lines as received, when the head came whole
    # Whether `headers` may carry what caller_budget reads (x-hyphal-deadline, grpc-timeout,
    # a gRPC content-type): False only when the reader saw none; whoever replaces the
    # headers with others must set it back to True (unknown).
    budget: bool = True

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
    raw: RawLines | None = None  # as RequestHead.raw


@dataclass(slots=True)  # not frozen: one per body chunk, and frozen init costs 2x; never mutated
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
_RAW_VERSIONS = {v: v for v in _VERSIONS.values()}


# What on_header does with a header (by lower-case name; _PLAIN: nothing).
(_HOST, _LENGTH, _CHUNKED, _CONNECTION, _EXPECT, _XFF, _REQUEST_ID, _DROP, _PLAIN, _BUDGET,
 _CONTENT_TYPE) = range(11)
_REQUEST_CODES = dict.fromkeys(REQUEST_REPLACED, _DROP) | {
    b"host": _HOST, b"content-length": _LENGTH, b"transfer-encoding": _CHUNKED,
    b"connection": _CONNECTION, b"expect": _EXPECT, b"x-forwarded-for": _XFF,
    b"x-request-id": _REQUEST_ID,
    # What upstream.policy.caller_budget reads (RequestHead.budget says whether to look).
    b"x-hyphal-deadline": _BUDGET, b"grpc-timeout": _BUDGET, b"content-type": _CONTENT_TYPE}
_RESPONSE_CODES = dict.fromkeys(HOP_BY_HOP, _DROP) | {
    b"content-length": _LENGTH, b"transfer-encoding": _CHUNKED, b"connection": _CONNECTION}
# Only names of these lengths can be one of the above (the rest skip the lower-casing).
_REQUEST_LENGTHS = frozenset(len(name) for name in _REQUEST_CODES)
_RESPONSE_LENGTHS = frozenset(len(name) for name in _RESPONSE_CODES)
# Common names in common spellings, looked up as they come (one dict lookup, no lower-casing):
# the names above, and others that are _PLAIN. Any other spelling takes the general way.
_COMMON = (
    b"accept", b"accept-encoding", b"accept-language", b"accept-ranges", b"age",
    b"authorization", b"baggage", b"cache-control", b"content-encoding", b"content-type",
    b"cookie", b"date", b"etag", b"expires", b"grpc-timeout", b"if-modified-since",
    b"if-none-match", b"last-modified", b"location", b"origin", b"pragma", b"referer",
    b"server", b"set-cookie", b"traceparent", b"tracestate", b"user-agent", b"vary",
    b"x-b3-parentspanid", b"x-b3-sampled", b"x-b3-spanid", b"x-b3-traceid",
    b"x-hyphal-deadline")


def _spellings(codes: dict[bytes, int]) -> dict[bytes, int]:
    table = {}
    for lower in _COMMON:
        if lower not in codes:
            table[lower] = table[lower.title()] = _PLAIN
    for lower, code in codes.items():
        table[lower] = table[lower.title()] = table[lower.upper()] = code
    return table


_REQUEST_SPELLED = _spellings(_REQUEST_CODES)
_RESPONSE_SPELLED = _spellings(_RESPONSE_CODES)


class _Limit(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Reader:
    __slots__ = (
        "_between",
        "_budget",
        "_chunked",
        "_cl_at",
        "_connection",
        "_content_length",
        "_drop",
        "_events",
        "_expect",
        "_failed",
        "_headers",
        "_host",
        "_hosts",
        "_parser",
        "_raw_src",
        "_request_id",
        "_status_reason",
        "_url",
        "_xff",
        "limits",
    )

    _parser: Any

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._events: list[Event] = []
        self._failed = False
        # No callback yet since the last message ended (so a next head has at most its
        # method, or its status line up to the reason, before the next chunk: see _raw_lines).
        self._between = True
        self._raw_src: bytes | None = None  # what `feed` got, while its first head may start it
        self._reset_message()

    def _reset_message(self) -> None:
        self._headers: Headers = []
        self._drop: list[int] = []
        self._chunked = False
        self._content_length: int | None = None
        self._url = b""
        self._connection: bytes | None = None
        self._host: bytes | None = None
        self._hosts = 0
        self._expect: bytes | None = None
        self._request_id: bytes | None = None
        self._xff: bytes | None = None
        self._cl_at = -1
        self._status_reason = b""  # responses only
        self._budget = False  # requests only

    # httptools callbacks (no on_message_begin: the state is reset right after each head,
    # which saves a callback per message) ---------------------------------------------
    def _check_limits(self) -> None:
        """Header count and size limits, checked once per head (in `on_headers_complete`)
        and after every chunk of an unfinished head (`feed`), not per header. A head's raw
        header lines bound the size from above (each line is at least name, colon, value
        and CRLF): within the limit, `on_headers_complete` need not call this."""
        headers = self._headers
        limits = self.limits
        if len(headers) > limits.max_headers:
            raise _Limit(431, "too many request headers")
        size = 4 * len(headers)
        for name, value in headers:
            size += len(name) + len(value)
        if size > limits.max_header_bytes:
            raise _Limit(431, "request headers exceed the size limit")

    def on_body(self, body: bytes) -> None:
        self._events.append(Body(body))  # httptools hands over a bytes copy

    def feed(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        # Kept while a head that completes in this chunk may have started at its first byte.
        self._raw_src = data if self._between else None
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
                if cause.status:  # 0: a response to HEAD ended with its head (ResponseReader)
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
        self._between = False
        self._url += url
        if len(self._url) > self.limits.max_uri:
            raise _Limit(414, "request URI exceeds the size limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Hot path (once per header): common spellings in one lookup, others by length.
        code = _REQUEST_SPELLED.get(name)
        if code is None:
            code = (_REQUEST_CODES.get(name.lower(), _PLAIN) if len(name) in _REQUEST_LENGTHS
                    else _PLAIN)
        if code != _PLAIN:
            if code == _HOST:
                self._host = value
                self._hosts += 1
            elif code == _REQUEST_ID:
                self._request_id = value
                self._headers.append((name, value))
                return  # kept as it came
            elif code >= _BUDGET:
                if code == _BUDGET:  # the deadline headers: rewritten per try, not forwarded
                    self._budget = True
                    self._drop.append(len(self._headers))
                elif value.startswith(b"application/grpc"):
                    self._budget = True  # content-type: kept as it came
                self._headers.append((name, value))
                return
            elif code == _LENGTH:
                self._content_length = int(value)
            elif code == _CHUNKED:
                # llhttp already insists that chunked is last and alone with CL.
                self._chunked = value.strip().lower().endswith(b"chunked")
            elif code == _CONNECTION:
                self._connection = (value if self._connection is None
                                    else self._connection + b"," + value)
            elif code == _XFF:
                self._xff = value
            elif code == _EXPECT:
                self._expect = value
            self._drop.append(len(self._headers))
        self._headers.append((name, value))

    def _raw_lines(self, src: bytes, method: bytes) -> tuple[RawLines | None, bytes | None]:
        """The head's header lines as fed in `src` and its version, when the head started
        at its first byte; (None, None) otherwise (the caller falls back to the list).

        `src` was fed with no callback since the last message (on_url fires for any part
        of a target, at the latest when a chunk ends), so at most a part of the method came
        before it, or an empty line. It starts this head iff it starts with the method and
        a space: after a partial method it would be another method, after a whole one a
        method where the target should be, which llhttp refuses. The first CRLF then ends
        the request line, whose last three bytes are the version."""
        end = src.find(b"\r\n")
        stop = src.find(b"\r\n\r\n", end)
        if stop < 0 or not src.startswith(method) or src[len(method)] != 32:  # b" "
            return None, None
        return ((src[end + 2:stop + 2], self._headers, self._drop, self._request_id, self._xff,
                 -1), _RAW_VERSIONS.get(src[end - 3:end]))

    def on_headers_complete(self) -> None:
        parser = self._parser
        method = parser.get_method()
        src = self._raw_src
        raw = version = None
        if src is not None:
            self._raw_src = None
            raw, version = self._raw_lines(src, method)
        headers = self._headers
        limits = self.limits
        if (raw is None or len(headers) > limits.max_headers
                or len(raw[0]) + len(headers) > limits.max_header_bytes):
            self._check_limits()
        if version is None:
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
            method, self._url, version, self._headers,
            parser.should_keep_alive(), self._chunked, self._content_length,
            parser.should_upgrade(), expect, host, self._connection, raw, self._budget,
        ))
        self._between = False
        self._reset_message()  # the head owns the header list; empty = no head pending

    def on_message_complete(self) -> None:
        # should_keep_alive() is only right inside this callback.
        self._between = True
        self._events.append(END_KEEP_ALIVE if self._parser.should_keep_alive() else END_CLOSE)


class ResponseReader(_Reader):
    """Parses responses from an upstream connection. Call `expect_head()` before a response
    to a HEAD request (its Content-Length describes no body)."""

    __slots__ = ("_head_request", "stale")

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits or Limits(max_header_bytes=65536, max_headers=200))
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = False
        # Set when the parser had to be abandoned mid-message (HEAD): the connection
        # cannot be reused.
        self.stale = False

    def expect_head(self) -> None:
        self._head_request = True

    def on_status(self, status: bytes) -> None:
        self._between = False
        self._status_reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # Hot path (once per header): common spellings in one lookup, others by length.
        code = _RESPONSE_SPELLED.get(name)
        if code is None:
            code = (_RESPONSE_CODES.get(name.lower(), _PLAIN) if len(name) in _RESPONSE_LENGTHS
                    else _PLAIN)
        if code != _PLAIN:
            if code == _LENGTH:
                self._content_length = int(value)
                self._cl_at = len(self._headers)
                self._headers.append((name, value))
                return  # not hop-by-hop: the relay decides
            if code == _CHUNKED:
                self._chunked = value.strip().lower().endswith(b"chunked")
            elif code == _CONNECTION:
                self._connection = (value if self._connection is None
                                    else self._connection + b"," + value)
            self._drop.append(len(self._headers))
        self._headers.append((name, value))

    def _raw_lines(self, src: bytes) -> tuple[RawLines | None, bytes | None]:
        """As RequestReader._raw_lines, for a status line with a reason (the common case;
        without one, a header could have started before `src` with no callback). The
        reason reached on_status in this chunk, so the status line ends in `src`, and no
        header came before it; `src` starts the head iff its first line is the whole
        status line (`HTTP/x.y NNN ` and the reason: 13 bytes more than the reason)."""
        end = src.find(b"\r\n")
        reason = self._status_reason
        if not reason or end != 13 + len(reason) or not src.startswith(b"HTTP/"):
            return None, None
        stop = src.find(b"\r\n\r\n", end)
        if stop < 0:
            return None, None
        return ((src[end + 2:stop + 2], self._headers, self._drop, None, None, self._cl_at),
                _RAW_VERSIONS.get(src[5:8]))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        src = self._raw_src
        raw = version = None
        if src is not None:
            self._raw_src = None
            raw, version = self._raw_lines(src)
        headers = self._headers
        limits = self.limits
        if (raw is None or len(headers) > limits.max_headers
                or len(raw[0]) + len(headers) > limits.max_header_bytes):
            self._check_limits()
        if version is None:
            text = parser.get_http_version()
            version = _VERSIONS.get(text) or text.encode()
        self._events.append(ResponseHead(
            status, self._status_reason or b"-", version,
            self._headers, self._chunked, self._content_length, self._connection, raw,
        ))
        self._between = False
        self._reset_message()
        if self._head_request and status >= 200:
            self._head_request = False
            self._events.append(END_CLOSE)
            self.stale = True
            raise _Limit(0, "head response done")

    def on_message_complete(self) -> None:
        self._between = True
        self._events.append(END_KEEP_ALIVE if self._parser.should_keep_alive() else END_CLOSE)
