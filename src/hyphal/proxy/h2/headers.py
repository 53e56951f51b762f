"""HTTP/2 header blocks for a proxy hop (pure): request pseudo-headers, the upstream request
block and the downstream response block.

HTTP/2 forbids connection-specific headers and wants lower-case names; the rules otherwise
match HTTP/1.1's (`hyphal.proxy.http.request`): x-request-id kept or made, x-forwarded-for
appended, x-forwarded-proto and XFCC replaced, header transforms cluster, route, vhost.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyphal.proxy.h2.grpc import H2Headers
from hyphal.proxy.http.headers import apply_transforms, new_request_id, xfcc_value
from hyphal.proxy.resilience.deadline import format_deadline_header, format_grpc_timeout
from hyphal.proxy.runtime.tables import Route, VirtualHost, WeightedCluster

CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade", b"host"})
_REPLACED = frozenset({b"x-forwarded-client-cert", b"x-forwarded-proto",
                       b"x-hyphal-deadline", b"grpc-timeout"})


@dataclass(frozen=True, slots=True)
class RequestHead:
    """An HTTP/2 request's pseudo-headers and its regular headers (as received)."""

    method: str
    scheme: str
    path: str  # with the query
    authority: str
    headers: H2Headers

    @classmethod
    def parse(cls, block: H2Headers, default_authority: str = "") -> RequestHead:
        method = scheme = path = authority = ""
        host = ""
        regular: H2Headers = []
        for name, value in block:
            if name[:1] == b":":
                text = value.decode("latin-1")
                if name == b":method":
                    method = text
                elif name == b":scheme":
                    scheme = text
                elif name == b":path":
                    path = text
                elif name == b":authority":
                    authority = text
            else:
                if name == b"host":
                    host = value.decode("latin-1")
                regular.append((name, value))
        return cls(method, scheme, path, authority or host or default_authority, regular)


def upstream_block(
    head: RequestHead,
    path: str,
    vhost: VirtualHost,
    route: Route,
    picked: WeightedCluster,
    *,
    tls: bool,
    peer_ip: str,
    peer_identity: str | None,
    own_identity: str,
    inbound: bool,
    downstream_tls: bool,
) -> tuple[bytes, H2Headers]:
    """(x-request-id, the request header block for the upstream, without the deadline
    headers: `with_deadline` adds those per try)."""
    authority = route.host_rewrite or head.authority
    regular: H2Headers = []
    xff: bytes | None = None
    request_id: bytes | None = None
    for name, value in head.headers:
        if name in CONNECTION_SPECIFIC or name in _REPLACED:
            continue
        if name == b"te" and value.strip().lower() != b"trailers":
            continue
        if name == b"x-forwarded-for":
            xff = value
            continue
        if name == b"x-request-id":
            request_id = value
        regular.append((name, value))
    if request_id is None:
        request_id = new_request_id()
        regular.append((b"x-request-id", request_id))
    ip = peer_ip.encode()
    regular.append((b"x-forwarded-for", xff + b", " + ip if xff else ip))
    regular.append((b"x-forwarded-proto", b"https" if downstream_tls else b"http"))
    if inbound and peer_identity:
        regular.append((b"x-forwarded-client-cert", xfcc_value(own_identity, peer_identity)))
    for remove, add in ((picked.request_headers_to_remove, picked.request_headers_to_add),
                        (route.request_headers_to_remove, route.request_headers_to_add),
                        (vhost.request_headers_to_remove, vhost.request_headers_to_add)):
        if remove or add:
            regular = apply_transforms(regular, remove, add)
    block: H2Headers = [
        (b":method", head.method.encode("latin-1")),
        (b":scheme", b"https" if tls else b"http"),
        (b":path", path.encode("latin-1")),
        (b":authority", authority.encode("latin-1")),
    ]
    block.extend((name.lower(), value) for name, value in regular)
    return request_id, block


def with_deadline(block: H2Headers, remaining_s: float | None, grpc: bool) -> H2Headers:
    """The block plus the caller's remaining time for the next hop."""
    if remaining_s is None:
        return block
    out = list(block)
    out.append((b"x-hyphal-deadline", format_deadline_header(remaining_s).encode()))
    if grpc:
        out.append((b"grpc-timeout", format_grpc_timeout(max(remaining_s, 0.0)).encode()))
    return out


def downstream_block(block: H2Headers, route: Route | None, vhost: VirtualHost | None,
                     extra: H2Headers | None) -> H2Headers:
    """The upstream's response headers for the client: connection-specific ones dropped,
    response transforms route then vhost, `extra` (Set-Cookie of hashing) appended."""
    pseudo = [(n, v) for n, v in block if n[:1] == b":"]
    regular = [(n, v) for n, v in block
               if n[:1] != b":" and n not in CONNECTION_SPECIFIC]
    if route is not None and (route.response_headers_to_add
                              or route.response_headers_to_remove):
        regular = apply_transforms(regular, route.response_headers_to_remove,
                                   route.response_headers_to_add)
    if vhost is not None and (vhost.response_headers_to_add
                              or vhost.response_headers_to_remove):
        regular = apply_transforms(regular, vhost.response_headers_to_remove,
                                   vhost.response_headers_to_add)
    if extra:
        regular.extend(extra)
    return pseudo + [(n.lower(), v) for n, v in regular]
