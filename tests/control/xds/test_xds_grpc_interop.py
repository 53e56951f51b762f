"""Interop: grpcio's built-in xDS client (proxyless gRPC) follows what our ADS server serves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import any_pb2, wrappers_pb2
from grpc_interop import grpc_interop, read_line

from hyphal.control.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, StaticSource

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

TARGET = "greeter.demo:50051"
CALLS = 1000


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())


def _pack(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def greeter_snapshot(port_a: int, port_b: int, weight_a: int, weight_b: int) -> Snapshot:
    manager = hcm.HttpConnectionManager(
        rds=hcm.Rds(config_source=_ads(), route_config_name=TARGET),
        http_filters=[
            hcm.HttpFilter(
                name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())
            )
        ],
    )
    lis = listener_pb2.Listener(
        name=TARGET, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(manager))
    )
    weighted = rc.WeightedCluster(
        clusters=[
            rc.WeightedCluster.ClusterWeight(
                name="A", weight=wrappers_pb2.UInt32Value(value=weight_a)
            ),
            rc.WeightedCluster.ClusterWeight(
                name="B", weight=wrappers_pb2.UInt32Value(value=weight_b)
            ),
        ]
    )
    routes = route_pb2.RouteConfiguration(
        name=TARGET,
        virtual_hosts=[
            rc.VirtualHost(
                name=TARGET,
                domains=[TARGET, "greeter.demo"],
                routes=[
                    rc.Route(
                        match=rc.RouteMatch(prefix=""),
                        route=rc.RouteAction(weighted_clusters=weighted),
                    )
                ],
            )
        ],
    )
    messages: list[Any] = [lis, routes]
    for name, port in (("A", port_a), ("B", port_b)):
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        c.eds_cluster_config.eds_config.CopyFrom(_ads())
        c.connect_timeout.seconds = 1
        endpoint = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address={"socket_address": {"address": "127.0.0.1", "port_value": port}}
            ),
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
        )
        locality = endpoint_components_pb2.LocalityLbEndpoints(
            locality={}, lb_endpoints=[endpoint], load_balancing_weight={"value": 1}
        )
        messages += [c, endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[locality])]
    return Snapshot.from_messages(messages)


async def test_proxyless_grpc_client_follows_weighted_clusters() -> None:
    async with grpc_interop() as it:
        port_a = await it.backend(b"a")
        port_b = await it.backend(b"b")
        source = StaticSource(greeter_snapshot(port_a, port_b, 80, 20))
        ads_server = await it.serve(source)
        node = {"id": "greeter-client", "metadata": {"PROXY_MODE": "grpc"}}
        proc = await it.client(TARGET, CALLS, node)
        first = await read_line(proc)
        assert first["a"] + first["b"] == CALLS
        assert abs(first["a"] / CALLS - 0.80) <= 0.05, first

        [conn] = ads_server.connections()
        status = {t.type_url: t for t in conn.types}
        assert set(status) == {LISTENER, ROUTE, CLUSTER, ENDPOINT}
        for t in status.values():
            assert t.last_nack is None, t
            assert t.acked_version == t.sent_version, t

        changed = greeter_snapshot(port_a, port_b, 20, 80)
        source.set(changed)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        switched = await read_line(proc)
        assert switched["seconds"] <= 1.0, switched
        # The client is still connected (making its last calls): it ACKed the new routes.
        for _ in range(100):
            rds = {t.type_url: t for t in ads_server.connections()[0].types}[ROUTE]
            if rds.acked_version == changed.version(ROUTE):
                break
            await asyncio.sleep(0.01)
        assert rds.acked_version == changed.version(ROUTE) and rds.last_nack is None, rds
        after = await read_line(proc)
        assert abs(after["a"] / CALLS - 0.20) <= 0.05, after
        print(f"interop: before {first}, switched in {switched['seconds']:.3f} s, after {after}")
