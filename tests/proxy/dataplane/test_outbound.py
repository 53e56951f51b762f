"""Outbound HTTP listener: proxy-form and origin-form routing, weights, local answers."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from hyphal.proxy.runtime.tables import (
    HeaderMatcher,
    HeaderValue,
    PathKind,
    PathMatch,
    RouteMatch,
    StringKind,
    StringMatch,
    VirtualHost,
)

from .mesh import (
    KeepAliveClient,
    cluster,
    config,
    free_port,
    outbound_listener,
    raw_exchange,
    route_to,
    statuses,
    table,
)

pytestmark = pytest.mark.e2e


def shop_config(port: int, a: int, b: int, version: str = "1", w: tuple[int, int] = (1, 0)):
    routes = table("outbound_http",
                   VirtualHost("product.shop.svc.cluster.local:8080",
                               ("product", "product:8080", "product.shop.svc.cluster.local"),
                               (route_to("v2-header", ("product-v2", 1),
                                         match=RouteMatch(headers=(HeaderMatcher(
                                             "x-version", StringMatch(StringKind.EXACT, "v2")),)),
                                         response_headers_to_add=(HeaderValue("x-route", "v2"),)),
                                route_to("rewrite", ("product-v1", 1),
                                         match=RouteMatch(path=PathMatch(PathKind.PREFIX, "/old/")),
                                         prefix_rewrite="/new/"),
                                route_to("split", ("product-v1", w[0]), ("product-v2", w[1]))
                                if w[1] else route_to("default", ("product-v1", 1)))),
                   VirtualHost("broken", ("broken",), (route_to("to-nowhere", ("missing", 1)),)))
    return config(version, (outbound_listener(port),), {"outbound_http": routes},
                  (cluster("product-v1", ("127.0.0.1", a)), cluster("product-v2", ("127.0.0.1", b))))


async def test_proxy_form_and_origin_form(echo, dataplane):
    v1, v2 = echo("v1"), echo("v2")
    port = free_port()
    await dataplane(shop_config(port, v1.port, v2.port))
    # proxy-form, as an app with HTTP_PROXY sends
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{port}") as client:
        response = await client.get("http://product:8080/items?id=3")
    assert response.status_code == 200
    body = response.json()
    assert body["server"] == "v1" and body["path"] == "/items?id=3"
    assert body["headers"]["host"] == "product:8080"
    assert body["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert len(body["headers"]["x-request-id"]) == 36
    # origin-form with a Host header; the header matcher picks v2 and adds a response header
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.get("/x", headers={"host": "product", "x-version": "v2"})
        assert response.json()["server"] == "v2"
        assert response.headers["x-route"] == "v2"
        response = await client.get("/old/thing?q=1", headers={"host": "PRODUCT.shop.svc.cluster.local"})
        assert response.json()["path"] == "/new/thing?q=1"


async def test_local_answers_say_why(echo, dataplane):
    v1 = echo("v1")
    port = free_port()
    await dataplane(shop_config(port, v1.port, free_port()))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.get("/", headers={"host": "nobody.example"})
        assert (response.status_code, response.headers["x-hyphal-reason"]) == (404, "no_route")
        response = await client.get("/", headers={"host": "broken"})
        assert (response.status_code, response.headers["x-hyphal-reason"]) == (503, "cluster_not_found")
        response = await client.get("/", headers={"host": "product", "x-version": "v2"})
        assert response.status_code == 503
        assert response.headers["x-hyphal-reason"] == "upstream_connect_failure"
        # the connection is still usable after local answers
        response = await client.get("/", headers={"host": "product"})
        assert response.status_code == 200


async def test_keep_alive_reuses_upstream_connections(echo, dataplane):
    v1 = echo("v1")
    port = free_port()
    plane = await dataplane(shop_config(port, v1.port, v1.port))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(20):
            assert (await client.get("/", headers={"host": "product"})).status_code == 200
    assert plane.stats.counter("hyphal_upstream_cx_total", "product-v1") == 1


async def test_weighted_split_95_5(echo, dataplane):
    v1, v2 = echo("v1"), echo("v2")
    port = free_port()
    await dataplane(shop_config(port, v1.port, v2.port, w=(95, 5)))
    counts = {"v1": 0, "v2": 0}

    async def worker(n: int) -> None:
        client = KeepAliveClient(port)
        try:
            for _ in range(n):
                status, headers, _ = await client.request("/")
                assert status == 200
                counts[headers["x-upstream"]] += 1
        finally:
            await client.close()

    await asyncio.wait_for(asyncio.gather(*(worker(250) for _ in range(8))), 30)
    assert sum(counts.values()) == 2000
    share = counts["v2"] / 2000 * 100
    assert 3.0 <= share <= 7.0, counts


async def test_chunked_and_head_and_http10(echo, dataplane):
    v1 = echo("v1")
    port = free_port()
    await dataplane(shop_config(port, v1.port, v1.port))
    raw = await raw_exchange(port, b"GET /chunked HTTP/1.1\r\nHost: product\r\n\r\n", wait=0.5)
    assert raw.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in raw.lower()
    assert raw.endswith(b"0\r\n\r\n") and b"one," in raw
    raw = await raw_exchange(port, b"HEAD / HTTP/1.1\r\nHost: product\r\n\r\n"
                                   b"GET / HTTP/1.1\r\nHost: product\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [200, 200]
    raw = await raw_exchange(port, b"GET /chunked HTTP/1.0\r\nHost: product\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200") and raw.endswith(b"one,two,three")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert json.loads((await raw_exchange(
        port, b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")).partition(b"\r\n\r\n")[2])["body"] == "hello world"
