"""Helpers for the ADS server tests: resource builders, requests, a raw ADS client, AdsEnv."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format, message, struct_pb2

from hyphal.control.xds.server import AdsServer
from hyphal.control.xds.snapshot import Snapshot

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.seconds = timeout_s
    c.eds_cluster_config.eds_config.CopyFrom(
        config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    )
    return c


def cla(name: str, *ports: int) -> endpoint_pb2.ClusterLoadAssignment:
    lbs = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address={"socket_address": {"address": "127.0.0.1", "port_value": p}}
            ),
        )
        for p in ports
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lbs)],
    )


def listener(name: str, port: int = 1) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name, address={"socket_address": {"address": "127.0.0.1", "port_value": port}}
    )


def route(name: str, cluster_name: str = "c") -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            rc.VirtualHost(
                name="vh",
                domains=["*"],
                routes=[
                    rc.Route(
                        match=rc.RouteMatch(prefix="/"),
                        route=rc.RouteAction(cluster=cluster_name),
                    )
                ],
            )
        ],
    )


def secret(name: str, pem: bytes = b"-----BEGIN CERTIFICATE-----\n") -> secret_pb2.Secret:
    s = secret_pb2.Secret(name=name)
    s.validation_context.trusted_ca.inline_bytes = pem
    return s


def snap(*messages: message.Message) -> Snapshot:
    return Snapshot.from_messages(messages)


def node(node_id: str, **metadata: Any) -> base_pb2.Node:
    md = struct_pb2.Struct()
    json_format.ParseDict(metadata, md)
    return base_pb2.Node(id=node_id, cluster="test", metadata=md)


def request(
    type_url: str,
    names: Iterable[str] = (),
    *,
    nonce: str = "",
    version: str = "",
    node_id: str | None = None,
    error: str | None = None,
    **metadata: Any,
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
    )
    if node_id is not None:
        req.node.CopyFrom(node(node_id, **metadata))
    if error is not None:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req


@dataclass
class AdsClient:
    """A raw ADS stream: write requests, read responses from a queue filled in the background."""

    call: Any
    responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = field(default_factory=asyncio.Queue)
    done: asyncio.Future[grpc.StatusCode] | None = None
    reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.done is not None
        try:
            while True:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    break
                await self.responses.put(msg)
            self.done.set_result(await self.call.code())
        except grpc.aio.AioRpcError as err:
            self.done.set_result(err.code())
        except asyncio.CancelledError:
            raise

    async def send(self, req: discovery_pb2.DiscoveryRequest) -> None:
        await self.call.write(req)

    async def recv(self, timeout: float = 2.0) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def expect_nothing(self, within: float = 0.3) -> None:
        await asyncio.sleep(within)
        assert self.responses.empty(), f"unexpected response: {self.responses.get_nowait()}"

    async def ack(self, resp: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        await self.send(request(resp.type_url, names, nonce=resp.nonce, version=resp.version_info))

    async def status(self, timeout: float = 2.0) -> tuple[grpc.StatusCode, str]:
        assert self.done is not None
        code = await asyncio.wait_for(asyncio.shield(self.done), timeout)
        return code, await self.call.details()

    def close(self) -> None:
        self.call.cancel()
        if self.reader is not None:
            self.reader.cancel()


def names_of(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for a in resp.resources:
        if a.type_url.endswith("ClusterLoadAssignment"):
            m: Any = endpoint_pb2.ClusterLoadAssignment()
            a.Unpack(m)
            out.append(m.cluster_name)
        else:
            # every other served type has `name` as field 1
            m = {
                "Listener": listener_pb2.Listener,
                "RouteConfiguration": route_pb2.RouteConfiguration,
                "Cluster": cluster_pb2.Cluster,
                "Secret": secret_pb2.Secret,
            }[a.type_url.rsplit(".", 1)[1]]()
            a.Unpack(m)
            out.append(m.name)
    return out


@dataclass
class AdsEnv:
    """A started ADS server on 127.0.0.1 (plaintext) and a way to open raw streams to it."""

    ads: AdsServer
    source: Any
    server: grpc.aio.Server
    port: int
    channel: grpc.aio.Channel
    clients: list[AdsClient] = field(default_factory=list)

    def open(self) -> AdsClient:
        call = self.channel.stream_stream(
            ADS_METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )()
        client = AdsClient(call)
        client.start()
        self.clients.append(client)
        return client
