"""Telemetry aggregation: Prometheus parsing, quantiles from buckets, rates over the window,
the stats/graph/federation views, the API routes, and a real scrape of an admin listener."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hyphal.control.telemetry import ScrapeTarget, TelemetryAggregator, fetch_stats
from hyphal.telemetry import promtext
from hyphal.telemetry.stats import PeerLabels, Stats

FQDN = "product.shop.svc.cluster.local"


def test_parse_render_roundtrip_with_escapes() -> None:
    text = ('# TYPE m counter\nm{a="x\\"y",b="1\\\\2"} 3\n# TYPE h histogram\n'
            'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\nplain 7 123\n')
    samples, types = promtext.parse(text)
    assert samples[0].labels == (("a", 'x"y'), ("b", "1\\2")) and samples[0].value == 3
    assert types == {"m": "counter", "h": "histogram"}
    assert promtext.family_of("h_bucket", types) == "h"
    again, _ = promtext.parse(promtext.render(samples, types))
    assert sorted(again, key=repr) == sorted(samples, key=repr)
    with pytest.raises(ValueError, match="no value"):
        promtext.parse("m{a=\"b\"}\n")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(1.0, 10.0), (5.0, 30.0), (10.0, 40.0), (float("inf"), 40.0)]
    assert promtext.histogram_quantile(0.25, buckets) == pytest.approx(1.0)
    assert promtext.histogram_quantile(0.5, buckets) == pytest.approx(3.0)  # 10 of 20 in (1,5]
    assert promtext.histogram_quantile(0.99, buckets) == pytest.approx(9.8)  # 5 + 5 * 9.6/10
    tail = [(1.0, 1.0), (float("inf"), 10.0)]
    assert promtext.histogram_quantile(0.99, tail) == 1.0  # +Inf bucket: highest finite bound
    assert promtext.histogram_quantile(0.5, [(float("inf"), 0.0)]) is None


def _stats(ok: int, failed: int, fast_ms: float = 3.0, side: str = "both") -> str:
    """A sidecar's page: `source` (the caller's), `destination` (product's) or both."""
    s = Stats()
    src = s.intern(PeerLabels("source", "frontend", "shop", "spiffe://td/ns/shop/sa/frontend",
                              destination_service=FQDN,
                              destination_cluster=f"outbound|8080|v1|{FQDN}"))
    dst = s.intern(PeerLabels("destination", source_principal="spiffe://td/ns/shop/sa/frontend",
                              destination_workload="product-v1",
                              destination_workload_namespace="shop",
                              destination_service="inbound|8080||",
                              connection_security_policy="mutual_tls"))
    sides = [p for p, name in ((src, "source"), (dst, "destination")) if side in (name, "both")]
    for peer in sides:
        for _ in range(ok):
            s.record_request(peer, 200, "-", fast_ms)
        for _ in range(failed):
            s.record_request(peer, 503, "-", 200.0)
    if side != "destination":
        s.gauge_add("hyphal_upstream_cx_active", f"outbound|8080|v1|{FQDN}", 2)
    return s.render()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rates_success_latency_and_graph_over_the_window() -> None:
    pages = {"frontend-0.shop": _stats(0, 0, side="source"),
             "product-v1-0.shop": _stats(0, 0, side="destination")}
    clock = FakeClock()

    async def fetch(t: ScrapeTarget, timeout: float) -> str:
        return pages[t.node_id]

    targets = [ScrapeTarget("frontend-0.shop", "frontend", "shop", "127.0.0.1", 1, 990.0),
               ScrapeTarget("product-v1-0.shop", "product-v1", "shop", "127.0.0.1", 2, 990.0)]
    agg = TelemetryAggregator(lambda: targets, fetch=fetch, clock=clock, window_s=30)
    await agg.scrape_once()
    # Ten seconds later: 95 good and 5 failed calls, counted at both ends.
    clock.now += 10
    pages = {"frontend-0.shop": _stats(95, 5, side="source"),
             "product-v1-0.shop": _stats(95, 5, side="destination")}
    await agg.scrape_once()
    deploy = {r["name"]: r for r in agg.stats("shop", "deploy")["items"]}
    p = deploy["product-v1"]
    assert p["requests"] == 100 and p["rps"] == pytest.approx(10.0)
    assert p["success_rate"] == pytest.approx(0.95) and p["tls_percent"] == 100.0
    assert p["latency_ms_p50"] is not None and 1 <= p["latency_ms_p50"] <= 5
    assert 100 <= p["latency_ms_p99"] <= 250
    assert deploy["frontend"]["requests"] == 0 and deploy["frontend"]["meshed"] == 1
    assert deploy["frontend"]["tcp_connections"] == 2
    svc = agg.stats("shop", "svc")["items"]
    assert [r["name"] for r in svc] == [FQDN] and svc[0]["rps"] == pytest.approx(10.0)
    assert svc[0]["tcp_connections"] == 2
    edges = agg.graph()["edges"]
    assert len(edges) == 1
    e = edges[0]
    assert (e["from"], e["to"], e["to_name"]) == ("frontend", FQDN, "product")
    assert e["success_rate"] == pytest.approx(0.95) and e["requests"] == 100
    assert agg.stats("other")["items"] == []
    with pytest.raises(ValueError):
        agg.stats(None, "pods")


async def test_restart_counts_from_zero_and_errors_are_reported() -> None:
    clock = FakeClock()
    page = {"text": _stats(50, 0)}

    async def fetch(t: ScrapeTarget, timeout: float) -> str:
        if t.node_id == "down":
            raise OSError("connection refused")
        return page["text"]

    targets = [ScrapeTarget("p-0.shop", "product-v1", "shop", "127.0.0.1", 1, 999.0),
               ScrapeTarget("down", "x", "shop", "127.0.0.1", 2, 999.0)]
    agg = TelemetryAggregator(lambda: targets, fetch=fetch, clock=clock)
    await agg.scrape_once()
    clock.now += 5
    page["text"] = _stats(7, 0)  # the sidecar restarted: counters went down
    await agg.scrape_once()
    row = next(r for r in agg.stats("shop")["items"] if r["name"] == "product-v1")
    assert row["requests"] == 7
    assert "connection refused" in agg.stats()["scrape_errors"]["down"]


async def test_single_scrape_counts_since_connect_and_federation() -> None:
    clock = FakeClock()

    async def fetch(t: ScrapeTarget, timeout: float) -> str:
        return _stats(20, 0)

    targets = [ScrapeTarget("p-0.shop", "product-v1", "shop", "127.0.0.1", 1, 990.0)]
    agg = TelemetryAggregator(lambda: targets, fetch=fetch, clock=clock)
    await agg.scrape_once()
    row = next(r for r in agg.stats("shop")["items"] if r["name"] == "product-v1")
    assert row["rps"] == pytest.approx(2.0)  # 20 since it connected 10 s ago
    text = agg.federate()
    assert text.count("# TYPE istio_requests_total counter") == 1
    assert 'proxy="p-0.shop"' in text
    samples, _ = promtext.parse(text)
    assert any(s.name == "istio_request_duration_milliseconds_bucket" for s in samples)


async def test_fetch_from_a_real_admin_listener() -> None:
    from hyphal.proxy.admin import AdminServer, AdminSources

    stats = _stats(3, 0)
    admin = AdminServer(AdminSources(ready=lambda: (True, ""), config_dump=dict,
                                     stats=lambda: stats, quit=lambda: None))
    port = await admin.start()
    try:
        t = ScrapeTarget("n", "w", "ns", "127.0.0.1", port, 0.0)
        assert await fetch_stats(t, 2.0) == stats
        await admin.close()
        with pytest.raises((OSError, asyncio.TimeoutError)):
            await fetch_stats(t, 1.0)
    finally:
        await admin.close()


async def test_api_routes_serve_the_views(tmp_path: Path) -> None:
    from hyphal.control.api import ApiHandlers
    from hyphal.control.store import Store

    async def fetch(t: ScrapeTarget, timeout: float) -> str:
        return _stats(4, 1)

    agg = TelemetryAggregator(
        lambda: [ScrapeTarget("p-0.shop", "product-v1", "shop", "127.0.0.1", 1, 0.0)],
        fetch=fetch)
    await agg.scrape_once()
    auth = {"authorization": "Bearer tok"}
    api = ApiHandlers(Store(tmp_path, None, "cluster.local"), "tok", telemetry=agg)
    stats = api.handle("GET", "/api/v1/stats?namespace=shop&kind=deploy", auth, b"")
    assert stats.status == 200
    assert [r["name"] for r in stats.body["items"]] == ["product-v1"]
    assert api.handle("GET", "/api/v1/stats?kind=pods", auth, b"").status == 400
    graph = api.handle("GET", "/api/v1/graph", auth, b"")
    assert graph.status == 200 and graph.body["edges"][0]["to_name"] == "product"
    metrics = api.handle("GET", "/api/v1/metrics", auth, b"")
    assert metrics.content_type.startswith("text/plain") and "istio_requests_total{" in metrics.body
    assert api.handle("GET", "/api/v1/metrics", {}, b"").status == 401
    off = ApiHandlers(Store(tmp_path, None, "cluster.local"), "tok")
    assert off.handle("GET", "/api/v1/graph", auth, b"").status == 503
