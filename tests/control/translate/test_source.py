"""MeshSnapshotSource: caching per node shape, notifications, registry via connect hooks."""

from __future__ import annotations

import time

from translate_helpers import CA, SHOP, load, proxyless, sidecar

from hyphal.control.translate import naming
from hyphal.control.translate.source import MeshSnapshotSource
from hyphal.control.xds.snapshot import NodeInfo, Snapshot, SnapshotSource

FQDN = "product.shop.svc.cluster.local"


def _info(i: int) -> NodeInfo:
    md = {
        "NAMESPACE": "shop", "SERVICE_ACCOUNT": "frontend", "LABELS": {"app": "frontend"},
        "PROXY_MODE": "sidecar", "OUTBOUND_HTTP_PORT": 21000.0, "INSTANCE_IP": "127.0.0.1",
        "PORTS": [{"name": "http", "port": 8080.0, "protocol": "HTTP",
                   "app_port": 21001.0, "inbound_port": 21002.0}],
    }  # fmt: skip
    return NodeInfo(id=f"frontend-{i}.shop", cluster="frontend", metadata=md, namespace="shop")


def test_implements_the_ads_protocol_and_caches_identical_nodes() -> None:
    src = MeshSnapshotSource(load(SHOP), ca_bundle=CA)
    assert isinstance(src, SnapshotSource)
    start = time.perf_counter()
    snaps = {id(src.snapshot_for(_info(i))) for i in range(1000)}
    elapsed = time.perf_counter() - start
    assert len(snaps) == 1 and src.translations == 1
    assert elapsed < 2.0
    snap = src.snapshot_for(_info(0))
    assert isinstance(snap, Snapshot)
    assert "outbound_http" in snap.names(naming.LISTENER_TYPE)


def test_update_resources_notifies_and_retranslates() -> None:
    src = MeshSnapshotSource(load(SHOP), ca_bundle=CA)
    calls: list[int] = []
    src.add_listener(lambda: calls.append(1))
    before = src.snapshot_for(_info(0))
    src.update_resources(load(SHOP.split("---")[0]))  # only the frontend Service is left
    assert calls
    after = src.snapshot_for(_info(0))
    assert f"outbound|8080||{FQDN}" in before.names(naming.CLUSTER_TYPE)
    assert f"outbound|8080||{FQDN}" not in after.names(naming.CLUSTER_TYPE)


def test_connected_sidecars_become_endpoints_until_their_last_stream_closes() -> None:
    src = MeshSnapshotSource(load(SHOP), ca_bundle=CA)
    calls: list[int] = []
    src.add_listener(lambda: calls.append(1))
    product = sidecar(
        "product-v1",
        "shop",
        {"app": "product"},
        "product",
        base=22000,
        ports=[
            {
                "name": "web",
                "port": 9080,
                "protocol": "HTTP",
                "app_port": 22001,
                "inbound_port": 22002,
            }
        ],
    )
    client = proxyless()

    def endpoints() -> int:
        snap = src.snapshot_for(client)
        cla = snap.names(naming.ENDPOINT_TYPE)[f"outbound|8080||{FQDN}"]
        from hyphal.control.translate.pb import endpoint_pb2

        m = endpoint_pb2.ClusterLoadAssignment()
        cla.Unpack(m)
        return len(m.endpoints[0].lb_endpoints)

    assert endpoints() == 0
    src.node_connected(product)
    src.node_connected(product)  # a second stream of the same node
    assert endpoints() == 1 and calls
    src.node_disconnected(product)
    assert endpoints() == 1
    src.node_disconnected(product)
    assert endpoints() == 0


def test_bad_node_metadata_gets_an_empty_snapshot() -> None:
    src = MeshSnapshotSource(load(SHOP), ca_bundle=CA)
    bad = NodeInfo(id="x", metadata={"PROXY_MODE": "sidecar"})
    assert src.snapshot_for(bad).versions == {}
