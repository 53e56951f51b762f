"""The inbound listener's request filters (jwt_authn, local_ratelimit) run for HTTP/2 too:
choosing ALPN h2 must not skip authentication or rate limits that HTTP/1.1 gets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sec_helpers import client_context, make_ca, material

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.filters.chain import LocalReply, RequestState
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    DownstreamTls,
    EndpointSpec,
    ListenerKind,
    ListenerSpec,
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


class Refuse:
    """A request filter that answers every request 401 (as jwt_authn does for a bad JWT)."""

    def apply(self, state: RequestState, now: float) -> None:
        state.reply = LocalReply(401, "jwt_authn_failed")


@pytest.fixture
async def inbound() -> AsyncIterator[tuple[int, object]]:
    ca = make_ca()
    spec = ListenerSpec("inbound|8080", "127.0.0.1", 0, ListenerKind.INBOUND_HTTP,
                        tls=DownstreamTls(), route_config="in", request_filters=(Refuse(),))
    routes = RouteTable.build("in", (VirtualHost("in", ("*",), (
        Route("in", RouteMatch(), ClusterAction.single("inbound|8080||"), timeout_s=None),)),))
    plane = DataPlane(ConfigHolder(), material(ca, SERVER), AccessLog(None), Stats())
    await plane.apply(ProxyConfig(
        "1", (spec,), {"in": routes},
        {"inbound|8080||": ClusterSpec("inbound|8080||", (EndpointSpec("127.0.0.1", 9),))},
        identity=SERVER))
    try:
        yield plane.port_of(spec.name), ca
    finally:
        await plane.close()


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2"])
async def test_request_filters_answer_on_both_protocols(
    inbound: tuple[int, object], http2: bool
) -> None:
    port, ca = inbound
    ctx = client_context(ca, CALLER, ["h2"] if http2 else ["http/1.1"])  # type: ignore[arg-type]
    async with httpx.AsyncClient(verify=ctx, http2=http2, http1=not http2) as client:
        resp = await client.get(f"https://127.0.0.1:{port}/anything", timeout=5)
    assert resp.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert resp.status_code == 401
    assert resp.headers["x-hyphal-reason"] == "jwt_authn_failed"
