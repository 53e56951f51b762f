"""Header rules for a proxy hop (pure): hop-by-hop removal, transforms, XFCC, request ids, heads."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

from hyphal.proxy.runtime.tables import HeaderValue

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 plus the de-facto ones Envoy also strips.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Framing headers the proxy always writes itself.
_FRAMING = frozenset({b"content-length"})
# Request headers never copied upstream as they came: hop-by-hop ones, framing (re-added),
# Host (rewritten), Expect (answered here), and the ones this hop sets or extends.
REQUEST_REPLACED = HOP_BY_HOP | {
    b"content-length", b"host", b"expect", b"x-forwarded-proto", b"x-forwarded-client-cert",
    b"x-forwarded-for", b"x-request-id"}

REASONS: dict[int, bytes] = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 204: b"No Content",
    301: b"Moved Permanently", 302: b"Found", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found",
    408: b"Request Timeout", 417: b"Expectation Failed", 413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}


def tokens_of(connection: bytes | None) -> frozenset[bytes]:
    """Lower-case tokens of a (comma-joined) Connection header value."""
    if not connection:
        return _NO_TOKENS
    return frozenset(t.strip().lower() for t in connection.split(b",") if t.strip())


_NO_TOKENS: frozenset[bytes] = frozenset()


def names_only_hop_by_hop(connection: bytes | None) -> bool:
    """Whether a Connection value names only headers that are hop-by-hop anyway (as
    `keep-alive`, `upgrade`), so dropping those drops all it names."""
    return connection is None or tokens_of(connection) <= HOP_BY_HOP


def cut_lines(block: bytes, drop: list[int]) -> bytes:
    """`block` (header lines, each ending in CRLF) without the lines at the indices in
    `drop` (ascending). Two C calls whatever the number of headers."""
    lines = block.split(b"\r\n")
    for index in reversed(drop):
        del lines[index]
    return b"\r\n".join(lines)


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Lower-case tokens listed in every Connection header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def strip_hop_by_hop(headers: Headers, keep_upgrade: bool = False) -> Headers:
    """Drop hop-by-hop headers, those the Connection header names, and Content-Length
    (re-added by the framer). `keep_upgrade` keeps Upgrade for a tunnel handshake."""
    listed = connection_tokens(headers)
    result: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in _FRAMING or lower in listed:
            if keep_upgrade and lower == b"upgrade":
                result.append((name, value))
            continue
        result.append((name, value))
    return result


def get_header(headers: Headers, lower_name: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == lower_name:
            return value
    return None


def remove_headers(headers: Headers, lower_names: Iterable[bytes]) -> Headers:
    drop = frozenset(lower_names)
    if not drop:
        return headers
    return [(n, v) for n, v in headers if n.lower() not in drop]


def set_header(headers: Headers, name: bytes, value: bytes) -> Headers:
    """Replace every `name` header with one value."""
    lower = name.lower()
    result = [(n, v) for n, v in headers if n.lower() != lower]
    result.append((name, value))
    return result


def apply_transforms(
    headers: Headers, to_remove: tuple[str, ...], to_add: tuple[HeaderValue, ...]
) -> Headers:
    """Envoy order: remove, then add (append or overwrite)."""
    if to_remove:
        headers = remove_headers(headers, (n.lower().encode() for n in to_remove))
    for item in to_add:
        name = item.name.encode("latin-1")
        value = item.value.encode("latin-1")
        if item.append:
            headers.append((name, value))
        else:
            headers = set_header(headers, name, value)
    return headers


def header_map(headers: Headers) -> dict[str, str]:
    """Lower-case str map for matchers; repeated headers joined with ','."""
    result: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        result[key] = f"{result[key]},{text}" if key in result else text
    return result


def _id_prefix() -> bytes:
    raw = bytearray(os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-".encode()


class _RequestIds:
    """UUID-shaped ids: 80 random bits per process, then a 48-bit counter. Unique (the
    prefix differs between processes, the counter within one) and ~10x cheaper than
    os.urandom per request; request ids are correlation handles, not secrets."""

    __slots__ = ("counter", "prefix")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = _id_prefix()
        self.counter = itertools.count(1)


_IDS = _RequestIds()
os.register_at_fork(after_in_child=_IDS.reset)


def new_request_id() -> bytes:
    """A UUID4-shaped id in the canonical form (as Envoy's x-request-id)."""
    return _IDS.prefix + b"%012x" % (next(_IDS.counter) & 0xFFFFFFFFFFFF)


def xfcc_value(own_identity: str, peer_identity: str | None) -> bytes:
    """Envoy's x-forwarded-client-cert with SANITIZE_SET: `By=<own>;URI=<peer>`."""
    parts = []
    if own_identity:
        parts.append(f"By={own_identity}")
    if peer_identity:
        parts.append(f"URI={peer_identity}")
    return ";".join(parts).encode()


def request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def response_head(status: int, reason: bytes, headers: Headers, version: bytes = b"1.1") -> bytes:
    lines = [b"HTTP/", version, b" ", str(status).encode(), b" ", reason, b"\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def local_response(
    status: int,
    reason_flag: str,
    request_id: bytes | None = None,
    close: bool = False,
    body: bytes | None = None,
    extra: Headers | None = None,
    head_only: bool = False,
) -> bytes:
    """A response the proxy makes itself; always says why in `x-hyphal-reason`."""
    if body is None:
        body = f"{status} {REASONS.get(status, b'').decode()}: {reason_flag}\n".encode()
    headers: Headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(body)).encode()),
        (b"x-hyphal-reason", reason_flag.encode()),
    ]
    if request_id:
        headers.append((b"x-request-id", request_id))
    if extra:
        headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    head = response_head(status, REASONS.get(status, b"Unknown"), headers)
    return head if head_only else head + body


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
