"""The ADS client against a small fake ADS server (grpc.aio, plaintext): ACK, NACK, reconnect."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))
import proxy_protos as P

from hyphal.local.ports import PortAllocator
from hyphal.proxy.bootstrap import NodeInfo
from hyphal.proxy.compile import Compiler, NodeContext, Snapshot
from hyphal.proxy.compile.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from hyphal.proxy.xds_client import (
    XdsClient,
    build_node,
)

_PORTS = PortAllocator()  # one per test process: never the same port twice

WILDCARD = {CLUSTER, LISTENER}


class FakeAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Serves `snapshot` per type; answers a request whose nonce is not the last one sent or
    whose names changed (the state-of-the-world rules), and records every request."""

    def __init__(self) -> None:
        self.snapshot: dict[str, tuple[str, list[Any]]] = {}
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.streams = 0
        self._out: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] | None = None
        self._nonce = 0
        self._sent: dict[str, str] = {}
        self._names: dict[str, tuple[str, ...]] = {}
        self.changed = asyncio.Event()

    def _response(self, type_url: str) -> discovery_pb2.DiscoveryResponse | None:
        if type_url not in self.snapshot:
            return None
        version, resources = self.snapshot[type_url]
        names = set(self._names.get(type_url, ()))
        if type_url not in WILDCARD:
            resources = [r for r in resources if _name(r) in names]
        self._nonce += 1
        self._sent[type_url] = str(self._nonce)
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            type_url=type_url,
            nonce=str(self._nonce),
            resources=[P.pack(r) for r in resources],
        )

    async def push(self, type_url: str) -> None:
        resp = self._response(type_url)
        if resp is not None and self._out is not None:
            await self._out.put(resp)

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        out: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()
        self._out = out
        self._sent = {}
        self._names = {}
        self.streams += 1

        async def pump() -> None:
            async for req in request_iterator:
                self.requests.append(req)
                self.changed.set()
                t = req.type_url
                names = tuple(sorted(req.resource_names))
                fresh = req.response_nonce != self._sent.get(t) or names != self._names.get(t)
                self._names[t] = names
                if fresh and (t in WILDCARD or names):
                    resp = self._response(t)
                    if resp is not None:
                        await out.put(resp)
            await out.put(None)

        task = asyncio.ensure_future(pump())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            task.cancel()


def _name(m: Any) -> str:
    return m.cluster_name if hasattr(m, "cluster_name") else m.name


def free_port() -> int:
    """Below the kernel's ephemeral range (hyphal.local.ports): a port taken from it can be
    grabbed by any outbound connection before the test binds it ("address already in use")."""
    return _PORTS.allocate()


async def start_server(fake: FakeAds, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def good_snapshot(fake: FakeAds, version: str = "1") -> None:
    pem, _ = P.make_root()
    fake.snapshot = {
        CLUSTER: (version, [P.eds_cluster()]),
        ENDPOINT: (version, [P.load_assignment()]),
        LISTENER: (version, [P.outbound_http_listener(), P.inbound_http_listener()]),
        ROUTE: (version, [P.route_configuration()]),
        SECRET: (version, [P.rootca_secret(pem)]),
    }


NODE = NodeInfo(
    id="product-v1-0.shop",
    cluster="product-v1",
    namespace="shop",
    service_account="product",
    workload_name="product-v1",
    labels=(),
    instance_ip="127.0.0.1",
    proxy_mode="sidecar",
    outbound_http_port=21001,
    ports=(),
    upstream_ports=(),
    metadata_json='{"NAMESPACE": "shop", "SERVICE_ACCOUNT": "product", "PROXY_MODE": "sidecar"}',
)


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Env:
    def __init__(self, fake: FakeAds, port: int, server: grpc.aio.Server) -> None:
        self.fake, self.port, self.server = fake, port, server

    async def restart(self, down_for: float = 0.5) -> None:
        """Stop the control plane (streams fail), stay down a while, start a new one."""
        await self.server.stop(None)
        await asyncio.sleep(down_for)
        self.server = await start_server(self.fake, self.port)


@pytest.fixture
async def env() -> AsyncIterator[tuple[FakeAds, Env, list[Snapshot], XdsClient[Snapshot]]]:
    fake = FakeAds()
    good_snapshot(fake)
    port = free_port()
    e = Env(fake, port, await start_server(fake, port))
    applied: list[Snapshot] = []
    client: XdsClient[Snapshot] = XdsClient(
        f"127.0.0.1:{port}",
        build_node(NODE),
        Compiler(NodeContext(identity=P.SPIFFE, app_ports=((8080, 21002),))),
        applied.append,
        backoff_initial=0.05,
        backoff_max=0.2,
        warming_timeout=1.0,
    )
    task = asyncio.ensure_future(client.run())
    try:
        yield fake, e, applied, client
    finally:
        client.stop()
        await asyncio.wait_for(task, 5)
        await e.server.stop(None)


def acks(fake: FakeAds, type_url: str) -> list[discovery_pb2.DiscoveryRequest]:
    return [r for r in fake.requests if r.type_url == type_url and r.response_nonce]


async def test_good_snapshot_is_applied_once_and_acked(env: Any) -> None:
    fake, _, applied, client = env
    assert await client.wait_config(5)
    await wait_for(lambda: all(acks(fake, t) for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)))
    first = fake.requests[0]
    assert first.node.id == "product-v1-0.shop" and first.node.cluster == "product-v1"
    assert first.node.metadata["NAMESPACE"] == "shop"
    assert {r.type_url for r in fake.requests if not r.response_nonce} >= {
        CLUSTER,
        LISTENER,
        SECRET,
    }
    eds = [r for r in fake.requests if r.type_url == ENDPOINT]
    assert list(eds[0].resource_names) == [P.OUT]
    assert list(next(r for r in fake.requests if r.type_url == SECRET).resource_names) == ["ROOTCA"]
    for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET):
        ack = acks(fake, t)[-1]
        assert ack.version_info == "1" and not ack.HasField("error_detail")
    assert len(applied) == 1  # the whole set compiled once, when complete
    cfg = applied[0].config
    assert {lst.name for lst in cfg.listeners} == {"outbound_http", "inbound|8080"}
    assert cfg.clusters[P.OUT].endpoints[0].port == 21003
    assert "outbound_http" in cfg.routes and applied[0].trust_bundle_pem
    st = {s.type_url: s for s in client.status().types}
    assert st[ROUTE].state == "acked" and st[ROUTE].version == "1"
    assert client.status().connected


async def test_bad_route_is_nacked_and_last_good_kept(env: Any) -> None:
    fake, _, applied, client = env
    assert await client.wait_config(5)
    await wait_for(lambda: bool(acks(fake, ROUTE)))
    bad = P.route_configuration()
    bad.virtual_hosts[0].routes[1].match.safe_regex.regex = "(unclosed"
    fake.snapshot[ROUTE] = ("2", [bad])
    await fake.push(ROUTE)
    await wait_for(lambda: acks(fake, ROUTE)[-1].HasField("error_detail"))
    nack = acks(fake, ROUTE)[-1]
    assert nack.version_info == "1"  # the last accepted version
    assert nack.error_detail.code == 3
    assert (
        "RouteConfiguration 'outbound_http': virtual_hosts[0].routes[1].match"
        in nack.error_detail.message
    )
    assert "invalid path regex" in nack.error_detail.message
    assert len(applied) == 1
    st = {s.type_url: s for s in client.status().types}
    assert st[ROUTE].state == "nacked" and "invalid path regex" in st[ROUTE].last_nack
    assert st[ROUTE].version == "1"
    # a good version afterwards is ACKed and applied
    fake.snapshot[ROUTE] = ("3", [P.route_configuration()])
    await fake.push(ROUTE)
    await wait_for(lambda: len(applied) == 2)
    assert acks(fake, ROUTE)[-1].version_info == "3"
    assert "RDS=3" in applied[-1].config.version


async def test_new_cluster_waits_for_its_endpoints(env: Any) -> None:
    fake, _, applied, client = env
    assert await client.wait_config(5)
    other = "outbound|9090||cart.shop.svc.cluster.local"
    fake.snapshot[CLUSTER] = ("2", [P.eds_cluster(), P.eds_cluster(other)])
    fake.snapshot[ENDPOINT] = ("2", [P.load_assignment(), P.load_assignment(other, (21020,))])
    await fake.push(CLUSTER)
    await wait_for(lambda: len(applied) == 2)
    assert applied[-1].config.clusters[other].endpoints[0].port == 21020
    eds = [r for r in fake.requests if r.type_url == ENDPOINT]
    assert set(eds[-1].resource_names) == {P.OUT, other} or set(eds[-2].resource_names) == {
        P.OUT,
        other,
    }


async def test_reconnects_after_server_restart_and_keeps_serving(env: Any) -> None:
    fake, e, applied, client = env
    assert await client.wait_config(5)
    streams_before = fake.streams
    await e.restart()
    assert client.has_config and len(applied) == 1  # last good config kept while it was down
    await wait_for(lambda: fake.streams > streams_before, timeout=8)
    await wait_for(lambda: len(applied) >= 2, timeout=8)  # resynced from scratch
    with_node = [r for r in fake.requests if r.node.id]
    assert len(with_node) == 2  # the node is announced again on the new stream
    assert client.status().connected
    assert {s.state for s in client.status().types} == {"acked"}
