"""The ADS server over a real grpc.aio server: ACK/NACK, subscriptions, pushes, garbage streams."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from xds_helpers import (
    AdsEnv,
    cla,
    cluster,
    listener,
    names_of,
    request,
    route,
    secret,
    snap,
)

from hyphal.control.xds.server import AdsServer
from hyphal.control.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    NodeInfo,
    Snapshot,
    StaticSource,
)

pytestmark = pytest.mark.timeout(30)


def full(port: int = 1) -> Snapshot:
    return snap(
        secret("ROOTCA"),
        cluster("a"),
        cluster("b"),
        cla("a", port),
        cla("b", port),
        listener("l1", port),
        route("r1", "a"),
    )


SUBSCRIBED = {CLUSTER: [], ENDPOINT: ["a", "b"], LISTENER: [], ROUTE: ["r1"], SECRET: ["ROOTCA"]}


async def subscribe_all(client: Any, node_id: str = "n1") -> dict[str, Any]:
    """Subscribe to the five types the way a sidecar does; return the first response of each."""
    await client.send(request(CLUSTER, node_id=node_id))
    got = {CLUSTER: await client.recv()}
    await client.ack(got[CLUSTER])
    for t in (ENDPOINT, LISTENER, ROUTE, SECRET):
        await client.send(request(t, SUBSCRIBED[t]))
        got[t] = await client.recv()
        await client.ack(got[t], SUBSCRIBED[t])
    return got


async def test_first_request_is_answered_and_plain_ack_is_not(env: AdsEnv) -> None:
    env.source.set(full())
    c = env.open()
    await c.send(request(CLUSTER, node_id="n1"))
    resp = await c.recv()
    assert resp.type_url == CLUSTER and names_of(resp) == ["a", "b"]
    assert resp.nonce and resp.version_info
    await c.ack(resp)
    await c.expect_nothing()
    [conn] = env.ads.connections()
    [cds] = conn.types
    assert conn.node_id == "n1" and conn.peer_identity is None
    assert cds.sent_version == resp.version_info == cds.acked_version
    assert cds.last_nack is None


async def test_nack_is_logged_recorded_and_not_resent(
    env: AdsEnv, caplog: pytest.LogCaptureFixture
) -> None:
    env.source.set(full())
    c = env.open()
    await c.send(request(CLUSTER, node_id="n1"))
    resp = await c.recv()
    with caplog.at_level(logging.WARNING, logger="hyphal.control.xds"):
        await c.send(
            request(CLUSTER, nonce=resp.nonce, version="", error="cluster a: bad lb_policy")
        )
        await c.expect_nothing()
    [cds] = env.ads.connections()[0].types
    assert cds.acked_version is None and cds.sent_version == resp.version_info
    assert cds.last_nack == "cluster a: bad lb_policy"
    [rec] = [r for r in caplog.records if "NACK" in r.getMessage()]
    msg = rec.getMessage()
    assert rec.levelno == logging.WARNING
    assert "'n1'" in msg and "CDS" in msg and resp.nonce in msg and "bad lb_policy" in msg
    # A push that does not change clusters does not resend the NACKed version.
    env.source.set(full(port=2))  # endpoints and listener change, clusters do not
    await asyncio.sleep(0.2)
    assert c.responses.empty()


async def test_changed_resource_names_with_old_nonce_are_answered(env: AdsEnv) -> None:
    env.source.set(full())
    c = env.open()
    await c.send(request(ENDPOINT, ["a"], node_id="n1"))
    r1 = await c.recv()
    assert names_of(r1) == ["a"]
    await c.ack(r1, ["a"])
    await c.expect_nothing(0.1)
    # The client adds "b" still echoing the nonce of r1 (it has had no newer response).
    await c.send(request(ENDPOINT, ["a", "b"], nonce=r1.nonce, version=r1.version_info))
    r2 = await c.recv()
    assert names_of(r2) == ["a", "b"] and r2.nonce != r1.nonce


async def test_stale_nonce_is_ignored(env: AdsEnv) -> None:
    env.source.set(full())
    c = env.open()
    await c.send(request(ENDPOINT, ["a"], node_id="n1"))
    r1 = await c.recv()
    await c.send(request(ENDPOINT, ["a", "b"], nonce=r1.nonce))
    r2 = await c.recv()
    # A late request still carrying r1's nonce is stale: not answered, no state change.
    await c.send(request(ENDPOINT, ["b"], nonce=r1.nonce, error="late"))
    await c.expect_nothing()
    [eds] = env.ads.connections()[0].types
    assert eds.subscribed == ("a", "b") and eds.last_nack is None
    assert eds.sent_nonce == r2.nonce


async def test_named_subscription_waits_for_the_resource_then_sees_it_go(env: AdsEnv) -> None:
    env.source.set(snap(listener("other")))
    c = env.open()
    await c.send(request(LISTENER, ["greeter.demo:50051"], node_id="n1"))
    await c.expect_nothing()  # not "does not exist": wait until it exists
    env.source.set(snap(listener("other"), listener("greeter.demo:50051")))
    r1 = await c.recv()
    assert names_of(r1) == ["greeter.demo:50051"]
    await c.ack(r1, ["greeter.demo:50051"])
    env.source.set(snap(listener("other")))
    r2 = await c.recv()
    assert r2.type_url == LISTENER and names_of(r2) == []  # state of the world: it is gone


async def test_debounce_turns_a_burst_into_one_push(make_env: Any) -> None:
    env: AdsEnv = await make_env(debounce=0.25)
    env.source.set(full())
    c = env.open()
    await subscribe_all(c)
    pushes = env.ads.push_count
    for i in range(20):  # 20 changes within ~40 ms
        env.source.set(full(port=100 + i))
        await asyncio.sleep(0.002)
    got = [await c.recv() for _ in range(2)]  # EDS and LDS changed
    await c.expect_nothing(0.3)
    assert env.ads.push_count == pushes + 1
    assert [r.type_url for r in got] == [ENDPOINT, LISTENER]
    final = full(port=119)
    assert [r.version_info for r in got] == [final.version(ENDPOINT), final.version(LISTENER)]


async def test_debounce_max_delay_caps_continuous_churn(make_env: Any) -> None:
    env: AdsEnv = await make_env(debounce=0.1, max_delay=0.3)
    env.source.set(full())
    c = env.open()
    await subscribe_all(c)
    pushes = env.ads.push_count
    loop = asyncio.get_running_loop()
    start = loop.time()
    i = 0
    while loop.time() - start < 0.75:  # a change every 20 ms never leaves 100 ms of quiet
        env.source.set(full(port=200 + i))
        i += 1
        await asyncio.sleep(0.02)
    assert env.ads.push_count - pushes >= 2


async def test_push_order_is_make_before_break_and_only_changed_types(env: AdsEnv) -> None:
    env.source.set(full())
    c = env.open()
    await subscribe_all(c)
    changed = snap(
        secret("ROOTCA", b"other"),
        cluster("a", 2),
        cluster("b"),
        cla("a", 5),
        cla("b", 1),
        listener("l1", 5),
        route("r1", "b"),
    )
    env.source.set(changed)
    got = [await c.recv() for _ in range(5)]
    assert [r.type_url for r in got] == [SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE]
    for r in got:
        await c.ack(r, SUBSCRIBED[r.type_url])
    # Now change only the route: only RDS is sent.
    env.source.set(
        snap(
            secret("ROOTCA", b"other"),
            cluster("a", 2),
            cluster("b"),
            cla("a", 5),
            cla("b", 1),
            listener("l1", 5),
            route("r1", "a"),
        )
    )
    only = await c.recv()
    assert only.type_url == ROUTE
    await c.expect_nothing()


async def test_snapshots_are_per_node(make_env: Any) -> None:
    class PerNode(StaticSource):
        def snapshot_for(self, node: NodeInfo) -> Snapshot:
            return snap(cluster(f"for-{node.id}"), cluster(f"ns-{node.namespace}"))

    env: AdsEnv = await make_env(PerNode())
    a, b = env.open(), env.open()
    await a.send(request(CLUSTER, node_id="alpha", NAMESPACE="shop"))
    await b.send(request(CLUSTER, node_id="beta", NAMESPACE="web"))
    assert names_of(await a.recv()) == ["for-alpha", "ns-shop"]
    assert names_of(await b.recv()) == ["for-beta", "ns-web"]


async def test_connect_and_disconnect_hooks_see_the_node(make_env: Any) -> None:
    seen: list[tuple[str, str, str]] = []
    done = asyncio.Event()

    async def bye(n: NodeInfo) -> None:
        seen.append(("bye", n.id, n.namespace))
        done.set()

    env: AdsEnv = await make_env(
        on_connect=lambda n: seen.append(("hello", n.id, n.namespace)), on_disconnect=bye
    )
    env.source.set(full())
    c = env.open()
    await c.send(request(CLUSTER, node_id="n1", NAMESPACE="shop", PROXY_MODE="sidecar"))
    await c.recv()
    assert seen == [("hello", "n1", "shop")]
    assert env.ads.connections()[0].node.proxy_mode == "sidecar"
    c.close()
    await asyncio.wait_for(done.wait(), 2)
    assert seen[-1] == ("bye", "n1", "shop")
    assert env.ads.connections() == []


async def test_garbage_streams_are_refused_and_healthy_ones_keep_working(env: AdsEnv) -> None:
    env.source.set(full())
    healthy = env.open()
    await healthy.send(request(ENDPOINT, ["a"], node_id="ok"))
    r = await healthy.recv()
    await healthy.ack(r, ["a"])

    no_node = env.open()
    await no_node.send(request(CLUSTER))
    code, details = await no_node.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "node.id" in details

    bad_type = env.open()
    await bad_type.send(request("type.googleapis.com/not.a.Type", node_id="x"))
    code, details = await bad_type.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not.a.Type" in details

    later_bad = env.open()
    await later_bad.send(request(CLUSTER, node_id="y"))
    await later_bad.recv()
    await later_bad.send(request(""))
    code, details = await later_bad.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "type_url is empty" in details

    raw = env.channel.stream_stream(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
    )()
    await raw.write(b"\xff\xff\xff\xff garbage")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(raw.read(), 2)
    assert info.value.code() != grpc.StatusCode.OK

    delta = env.channel.stream_stream(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
    )()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(delta.read(), 2)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    # The healthy stream still gets pushes.
    env.source.set(full(port=9))
    pushed = await healthy.recv()
    assert pushed.type_url == ENDPOINT and names_of(pushed) == ["a"]
    assert [c.node_id for c in env.ads.connections()] == ["ok"]


async def test_change_notified_from_another_thread_is_pushed(env: AdsEnv) -> None:
    env.source.set(full())
    c = env.open()
    await c.send(request(CLUSTER, node_id="n1"))
    await c.ack(await c.recv())
    await asyncio.to_thread(env.source.set, snap(cluster("from-thread")))
    assert names_of(await c.recv()) == ["from-thread"]


async def test_a_failing_snapshot_for_one_node_does_not_stop_pushes_to_others(
    make_env: Any,
) -> None:
    class Flaky(StaticSource):
        def snapshot_for(self, node: NodeInfo) -> Snapshot:
            if node.id == "bad" and env.ads.push_count > 0:
                raise RuntimeError("translation bug")
            return super().snapshot_for(node)

    env: AdsEnv = await make_env(Flaky(full()))
    bad, good = env.open(), env.open()
    for client, node_id in ((bad, "bad"), (good, "good")):
        await client.send(request(CLUSTER, node_id=node_id))
        await client.ack(await client.recv())
    env.source.set(snap(cluster("new")))
    assert names_of(await good.recv()) == ["new"]
    await bad.expect_nothing(0.1)
    assert {c.node_id for c in env.ads.connections()} == {"bad", "good"}


async def test_unsent_responses_are_coalesced_per_type_and_drained_in_order() -> None:
    from hyphal.control.xds.server import _Connection, _next_in_order
    from hyphal.control.xds.wire import decode

    ads = AdsServer(StaticSource(full()))
    conn = _Connection(1, NodeInfo("slow"), "test", full())
    for t, names in SUBSCRIBED.items():
        conn.stream.receive(request(t, names))  # answered, but imagine nothing is written yet
    ads._send(conn, conn.stream.update(full(port=2)))
    ads._send(conn, conn.stream.update(full(port=3)))
    assert len(conn.pending) == 2  # EDS and LDS, each only in its newest version
    drained = [decode(_next_in_order(conn.pending)) for _ in range(2)]
    assert [r.type_url for r in drained] == [ENDPOINT, LISTENER]
    status = {s.type_url: s for s in conn.stream.status()}
    assert [r.nonce for r in drained] == [status[ENDPOINT].sent_nonce, status[LISTENER].sent_nonce]
    assert drained[0].version_info == full(port=3).version(ENDPOINT)
