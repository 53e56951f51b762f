"""Request mirroring for HTTP/2 streams (Envoy's request_mirror_policies, Istio's mirror).

The shadow copy is built with the same header rules as the real request (`upstream_block`,
`-shadow` host as in HTTP/1.1, `shadow_authority`) and handed to the sidecar's bounded
fire-and-forget sender (`hyphal.proxy.mirror.Mirrors`) as an HTTP/1.1 request with a
Content-Length; for a mirror cluster with `http2` set the connection pool's HTTP/2 bridge
carries it as an h2 stream, so gRPC calls are mirrored over HTTP/2 too (never to an
HTTP/1.1 cluster). Sent after the real response; only a body kept whole is mirrored.
"""

from __future__ import annotations

from dataclasses import replace

from hyphal.proxy.h2.bridge import h1_request
from hyphal.proxy.h2.headers import RequestHead, upstream_block
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.runtime.tables import ProxyConfig, Route, VirtualHost, WeightedCluster
from hyphal.proxy.upstream.policy import shadow_authority


def send_mirrors(ctx: ListenerContext, config: ProxyConfig, head: RequestHead, path: str,
                 vhost: VirtualHost, route: Route, body: bytes, grpc: bool,
                 peer_ip: str, peer_identity: str | None, timeout_s: float | None) -> int:
    """Start the route's mirrors for one request; returns how many were started."""
    started = 0
    authority = shadow_authority(route.host_rewrite or head.authority)
    shadow_route = replace(route, host_rewrite=None) if route.host_rewrite else route
    headers = [(n, v) for n, v in head.headers if n != b"content-length"]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    shadow = replace(head, authority=authority, headers=headers)
    for mirror in route.mirrors:
        if mirror.fraction < 1.0 and ctx.rng.random() >= mirror.fraction:
            continue
        spec = config.clusters.get(mirror.cluster)
        if spec is None or (grpc and not spec.http2):
            continue
        _, block = upstream_block(
            shadow, path, vhost, shadow_route, WeightedCluster(mirror.cluster, 1),
            tls=spec.tls is not None, peer_ip=peer_ip, peer_identity=peer_identity,
            own_identity=config.identity, inbound=False, downstream_tls=ctx.spec.tls is not None)
        request, _chunked, _head = h1_request(block, True)
        if ctx.clusters.mirrors.send(ctx.clusters.runtime(spec), request, body, timeout_s):
            started += 1
    return started
