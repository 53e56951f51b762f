"""Every upstream connection checks the peer's SPIFFE id before anything is exchanged with it:
an active HTTP health check sends no request to a peer with the wrong identity, and neither
the HTTP pool nor the TCP proxy hands an impostor's bytes onward."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sec_helpers import Ca, leaf, make_ca, material

from hyphal.proxy.resilience.health import CheckResult
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec, HealthCheckSpec, UpstreamTls
from hyphal.proxy.upstream.health import probe
from hyphal.proxy.upstream.pool import ConnectFailure, ConnectionPool, open_endpoint
from hyphal.telemetry.stats import Stats

pytestmark = pytest.mark.timeout(20)
EXPECTED = "spiffe://cluster.local/ns/demo/sa/api"
IMPOSTOR = "spiffe://cluster.local/ns/demo/sa/impostor"
CALLER = "spiffe://cluster.local/ns/demo/sa/client"


def _server_context(ca: Ca, uri: str) -> ssl.SSLContext:
    cert, key, root = leaf(ca, uri)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.pem").write_bytes(cert)
        (Path(d) / "k.pem").write_bytes(key)
        ctx.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
    ctx.load_verify_locations(cadata=root.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Impostor:
    """A mesh-CA-signed TLS server with the wrong identity: records what it receives and
    greets every connection at once (as a server-first protocol would)."""

    def __init__(self) -> None:
        self.received = b""
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nimpostor-greeting")
        try:
            while chunk := await reader.read(4096):
                self.received += chunk
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def impostor() -> AsyncIterator[tuple[Impostor, Ca]]:
    ca = make_ca()
    imp = Impostor()
    server = await asyncio.start_server(imp.handle, "127.0.0.1", 0,
                                        ssl=_server_context(ca, IMPOSTOR))
    imp.port = server.sockets[0].getsockname()[1]
    try:
        yield imp, ca
    finally:
        server.close()
        await server.wait_closed()


def _cluster(port: int, check: HealthCheckSpec | None = None) -> ClusterSpec:
    return ClusterSpec("outbound|8080||api.demo.svc.cluster.local",
                       (EndpointSpec("127.0.0.1", port),),
                       tls=UpstreamTls("outbound|8080||api.demo.svc.cluster.local",
                                       frozenset({EXPECTED})),
                       connect_timeout_s=2.0, health_check=check,
                       service="api.demo.svc.cluster.local")


@pytest.mark.parametrize("tcp", [False, True], ids=["http", "tcp"])
async def test_health_check_sends_nothing_to_a_peer_with_the_wrong_identity(
    impostor: tuple[Impostor, Ca], tcp: bool
) -> None:
    imp, ca = impostor
    check = HealthCheckSpec(path="/healthz", timeout_s=2.0, tcp=tcp)
    cluster = _cluster(imp.port, check)
    pool = ConnectionPool(material(ca, CALLER), Stats())
    result = await probe(cluster, check, pool, "127.0.0.1", imp.port, 2.0)
    await asyncio.sleep(0.2)
    assert result is CheckResult.NETWORK_FAIL
    assert imp.received == b""


async def test_an_impostors_bytes_reach_no_protocol(impostor: tuple[Impostor, Ca]) -> None:
    imp, ca = impostor
    seen: list[bytes] = []

    class Recorder(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            seen.append(data)

    with pytest.raises(ConnectFailure) as info:
        await open_endpoint(Recorder, EndpointSpec("127.0.0.1", imp.port),
                            _cluster(imp.port), material(ca, CALLER), 2.0)
    assert info.value.reason == "upstream_identity_mismatch"
    await asyncio.sleep(0.2)
    assert seen == []
