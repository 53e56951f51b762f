"""The outbound listener is not an open proxy: CONNECT reaches only a mesh service's
`host:port` as the route table knows it, and absolute-form requests to anything else get
`no_route` — never a connection to the address they name (another sidecar's admin port, the
control plane, a service name with a port it does not declare)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
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
FQDN = "api.demo.svc.cluster.local"
CLUSTER = f"outbound|8080||{FQDN}"


class Bait:
    """A plaintext TCP server standing for an admin/control-plane port: counts connections."""

    def __init__(self) -> None:
        self.hits = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbait")
        await writer.drain()
        writer.close()


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[int, int, Bait]]:
    bait = Bait()
    server = await asyncio.start_server(bait.handle, "127.0.0.1", 0)
    bait_port = server.sockets[0].getsockname()[1]
    spec = ListenerSpec("outbound_http", "127.0.0.1", 0, ListenerKind.OUTBOUND_HTTP,
                        route_config="outbound_http")
    routes = RouteTable.build("outbound_http", (VirtualHost(
        f"{FQDN}:8080", (FQDN, f"{FQDN}:8080", "api", "api:8080"),
        (Route("r", RouteMatch(), ClusterAction.single(CLUSTER), timeout_s=2.0),)),))
    # The service's only endpoint is the bait too: reaching it via the route is fine, but
    # only when asked for the service by a declared port.
    plane = DataPlane(ConfigHolder(), None, AccessLog(None), Stats())
    await plane.apply(ProxyConfig(
        "1", (spec,), {"outbound_http": routes},
        {CLUSTER: ClusterSpec(CLUSTER, (EndpointSpec("127.0.0.1", 9),))}, identity=""))
    try:
        yield plane.port_of(spec.name), bait_port, bait
    finally:
        await plane.close()
        server.close()
        await server.wait_closed()


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        async with asyncio.timeout(3):
            while chunk := await reader.read(4096):
                out += chunk
                if b"\r\n\r\n" in out:
                    break
        return out
    finally:
        writer.close()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize("target", [
    "127.0.0.1:{bait}", "localhost:{bait}", "[::1]:{bait}", "0.0.0.0:{bait}",
    f"{FQDN}:{{bait}}", f"{FQDN}:9999", "api:{bait}", f"{FQDN.upper()}:1", "2130706433:{bait}",
    f"{FQDN}", "*:8080", f"x.{FQDN}:8080",
])
async def test_connect_to_anything_but_a_service_port_is_refused(
    mesh: tuple[int, int, Bait], target: str
) -> None:
    port, bait_port, bait = mesh
    authority = target.format(bait=bait_port)
    response = await _exchange(port, f"CONNECT {authority} HTTP/1.1\r\n"
                                     f"Host: {authority}\r\n\r\n".encode())
    assert _status(response) in (400, 404)
    assert b"200 Connection established" not in response
    assert bait.hits == 0


async def test_connect_to_a_declared_service_port_is_tunnelled(
    mesh: tuple[int, int, Bait],
) -> None:
    port, _, bait = mesh
    response = await _exchange(port, f"CONNECT {FQDN}:8080 HTTP/1.1\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 200 Connection established")
    assert bait.hits == 0


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{bait}/quitquitquit", "http://localhost:{bait}/",
    "http://[::1]:{bait}/", "http://evil.example:{bait}/", "http://127.0.0.1:{bait}@api/",
])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_absolute_form_to_a_non_mesh_address_gets_no_route(
    mesh: tuple[int, int, Bait], url: str, method: str
) -> None:
    port, bait_port, bait = mesh
    target = url.format(bait=bait_port)
    response = await _exchange(port, f"{method} {target} HTTP/1.1\r\nHost: api\r\n"
                                     "content-length: 0\r\n\r\n".encode())
    assert _status(response) in (400, 404)
    assert bait.hits == 0


async def test_host_header_naming_a_loopback_port_gets_no_route(
    mesh: tuple[int, int, Bait],
) -> None:
    port, bait_port, bait = mesh
    response = await _exchange(port, f"POST /quitquitquit HTTP/1.1\r\nHost: 127.0.0.1:"
                                     f"{bait_port}\r\ncontent-length: 0\r\n\r\n".encode())
    assert _status(response) == 404
    assert b"no_route" in response
    assert bait.hits == 0
