"""Retries, timeouts, faults, streaming bodies, config swaps under load, access log."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from hyphal.proxy.runtime.tables import (
    DirectResponse,
    EndpointSpec,
    FaultSpec,
    PathKind,
    PathMatch,
    RedirectAction,
    RetryPolicy,
    Route,
    RouteMatch,
    VirtualHost,
)
from hyphal.telemetry.accesslog import AccessLog

from .mesh import (
    KeepAliveClient,
    cluster,
    config,
    free_port,
    outbound_listener,
    route_to,
    table,
)

pytestmark = pytest.mark.e2e


def one_route(port: int, *clusters_, version: str = "1", **route_kw):
    route = route_to("r", *[(c.name, w) for c, w in clusters_], **route_kw)
    routes = table("outbound_http", VirtualHost("product", ("product",), (
        Route("moved", RouteMatch(path=PathMatch(PathKind.PREFIX, "/moved")),
              RedirectAction(host="elsewhere", status=302)),
        Route("canned", RouteMatch(path=PathMatch(PathKind.EXACT, "/canned")),
              DirectResponse(200, b"canned answer")),
        route)))
    return config(version, (outbound_listener(port),), {"outbound_http": routes},
                  tuple(c for c, _ in clusters_))


async def get(port: int, path: str, **kw) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        headers = {"host": "product", **kw.pop("headers", {})}
        return await client.request(kw.pop("method", "GET"), path, headers=headers, **kw)


async def test_istio_default_retry_on_503(echo, dataplane):
    app = echo("app")
    port = free_port()
    await dataplane(one_route(port, (cluster("app", ("127.0.0.1", app.port)), 1),
                              retry=RetryPolicy.istio_default()))
    response = await get(port, "/flaky/a/2")  # 503, 503, then 200: two retries suffice
    assert response.status_code == 200
    response = await get(port, "/flaky/b/3")  # one failure too many
    assert response.status_code == 503 and "x-hyphal-reason" not in response.headers


async def test_no_retry_without_policy_and_for_big_bodies(echo, dataplane):
    app = echo("app")
    port = free_port()
    plane = await dataplane(one_route(port, (cluster("app", ("127.0.0.1", app.port)), 1),
                                      retry=RetryPolicy.istio_default()))
    response = await get(port, "/flaky/big/1", method="POST", content=b"x" * 100_000)
    assert response.status_code == 503  # a 100 KB body is not kept, so not replayed
    assert plane.stats.counter("hyphal_upstream_rq_retry", "app") == 0
    response = await get(port, "/flaky/small/1", method="POST", content=b"y" * 1000)
    assert response.status_code == 200 and response.json()["body_len"] == 1000
    assert plane.stats.counter("hyphal_upstream_rq_retry", "app") == 1


async def test_connect_failure_retries_another_endpoint(echo, dataplane):
    app = echo("app")
    port = free_port()
    dead = free_port()
    both = cluster("app", ("127.0.0.1", dead), ("127.0.0.1", app.port))
    await dataplane(one_route(port, (both, 1), retry=RetryPolicy.istio_default()))
    for _ in range(6):
        assert (await get(port, "/")).status_code == 200
    dead_only = cluster("app", ("127.0.0.1", dead))
    port2 = free_port()
    await dataplane(one_route(port2, (dead_only, 1), retry=RetryPolicy.istio_default()))
    response = await get(port2, "/")
    assert (response.status_code, response.headers["x-hyphal-reason"]) == (503, "upstream_connect_failure")


async def test_route_timeout_gives_504(echo, dataplane):
    app = echo("app")
    port = free_port()
    await dataplane(one_route(port, (cluster("app", ("127.0.0.1", app.port)), 1), timeout_s=0.3))
    started = time.monotonic()
    response = await get(port, "/sleep/3000")
    assert (response.status_code, response.headers["x-hyphal-reason"]) == (504, "timeout")
    assert time.monotonic() - started < 1.5
    assert (await get(port, "/")).status_code == 200


async def test_fault_abort_and_delay(echo, dataplane):
    app = echo("app")
    port = free_port()
    await dataplane(one_route(port, (cluster("app", ("127.0.0.1", app.port)), 1),
                              fault=FaultSpec(abort_status=418, abort_fraction=1.0)))
    response = await get(port, "/")
    assert (response.status_code, response.headers["x-hyphal-reason"]) == (418, "fault_injected")
    port2 = free_port()
    await dataplane(one_route(port2, (cluster("app", ("127.0.0.1", app.port)), 1),
                              fault=FaultSpec(delay_s=0.25, delay_fraction=1.0)))
    started = time.monotonic()
    assert (await get(port2, "/")).status_code == 200
    assert time.monotonic() - started >= 0.25


async def test_unhealthy_endpoints_redirect_and_direct_response(echo, dataplane):
    port = free_port()
    sick = cluster("app", ("127.0.0.1", 1))
    sick = type(sick)(name="app", endpoints=(EndpointSpec("127.0.0.1", 1, healthy=False),))
    await dataplane(one_route(port, (sick, 1)))
    response = await get(port, "/")
    assert (response.status_code, response.headers["x-hyphal-reason"]) == (503, "no_healthy_upstream")
    response = await get(port, "/moved/x?y=1")
    assert response.status_code == 302
    assert response.headers["location"] == "http://elsewhere/moved/x?y=1"
    response = await get(port, "/canned")
    assert (response.status_code, response.content) == (200, b"canned answer")


async def test_large_bodies_stream_both_ways(echo, dataplane):
    app = echo("app")
    port = free_port()
    await dataplane(one_route(port, (cluster("app", ("127.0.0.1", app.port)), 1)))

    async def body():
        for _ in range(64):
            yield b"z" * 32768  # 2 MiB, chunked

    response = await get(port, "/", method="POST", content=body())
    assert response.json()["body_len"] == 2 * 1024 * 1024
    response = await get(port, "/big/8000000")
    assert len(response.content) == 8_000_000


async def test_config_swap_under_load(echo, dataplane):
    v1, v2 = echo("v1"), echo("v2")
    port = free_port()
    c1, c2 = cluster("v1", ("127.0.0.1", v1.port)), cluster("v2", ("127.0.0.1", v2.port))
    plane = await dataplane(one_route(port, (c1, 95), (c2, 5), version="1"))
    before = {"v1": 0, "v2": 0}
    after = {"v1": 0, "v2": 0}
    swapped = asyncio.Event()
    failures: list[str] = []

    async def worker(n: int) -> None:
        client = KeepAliveClient(port)
        try:
            for _ in range(n):
                status, headers, _ = await client.request("/")
                if status != 200:
                    failures.append(f"{status} {headers.get('x-hyphal-reason')}")
                    continue
                (after if swapped.is_set() else before)[headers["x-upstream"]] += 1
        finally:
            await client.close()

    async def slow() -> int:
        status, _, _ = await KeepAliveClient(port).request("/sleep/400")
        return status

    load = asyncio.gather(*(worker(200) for _ in range(6)))
    in_flight = [asyncio.ensure_future(slow()) for _ in range(3)]
    await asyncio.sleep(0.2)
    await plane.apply(one_route(port, (c1, 50), (c2, 50), version="2"))
    swapped.set()
    await asyncio.wait_for(load, 30)
    assert [await t for t in in_flight] == [200, 200, 200]  # in-flight requests finished
    assert not failures, failures[:5]
    assert sum(before.values()) + sum(after.values()) == 1200
    if sum(after.values()) >= 200:
        assert 30 <= after["v2"] * 100 / sum(after.values()) <= 70, after


async def test_access_log_lines(echo, dataplane, tmp_path):
    app = echo("app")
    port = free_port()
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    await dataplane(one_route(port, (cluster("app", ("127.0.0.1", app.port)), 1)), access_log=log)
    await get(port, "/hello", headers={"x-request-id": "rid-1"})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await client.get("/", headers={"host": "nowhere"})
    log.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["request_id"] == "rid-1" and lines[0]["status"] == 200
    assert lines[0]["path"] == "/hello" and lines[0]["cluster"] == "app" and lines[0]["reason"] == "-"
    assert lines[1]["status"] == 404 and lines[1]["reason"] == "no_route"


async def test_circuit_breaker_max_requests(echo, dataplane):
    from hyphal.proxy.runtime.tables import CircuitBreaker

    app = echo("app")
    port = free_port()
    await dataplane(one_route(port, (cluster("app", ("127.0.0.1", app.port),
                                             circuit_breaker=CircuitBreaker(max_requests=1)), 1)))
    slow = asyncio.ensure_future(get(port, "/sleep/400"))
    await asyncio.sleep(0.15)
    response = await get(port, "/")
    assert (response.status_code, response.headers["x-hyphal-reason"]) == (503, "circuit_open")
    assert (await slow).status_code == 200
    assert (await get(port, "/")).status_code == 200


async def test_outlier_detection_ejects_a_failing_endpoint(echo, dataplane):
    from hyphal.proxy.runtime.tables import OutlierSpec

    app = echo("app")
    port = free_port()
    spec = cluster("app", ("127.0.0.1", free_port()), ("127.0.0.1", app.port),
                   outlier=OutlierSpec(consecutive_gateway_failure=1, base_ejection_time_s=30,
                                       max_ejection_percent=50))
    plane = await dataplane(one_route(port, (spec, 1)))
    codes = [(await get(port, "/")).status_code for _ in range(8)]
    assert codes.count(503) == 1 and codes.count(200) == 7  # one failure, then ejected
    assert plane.stats.counter("hyphal_upstream_cx_connect_fail", "app") == 1
