"""Inbound paths are normalized (or refused) before routes and RBAC see them, on HTTP/1.1 and
HTTP/2, and the app is sent the normalized path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sec_helpers import Ca, client_context, make_ca, material

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.pathnorm import normalize_path
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    DirectResponse,
    DownstreamTls,
    ListenerKind,
    ListenerSpec,
    PathKind,
    PathMatch,
    ProxyConfig,
    Route,
    RouteMatch,
    RouteTable,
    VirtualHost,
)
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

pytestmark = pytest.mark.timeout(30)
SERVER = "spiffe://cluster.local/ns/demo/sa/api"
CALLER = "spiffe://cluster.local/ns/demo/sa/client"


@pytest.mark.parametrize(("raw", "norm"), [
    ("/admin", "/admin"),
    ("/public/../admin", "/admin"),
    ("/public/./../admin", "/admin"),
    ("//admin", "/admin"),
    ("/./admin", "/admin"),
    ("/%61dmin", "/admin"),
    ("/a/b/", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/../../admin", "/admin"),
    ("/a%20b", "/a%20b"),
    ("/a%3fb", "/a%3Fb"),
    ("/", "/"),
    ("*", "*"),
    ("/PROCESS", "/PROCESS"),
])
def test_normalized(raw: str, norm: str) -> None:
    assert normalize_path(raw) == norm


@pytest.mark.parametrize("raw", [
    "/public%2F..%2Fadmin", "/public%2f..%2fadmin", "/a%5Cb", "/a\\..\\admin",
    "/admin;jsessionid=1", "/admin;", "/a%zz", "/a%2", "/a%00", "relative", "/a\x00b",
])
def test_refused(raw: str) -> None:
    assert normalize_path(raw) is None


@given(st.text(alphabet="/.%2fF5Ca;b", max_size=24))
def test_normal_form_is_a_fixed_point_without_dot_or_empty_segments(raw: str) -> None:
    out = normalize_path("/" + raw)
    if out is None:
        return
    assert normalize_path(out) == out
    assert "//" not in out and "/./" not in out and "/../" not in out


@pytest.fixture
async def inbound() -> AsyncIterator[tuple[int, Ca]]:
    """An inbound listener whose routes stand in for a policy: /admin is refused (403)."""
    ca = make_ca()
    spec = ListenerSpec("inbound|8080", "127.0.0.1", 0, ListenerKind.INBOUND_HTTP,
                        tls=DownstreamTls(), route_config="in")
    routes = RouteTable.build("in", (VirtualHost("in", ("*",), (
        Route("admin", RouteMatch(PathMatch(PathKind.PREFIX, "/admin")), DirectResponse(403)),
        Route("rest", RouteMatch(), DirectResponse(200, b"ok")),
    )),))
    plane = DataPlane(ConfigHolder(), material(ca, SERVER), AccessLog(None), Stats())
    await plane.apply(ProxyConfig("1", (spec,), {"in": routes}, {}, identity=SERVER))
    try:
        yield plane.port_of(spec.name), ca
    finally:
        await plane.close()


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2"])
async def test_inbound_routes_see_the_normalized_path(
    inbound: tuple[int, Ca], http2: bool
) -> None:
    port, ca = inbound
    ctx = client_context(ca, CALLER, ["h2"] if http2 else ["http/1.1"])
    base = f"https://127.0.0.1:{port}"
    async with httpx.AsyncClient(verify=ctx, http2=http2, http1=not http2, timeout=5) as c:
        async def status(raw: str) -> int:
            req = c.build_request("GET", base + "/x")
            req.url = req.url.copy_with(raw_path=raw.encode())
            return (await c.send(req)).status_code

        assert await status("/public") == 200
        for sneaky in ("/public/../admin", "//admin", "/./admin", "/%61dmin", "/x/../../admin"):
            assert await status(sneaky) == 403, sneaky
        for ambiguous in ("/public%2F..%2Fadmin", "/admin;x=1", "/a%5Cadmin"):
            assert await status(ambiguous) == 400, ambiguous
