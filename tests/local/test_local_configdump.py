"""`status`/`proxy-config` read the document the real sidecar admin (hyphal.proxy.admin) makes."""

from __future__ import annotations

import json
from typing import Any

from hyphal.local import configdump
from hyphal.proxy.admin import config_dump
from hyphal.proxy.certs import CertInfo
from hyphal.proxy.runtime.matchers import PathKind, PathMatch
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    DirectResponse,
    DownstreamTls,
    EndpointSpec,
    ListenerKind,
    ListenerSpec,
    ProxyConfig,
    Route,
    RouteMatch,
    RouteTable,
    UpstreamTls,
    VirtualHost,
    WeightedCluster,
)
from hyphal.proxy.xds_client import TypeStatus, XdsStatus

V1 = "outbound|8080|v1|product.shop.svc.cluster.local"
V2 = "outbound|8080|v2|product.shop.svc.cluster.local"
SA = "spiffe://cluster.local/ns/shop/sa/product"


def _dump() -> dict[str, Any]:
    split = ClusterAction((WeightedCluster(V1, 95), WeightedCluster(V2, 5)))
    routes = RouteTable("outbound_http", (
        VirtualHost("product.shop.svc.cluster.local:8080",
                    ("product", "product:8080", "product.shop", "product.shop.svc.cluster.local"),
                    (Route("default", RouteMatch(PathMatch(PathKind.PREFIX, "/")), split),)),
        VirtualHost("blackhole", ("*",),
                    (Route("none", RouteMatch(), DirectResponse(404, b"no route")),)),
    ))
    clusters = {
        V1: ClusterSpec(V1, (EndpointSpec("127.0.0.1", 21003, 1, {"version": "v1"}, SA),),
                        tls=UpstreamTls(sni=V1, expected_sans=frozenset({SA}))),
        V2: ClusterSpec(V2, (EndpointSpec("127.0.0.1", 21013, 1, {"version": "v2"}, SA, False),),
                        tls=UpstreamTls(sni=V2, expected_sans=frozenset({SA}))),
    }
    listeners = (
        ListenerSpec("outbound_http", "127.0.0.1", 21001, ListenerKind.OUTBOUND_HTTP,
                     route_config="outbound_http"),
        ListenerSpec("inbound|8080", "127.0.0.1", 21002, ListenerKind.INBOUND_HTTP,
                     tls=DownstreamTls()),
    )
    config = ProxyConfig(version="v7", listeners=listeners, routes={"outbound_http": routes},
                         clusters=clusters)
    status = XdsStatus(connected=True, applied_count=3, last_applied_at=0.0, warming=(), types=(
        TypeStatus("type.googleapis.com/envoy.config.listener.v3.Listener", "abc123", "n1",
                   "acked"),
        TypeStatus("type.googleapis.com/envoy.config.cluster.v3.Cluster", "def456", "n2",
                   "nacked", "bad cluster"),
    ))
    cert = CertInfo(SA, "01", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", 0)
    doc = config_dump(status, config, cert, 1)
    parsed: dict[str, Any] = json.loads(json.dumps(doc))  # as it travels over HTTP
    return parsed


def test_versions_and_certificate() -> None:
    dump = _dump()
    assert configdump.versions(dump) == {"listeners": "abc123", "clusters": "def456 (NACK)"}
    assert configdump.cert_expiry(dump) == "2026-01-02T00:00:00Z"


def test_tables() -> None:
    dump = _dump()
    assert configdump.listener_rows(dump) == [
        ["outbound_http", "127.0.0.1:21001", "outbound_http", "-", "-", "outbound_http"],
        ["inbound|8080", "127.0.0.1:21002", "inbound_http", "mTLS", "-", None],
    ]
    routes = configdump.route_rows(dump)
    assert routes[0][:5] == ["outbound_http", "product.shop.svc.cluster.local:8080",
                             "product,product:8080,product.shop,+1", "prefix /",
                             f"{V1}=95 {V2}=5"]
    assert routes[1][4] == "direct 404"
    assert configdump.cluster_rows(dump)[0] == [V1, "round_robin", "1/1", f"mTLS {SA}"]
    eps = configdump.endpoint_rows(dump)
    assert eps[1] == [V2, "127.0.0.1:21013", "UNHEALTHY", 1, SA, "version=v2"]
