"""Fixtures for data plane tests: PKI, echo upstreams and in-process data planes on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import uvloop

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.http.context import Timeouts
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import ProxyConfig
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

from .mesh import Ca, EchoServer, spiffe


class Pki:
    def __init__(self) -> None:
        self.ca = Ca.make()
        self.other_ca = Ca.make("some other root")

    def material(self, ns: str, sa: str, ca: Ca | None = None) -> TlsMaterial:
        issuer = ca or self.ca
        chain, key = issuer.leaf(spiffe(ns, sa))
        return TlsMaterial(chain, key, self.ca.pem)


def pytest_asyncio_loop_factories(config: object, item: object) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The sidecar runs on uvloop: test the data plane there."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def echo() -> Iterator[Callable[[str], EchoServer]]:
    servers: list[EchoServer] = []

    def make(name: str) -> EchoServer:
        server = EchoServer(name).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


DataPlaneFactory = Callable[..., Awaitable[DataPlane]]


@pytest.fixture
async def dataplane(tmp_path: object) -> AsyncIterator[DataPlaneFactory]:
    planes: list[DataPlane] = []

    async def make(config: ProxyConfig, tls: TlsMaterial | None = None,
                   access_log: AccessLog | None = None, timeouts: Timeouts | None = None,
                   **kw: object) -> DataPlane:
        plane = DataPlane(ConfigHolder(), tls, access_log or AccessLog(None), Stats(),
                          timeouts=timeouts, **kw)  # type: ignore[arg-type]
        planes.append(plane)
        await plane.apply(config)
        return plane

    yield make
    for plane in planes:
        await plane.close()
