"""gRPC over HTTP/2 rules for a proxy (pure): detection, status codes, local gRPC replies."""

from __future__ import annotations

from typing import Final

H2Headers = list[tuple[bytes, bytes]]

OK: Final = 0
CANCELLED: Final = 1
UNKNOWN: Final = 2
DEADLINE_EXCEEDED: Final = 4
UNIMPLEMENTED: Final = 12
INTERNAL: Final = 13
UNAVAILABLE: Final = 14
PERMISSION_DENIED: Final = 7
RESOURCE_EXHAUSTED: Final = 8
UNAUTHENTICATED: Final = 16

# Envoy's Grpc::Utility::httpToGrpcStatus, except 504 (a deadline the proxy enforced).
_HTTP_TO_GRPC: Final = {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED,
                        404: UNIMPLEMENTED, 429: UNAVAILABLE, 502: UNAVAILABLE,
                        503: UNAVAILABLE, 504: DEADLINE_EXCEEDED}
# And back (for outlier detection, which counts HTTP statuses): Envoy's grpcToHttpStatus.
_GRPC_TO_HTTP: Final = {OK: 200, CANCELLED: 499, UNKNOWN: 500, 3: 400, DEADLINE_EXCEEDED: 504,
                        5: 404, 6: 409, PERMISSION_DENIED: 403, RESOURCE_EXHAUSTED: 429,
                        9: 400, 10: 409, 11: 400, UNIMPLEMENTED: 501, INTERNAL: 500,
                        UNAVAILABLE: 503, 15: 500, UNAUTHENTICATED: 401}
_CONTENT_TYPE: Final = b"content-type"
_GRPC: Final = b"application/grpc"


def is_grpc(headers: H2Headers) -> bool:
    """`content-type: application/grpc[+proto|...]` (names are lower-case in HTTP/2)."""
    for name, value in headers:
        if name == _CONTENT_TYPE:
            return value.startswith(_GRPC)
    return False


def status_of(headers: H2Headers) -> int | None:
    """`grpc-status` of a trailers block or a trailers-only response (None: absent/garbled)."""
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return None
    return None


PUSHBACK_STOP: Final = -1.0


def retry_pushback_s(headers: H2Headers) -> float | None:
    """`grpc-retry-pushback-ms` (gRFC A6): seconds to wait before the retry, None when
    absent, PUSHBACK_STOP when present but not a non-negative integer (the server says:
    do not retry)."""
    for name, value in headers:
        if name == b"grpc-retry-pushback-ms":
            text = value.strip()
            return int(text) / 1000 if text.isdigit() else PUSHBACK_STOP
    return None


def from_http(status: int) -> int:
    return _HTTP_TO_GRPC.get(status, UNKNOWN)


def to_http(grpc_status: int) -> int:
    return _GRPC_TO_HTTP.get(grpc_status, 500)


def _percent_encode(message: str) -> bytes:
    """grpc-message is percent-encoded UTF-8 (printable ASCII except `%` passes)."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def local_reply(http_status: int, reason: str, request_id: bytes | None = None,
                extra: H2Headers | None = None) -> H2Headers:
    """A trailers-only gRPC response the proxy makes itself: HTTP 200, the gRPC status that
    matches `http_status`, a readable grpc-message and `x-hyphal-reason`."""
    code = from_http(http_status)
    headers: H2Headers = [
        (b":status", b"200"),
        (b"content-type", _GRPC),
        (b"grpc-status", str(code).encode()),
        (b"grpc-message", _percent_encode(f"hyphal: {reason} (HTTP {http_status} equivalent)")),
        (b"x-hyphal-reason", reason.encode()),
    ]
    if request_id:
        headers.append((b"x-request-id", request_id))
    if extra:
        headers.extend(extra)
    return headers


def deadline_trailers(reason: str) -> H2Headers:
    """Trailers that end a committed gRPC response the proxy had to cut (deadline)."""
    return [(b"grpc-status", str(DEADLINE_EXCEEDED).encode()),
            (b"grpc-message", _percent_encode(f"hyphal: {reason}")),
            (b"x-hyphal-reason", reason.encode())]
