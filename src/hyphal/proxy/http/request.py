"""Building what goes upstream for one request (pure): the rewritten head, hash keys, redirects."""

from __future__ import annotations

from hyphal.proxy.http.codec import RequestHead
from hyphal.proxy.http.headers import (
    REQUEST_REPLACED,
    Headers,
    apply_transforms,
    cut_lines,
    names_only_hop_by_hop,
    new_request_id,
    tokens_of,
    xfcc_value,
)
from hyphal.proxy.router import Target, rewrite_path
from hyphal.proxy.runtime.matchers import parse_query
from hyphal.proxy.runtime.tables import RedirectAction, Route, VirtualHost, WeightedCluster

# Also the caller's deadline headers: the exchange re-adds the remaining time per try
# (upstream.policy.with_deadline), so the ones that came in never go on.
_REPLACED = REQUEST_REPLACED | {b"x-hyphal-deadline", b"grpc-timeout"}


_XFCC: dict[tuple[str, str], bytes] = {}


def _xfcc(own_identity: str, peer_identity: str) -> bytes:
    """`xfcc_value`, cached: a sidecar sees the same few (own, peer) pairs on every request."""
    value = _XFCC.get((own_identity, peer_identity))
    if value is None:
        if len(_XFCC) > 1024:
            _XFCC.clear()
        value = _XFCC[(own_identity, peer_identity)] = xfcc_value(own_identity, peer_identity)
    return value


def upstream_request_head(
    head: RequestHead,
    target: Target,
    vhost: VirtualHost,
    route: Route,
    picked: WeightedCluster,
    *,
    peer_ip: str,
    peer_identity: str | None,
    own_identity: str,
    inbound: bool,
    downstream_tls: bool,
) -> tuple[bytes, bytes]:
    """Returns (x-request-id, the origin-form request head to send upstream).

    Hop-by-hop headers go; Host is the target's authority (or the route's host_rewrite);
    Expect is answered by the proxy; a client's XFCC and x-forwarded-proto are replaced;
    x-forwarded-for gets the peer appended; header transforms run cluster, route, vhost.
    One pass over the headers; the head is joined as bytes directly unless a transform
    needs the header list. When the head came whole (`head.raw`), its header lines are
    copied as received minus the replaced ones, without a pass over the headers.
    """
    authority = route.host_rewrite or target.authority
    transforms = (picked.request_headers_to_add or picked.request_headers_to_remove
                  or route.request_headers_to_add or route.request_headers_to_remove
                  or vhost.request_headers_to_add or vhost.request_headers_to_remove)
    raw = head.raw
    connection = head.connection
    if (raw is not None and raw[1] is head.headers and not transforms and not head.upgrade
            and (connection is None or names_only_hop_by_hop(connection))):
        # Hot path: the same head as the general code below builds, bar the kept lines'
        # spacing (as the client wrote it). Flat on purpose: runs once per request.
        block, _, drop, rid, forwarded, _ = raw
        if route.prefix_rewrite is not None or route.regex_rewrite is not None:
            path = rewrite_path(route, target)
        else:
            path = f"{target.path}?{target.query}" if target.query else target.path
        if drop:
            block = (block[block.index(b"\r\n") + 2:] if drop[0] == 0 and len(drop) == 1
                     else cut_lines(block, drop))  # the first: Host, usually alone
        parts = [head.method, b" ", path.encode("latin-1"), b" HTTP/1.1\r\nHost: ",
                 authority.encode("latin-1"), b"\r\n", block]
        if rid is None:
            rid = new_request_id()
            parts += (b"x-request-id: ", rid, b"\r\n")
        ip = peer_ip.encode()
        parts += (b"x-forwarded-for: ", forwarded + b", " + ip if forwarded else ip, b"\r\n",
                  b"x-forwarded-proto: https\r\n" if downstream_tls
                  else b"x-forwarded-proto: http\r\n")
        if inbound and peer_identity:
            parts += (b"x-forwarded-client-cert: ", _xfcc(own_identity, peer_identity),
                      b"\r\n")
        if head.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        elif head.content_length is not None:
            parts.append(b"Content-Length: %d\r\n\r\n" % head.content_length)
        else:
            parts.append(b"\r\n")
        return rid, b"".join(parts)
    listed = tokens_of(head.connection)
    upgrade = head.upgrade
    xff: bytes | None = None
    request_id: bytes | None = None
    kept: Headers = []
    for name, value in head.headers:
        lower = name.lower()
        if lower in _REPLACED or lower in listed:
            if lower == b"x-forwarded-for":
                xff = value
            elif lower == b"x-request-id":
                request_id = value
                kept.append((name, value))
            elif upgrade and lower == b"upgrade":
                kept.append((name, value))
            continue
        kept.append((name, value))
    if request_id is None:
        request_id = new_request_id()
        kept.append((b"x-request-id", request_id))
    ip = peer_ip.encode()
    kept.append((b"x-forwarded-for", xff + b", " + ip if xff else ip))
    kept.append((b"x-forwarded-proto", b"https" if downstream_tls else b"http"))
    if inbound and peer_identity:
        kept.append((b"x-forwarded-client-cert", _xfcc(own_identity, peer_identity)))
    host_line = b"Host: " + authority.encode("latin-1") + b"\r\n"
    if transforms:
        # Transforms see Host too (they may replace or remove it).
        kept.insert(0, (b"Host", authority.encode("latin-1")))
        host_line = b""
        for remove, add in ((picked.request_headers_to_remove, picked.request_headers_to_add),
                            (route.request_headers_to_remove, route.request_headers_to_add),
                            (vhost.request_headers_to_remove, vhost.request_headers_to_add)):
            if remove or add:
                kept = apply_transforms(kept, remove, add)
    if upgrade:
        kept.append((b"Connection", b"Upgrade"))
    if head.chunked:
        kept.append((b"Transfer-Encoding", b"chunked"))
    elif head.content_length is not None:
        kept.append((b"Content-Length", b"%d" % head.content_length))
    if route.prefix_rewrite is not None or route.regex_rewrite is not None:
        path = rewrite_path(route, target)
    else:
        path = target.origin
    parts = [head.method, b" ", path.encode("latin-1"), b" HTTP/1.1\r\n", host_line]
    for name, value in kept:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return request_id, b"".join(parts)


def hash_key_for(route: Route, target: Target, headers: Headers, peer_ip: str) -> bytes | None:
    """The first non-empty term of the route's hash policy (for ring hash / maglev)."""
    for policy in route.hash_policy:
        if policy.header:
            wanted = policy.header.lower().encode("latin-1")
            for name, value in headers:
                if name.lower() == wanted:
                    return value
        if policy.source_ip:
            return peer_ip.encode()
        if policy.query_parameter:
            param = parse_query(target.query).get(policy.query_parameter)
            if param is not None:
                return param.encode()
        if policy.cookie:
            wanted = policy.cookie.encode("latin-1")
            for name, raw in headers:
                if name.lower() == b"cookie":
                    for part in raw.split(b";"):
                        key, _, val = part.strip().partition(b"=")
                        if key == wanted:
                            return val
    return None


def redirect_location(action: RedirectAction, route: Route, target: Target) -> bytes:
    scheme = action.scheme or "http"
    if action.host is not None:
        host = action.host if action.port is None else f"{action.host}:{action.port}"
    elif action.port is not None:
        host = f"{target.authority.rsplit(':', 1)[0]}:{action.port}"
    else:
        host = target.authority
    path = action.path or target.path
    if action.prefix_rewrite is not None:
        path = action.prefix_rewrite + target.path[len(route.match.path.value):]
    if target.query and not action.strip_query:
        path = f"{path}?{target.query}"
    return f"{scheme}://{host}{path}".encode("latin-1")
