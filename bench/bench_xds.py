"""Benchmark: how fast the ADS server brings N connected clients to a new snapshot.

    .venv/bin/python bench/bench_xds.py [--clients 100,1000] [--services 20] [--debounce 0]
                                        [--change all|eds] [--rounds 3]

One process: an `AdsServer` on a grpc.aio server at 127.0.0.1 (plaintext port), and N raw ADS
clients (grpc.aio, one channel each, as N sidecars would have), each subscribing CDS and LDS
wildcard, EDS for every cluster and RDS `outbound_http`, and ACKing every response. Then the
snapshot changes (`all`: every type changes; `eds`: only endpoints) and we measure the time
from `source.set()` until every client has ACKed the new version of every changed type. The
clients share the process (and its CPU) with the server, so the numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from hyphal.control.xds.server import AdsServer
from hyphal.control.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, StaticSource

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
TIMEOUT = 60.0  # hard bound on any wait


def make_snapshot(services: int, generation: int, change: str) -> Snapshot:
    """`services` clusters with 3 endpoints each, one listener, one route table."""
    g_all = generation if change == "all" else 0
    msgs: list[Any] = []
    names = [f"outbound|8080||svc{i}.bench.svc.cluster.local" for i in range(services)]
    for i, name in enumerate(names):
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        c.eds_cluster_config.eds_config.ads.SetInParent()
        c.connect_timeout.seconds = 1 + g_all % 5
        msgs.append(c)
        lbs = [
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(
                    address={
                        "socket_address": {
                            "address": "127.0.0.1",
                            "port_value": 20000 + i * 10 + k + generation % 7,
                        }
                    }
                ),
                load_balancing_weight={"value": 1},
            )
            for k in range(3)
        ]
        msgs.append(
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=name,
                endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lbs)],
            )
        )
    msgs.append(
        listener_pb2.Listener(
            name="outbound_http",
            address={"socket_address": {"address": "127.0.0.1", "port_value": 15001 + g_all}},
        )
    )
    msgs.append(
        route_pb2.RouteConfiguration(
            name="outbound_http",
            virtual_hosts=[
                rc.VirtualHost(
                    name=name,
                    domains=[f"svc{i}.bench", f"svc{i}.bench:8080"],
                    routes=[
                        rc.Route(
                            match=rc.RouteMatch(prefix="/"),
                            route=rc.RouteAction(cluster=name, timeout={"seconds": 1 + g_all % 9}),
                        )
                    ],
                )
                for i, name in enumerate(names)
            ],
        )
    )
    _ = config_source_pb2  # keep the import explicit for readers of the shapes above
    return Snapshot.from_messages(msgs)


@dataclass
class Fleet:
    """Shared bookkeeping of all simulated clients."""

    target: dict[str, str] = field(default_factory=dict)  # type_url -> version to reach
    done: int = 0
    all_done: asyncio.Event = field(default_factory=asyncio.Event)
    n: int = 0
    round: int = 0

    def reset(self, target: dict[str, str], n: int) -> None:
        self.target, self.done, self.n = target, 0, n
        self.round += 1
        self.all_done = asyncio.Event()


async def run_client(
    i: int, channel: grpc.aio.Channel, cluster_names: list[str], fleet: Fleet
) -> None:
    call = channel.stream_stream(
        METHOD,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )()
    subs = {CLUSTER: [], ENDPOINT: cluster_names, LISTENER: [], ROUTE: ["outbound_http"]}
    node = base_pb2.Node(id=f"bench-{i}.bench", cluster="bench")
    first = True
    for t, names in subs.items():
        req = discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names)
        if first:
            req.node.CopyFrom(node)
            first = False
        await call.write(req)
    acked: dict[str, str] = {}
    counted = 0  # the last round in which this client reached the target
    while True:
        resp = await call.read()
        if resp is grpc.aio.EOF:
            return
        t = resp.type_url
        await call.write(
            discovery_pb2.DiscoveryRequest(
                type_url=t,
                resource_names=subs[t],
                version_info=resp.version_info,
                response_nonce=resp.nonce,
            )
        )
        acked[t] = resp.version_info
        if counted != fleet.round and all(acked.get(k) == v for k, v in fleet.target.items()):
            counted = fleet.round
            fleet.done += 1
            if fleet.done >= fleet.n:
                fleet.all_done.set()


def targets(snapshot: Snapshot) -> dict[str, str]:
    return {t: snapshot.version(t) for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}


class InProcServer:
    """The ADS server on this process's event loop (clients and server share one CPU)."""

    def __init__(self, services: int, debounce: float, change: str) -> None:
        self.services, self.change = services, change
        self.source = StaticSource(make_snapshot(services, 0, change))
        self.ads = AdsServer(self.source, debounce=debounce, max_delay=max(1.0, debounce))
        self.server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100_000)])
        self.ads.add_to_server(self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def start(self) -> None:
        await self.server.start()
        await self.ads.start()

    async def set(self, gen: int) -> None:
        self.source.set(make_snapshot(self.services, gen, self.change))

    async def cpu(self) -> float:
        return time.process_time()

    async def unacked(self) -> tuple[int, int]:
        """(connections, connections with a sent version not yet ACKed)."""
        conns = self.ads.connections()
        stale = sum(any(t.acked_version != t.sent_version for t in c.types) for c in conns)
        return len(conns), stale

    async def stop(self) -> None:
        await self.server.stop(None)
        await self.ads.stop()


def _child(conn: Connection, services: int, debounce: float, change: str) -> None:
    """Child process main: run an InProcServer, obey (command, arg) messages from the parent."""
    _install_uvloop()

    async def serve() -> None:
        srv = InProcServer(services, debounce, change)
        await srv.start()
        conn.send(srv.port)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
        try:
            while True:
                cmd, arg = await inbox.get()
                if cmd == "set":
                    await srv.set(arg)
                    conn.send("ok")
                elif cmd == "unacked":
                    conn.send(await srv.unacked())
                elif cmd == "cpu":
                    conn.send(time.process_time())
                else:
                    return
        finally:
            loop.remove_reader(conn.fileno())
            await srv.stop()

    asyncio.run(serve())


class ChildServer:
    """The ADS server in a child process, so server and clients each have a core."""

    def __init__(self, services: int, debounce: float, change: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(
            target=_child, args=(child_conn, services, debounce, change), daemon=True
        )
        self.port = 0
        self.unanswered = 0  # "ok" replies to `set` not read yet (not awaited while timing)

    async def _call(self, cmd: str, arg: int = 0) -> Any:
        self.conn.send((cmd, arg))
        return await asyncio.to_thread(self.conn.recv)

    async def start(self) -> None:
        self.proc.start()
        if not await asyncio.to_thread(self.conn.poll, TIMEOUT):
            raise RuntimeError("the ADS server child process did not start")
        self.port = self.conn.recv()

    async def set(self, gen: int) -> None:
        self.conn.send(("set", gen))
        self.unanswered += 1

    async def unacked(self) -> tuple[int, int]:
        for _ in range(self.unanswered):
            await asyncio.to_thread(self.conn.recv)
        self.unanswered = 0
        result: tuple[int, int] = await self._call("unacked")
        return result

    async def cpu(self) -> float:
        """Server process CPU seconds so far."""
        for _ in range(self.unanswered):
            await asyncio.to_thread(self.conn.recv)
        self.unanswered = 0
        result: float = await self._call("cpu")
        return result

    async def stop(self) -> None:
        try:
            self.conn.send(("stop", 0))
        finally:
            await asyncio.to_thread(self.proc.join, 10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()


async def bench(
    n: int, services: int, debounce: float, change: str, rounds: int, where: str
) -> None:
    gen = 0
    snapshot = make_snapshot(services, gen, change)
    srv: InProcServer | ChildServer = (
        InProcServer(services, debounce, change)
        if where == "inproc"
        else ChildServer(services, debounce, change)
    )
    await srv.start()
    fleet = Fleet()
    current = targets(snapshot)
    fleet.reset(current, n)
    names = sorted(snapshot.names(CLUSTER))
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") for _ in range(n)]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(run_client(i, ch, names, fleet)) for i, ch in enumerate(channels)]
    try:
        await asyncio.wait_for(fleet.all_done.wait(), TIMEOUT)
        connect = time.perf_counter() - t0
        print(f"  {n} clients connected, subscribed and ACKed everything in {connect:.3f} s")
        for r in range(rounds):
            gen += 1
            snapshot = make_snapshot(services, gen, change)
            new = targets(snapshot)
            fleet.reset({t: v for t, v in new.items() if v != current[t]}, n)
            current = new
            cpu0 = await srv.cpu()
            own0 = time.process_time()
            t1 = time.perf_counter()
            await srv.set(gen)
            await asyncio.wait_for(fleet.all_done.wait(), TIMEOUT)
            took = time.perf_counter() - t1
            own = time.process_time() - own0
            await asyncio.sleep(0.2)  # let the server read the last ACKs before reading its CPU
            cpu = await srv.cpu() - cpu0
            print(
                f"  round {r + 1}: {len(fleet.target)} changed types "
                f"({', '.join(sorted(t.rsplit('.', 1)[1] for t in fleet.target))}) "
                f"-> all {n} ACKed in {took * 1e3:.0f} ms (debounce {debounce * 1e3:.0f} ms); "
                + (
                    f"CPU: server {cpu * 1e3:.0f} ms, clients {own * 1e3:.0f} ms"
                    if where == "process"
                    else f"CPU: {own * 1e3:.0f} ms (server and clients in one process)"
                )
            )
        # Clients count an ACK when they write it; check the server has read them all.
        await asyncio.sleep(0.5)
        conns, stale = await srv.unacked()
        assert conns == n and stale == 0, f"server sees {conns} streams, {stale} not ACKed"
        print(f"  server: {conns} streams, all ACKed")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        await srv.stop()


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="100,1000")
    p.add_argument("--services", type=int, default=20)
    p.add_argument("--debounce", type=float, default=0.0)
    p.add_argument("--change", choices=("all", "eds"), default="all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--server",
        choices=("process", "inproc"),
        default="process",
        help="run the ADS server in a child process (default) or beside the clients",
    )
    args = p.parse_args()
    loop_name = _install_uvloop()
    print(
        f"bench_xds: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, {loop_name}; "
        f"{args.services} services, change={args.change}, server={args.server}"
    )
    for n in (int(x) for x in args.clients.split(",")):
        print(f"N = {n}")
        asyncio.run(bench(n, args.services, args.debounce, args.change, args.rounds, args.server))


if __name__ == "__main__":
    main()
