"""The ADS server: grpc.aio transport around `AdsStream`, debounced pushes, connection status.

Each stream is one handler coroutine (the writer) plus one reader task; no threads. All
protocol state changes are synchronous calls into the stream's `AdsStream`, so requests and
pushes never interleave halfway. Responses wait as ready-made bytes (`ResponseEncoder` shares
encoded bodies across streams) in a per-stream slot per type URL, drained in make-before-break
order. A newer response for a type replaces an unsent older one: in state of the world only the
latest matters, the stream state already expects the newer nonce, and a slow client costs at
most five pending messages however many pushes it misses.

A change notification from the `SnapshotSource` (from any thread) starts a debounce window;
when it closes, every connected node's snapshot is fetched again and the types whose content
changed are pushed in make-before-break order (SDS, CDS, EDS, LDS, RDS).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from hyphal.control.xds.auth import StreamRefused, check_claim, peer_of
from hyphal.control.xds.debounce import Debouncer
from hyphal.control.xds.protocol import (
    AdsProtocolError,
    AdsStream,
    Outcome,
    Response,
    TypeStatus,
)
from hyphal.control.xds.snapshot import (
    PUSH_ORDER,
    NodeInfo,
    Snapshot,
    SnapshotSource,
    short_name,
)
from hyphal.control.xds.wire import ResponseEncoder

log = logging.getLogger("hyphal.control.xds")

SERVICE_NAME = "envoy.service.discovery.v3.AggregatedDiscoveryService"

# A hook may be sync or return an awaitable (scheduled as a task, never awaited inline).
Hook = Callable[[NodeInfo], object]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One connected ADS stream, for status pages and `hyphal proxy-config`."""

    id: int
    node: NodeInfo
    peer: str  # transport address, e.g. "ipv4:127.0.0.1:53122"
    peer_identity: str | None  # SPIFFE id proven by mTLS; None on the plaintext port
    connected_since: float  # time.time()
    types: tuple[TypeStatus, ...]

    @property
    def node_id(self) -> str:
        return self.node.id


class _Connection:
    __slots__ = ("closed", "error", "id", "node", "peer", "pending", "since", "stream", "wake")

    def __init__(self, conn_id: int, node: NodeInfo, peer: str, snapshot: Snapshot) -> None:
        self.id = conn_id
        self.node = node
        self.peer = peer
        self.since = time.time()
        self.stream = AdsStream(node.id, snapshot)
        self.pending: dict[str, bytes] = {}  # type URL -> encoded response not yet written
        self.wake = asyncio.Event()
        self.error: StreamRefused | None = None
        self.closed = False

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            self.id, self.node, self.peer, self.node.peer_identity, self.since, self.stream.status()
        )


def _identity(data: bytes) -> bytes:
    return data


def _next_in_order(pending: dict[str, bytes]) -> bytes:
    """Pop the pending response that comes first in make-before-break order."""
    for type_url in PUSH_ORDER:
        data = pending.pop(type_url, None)
        if data is not None:
            return data
    raise AssertionError(f"pending responses of unknown types: {sorted(pending)}")


class AdsServer:
    """Serves `StreamAggregatedResources` (state of the world) from a `SnapshotSource`.

    Register with `add_to_server(server)`, then `await start()` inside the server's event loop
    (streams also start it lazily). `on_connect`/`on_disconnect` see every authenticated
    stream's node. `trust_domain`, when given, must also match the client certificate.
    """

    def __init__(
        self,
        source: SnapshotSource,
        *,
        debounce: float = 0.1,
        max_delay: float = 1.0,
        on_connect: Hook | None = None,
        on_disconnect: Hook | None = None,
        trust_domain: str | None = None,
    ) -> None:
        self._source = source
        self._debouncer = Debouncer(quiet=debounce, max_delay=max(max_delay, debounce))
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._trust_domain = trust_domain
        self._encoder = ResponseEncoder()
        self._conns: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._push_task: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[object]] = set()
        self._early_notify = False
        self.push_count = 0  # debounced pushes done (for tests, status and benchmarks)
        source.add_listener(self.notify)

    # -- wiring ---------------------------------------------------------------------------

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the ADS service (responses are pre-encoded bytes, hence our own handler)."""
        deser = discovery_pb2.DiscoveryRequest.FromString
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.StreamAggregatedResources,
                request_deserializer=deser,
                response_serializer=_identity,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_identity,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )

    async def start(self) -> None:
        """Start the push loop on the running event loop (idempotent)."""
        self._ensure_started()

    async def stop(self) -> None:
        """Stop pushing; open streams end when the grpc server stops."""
        task, self._push_task = self._push_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _ensure_started(self) -> None:
        if self._push_task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._push_task = self._loop.create_task(self._push_loop(), name="ads-push")
        if self._early_notify:
            self._early_notify = False
            self._on_notify()

    # -- status ---------------------------------------------------------------------------

    def connections(self) -> list[ConnectionInfo]:
        """Every connected stream, oldest first."""
        return [c.info() for c in self._conns.values()]

    # -- change notifications and pushes --------------------------------------------------

    def notify(self) -> None:
        """Snapshots may have changed: push after the debounce window. Safe from any thread."""
        loop = self._loop
        if loop is None or self._push_task is None:
            self._early_notify = True
        elif threading.get_ident() == self._loop_thread:
            self._on_notify()
        else:
            loop.call_soon_threadsafe(self._on_notify)

    def _on_notify(self) -> None:
        assert self._loop is not None
        self._debouncer.notify(self._loop.time())
        self._dirty.set()

    async def _push_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            while delay := self._debouncer.due_in(loop.time()):
                await asyncio.sleep(delay)
            self._dirty.clear()
            self._debouncer.fire()
            try:
                self.push_all()
            except Exception:  # a bug here must not stop future pushes
                log.exception("ADS push failed")

    def push_all(self) -> None:
        """Fetch every connected node's snapshot now and send what changed (no debounce)."""
        self.push_count += 1
        started = time.perf_counter()
        sent = 0
        for conn in list(self._conns.values()):
            sent += self._refresh(conn)
        log.debug(
            "ADS push %d: %d responses to %d streams in %.1f ms",
            self.push_count,
            sent,
            len(self._conns),
            (time.perf_counter() - started) * 1e3,
        )

    def _refresh(self, conn: _Connection) -> int:
        try:
            snapshot = self._source.snapshot_for(conn.node)
        except Exception:
            log.exception("snapshot for node %r failed; it keeps its last config", conn.node.id)
            return 0
        if snapshot is conn.stream.snapshot:
            return 0
        return self._send(conn, conn.stream.update(snapshot))

    def _send(self, conn: _Connection, responses: Sequence[Response]) -> int:
        if not responses:
            return 0
        for r in responses:
            conn.pending[r.type_url] = self._encoder.encode(r)
        conn.wake.set()
        return len(responses)

    # -- streams --------------------------------------------------------------------------

    async def DeltaAggregatedResources(  # gRPC method name
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, bytes],
    ) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "hyphal serves state-of-the-world ADS only: use StreamAggregatedResources",
        )

    async def StreamAggregatedResources(  # gRPC method name
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, bytes],
    ) -> None:
        self._ensure_started()
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        try:
            conn = self._accept(first, context)
        except StreamRefused as err:
            log.warning("ADS stream from %s refused: %s", context.peer(), err.message)
            await context.abort(err.code, err.message)
            return
        self._conns[conn.id] = conn
        self._run_hook(self._on_connect, conn.node)
        log.info(
            "ADS stream %d connected: node %r (%s) from %s",
            conn.id,
            conn.node.id,
            conn.node.peer_identity or "plaintext",
            conn.peer,
        )
        reader = asyncio.get_running_loop().create_task(
            self._read(conn, requests), name=f"ads-read-{conn.id}"
        )
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.pending:
                    await context.write(_next_in_order(conn.pending))
                if conn.error is not None:
                    await context.abort(conn.error.code, conn.error.message)
                if conn.closed:
                    return
        finally:
            reader.cancel()
            self._conns.pop(conn.id, None)
            self._run_hook(self._on_disconnect, conn.node)
            log.info("ADS stream %d closed: node %r", conn.id, conn.node.id)

    def _accept(
        self,
        first: discovery_pb2.DiscoveryRequest,
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, bytes],
    ) -> _Connection:
        """Authenticate and account for the first request; StreamRefused refuses the stream."""
        peer = peer_of(context.auth_context())
        if not first.HasField("node") or not first.node.id:
            raise StreamRefused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first DiscoveryRequest on an ADS stream must carry node.id "
                "(see docs/xds-conventions.md, 'Node identity')",
            )
        node = NodeInfo.from_proto(
            first.node, peer_identity=None if peer.identity is None else peer.identity.uri
        )
        check_claim(peer, node.id, node.namespace, node.service_account, self._trust_domain)
        try:
            snapshot = self._source.snapshot_for(node)
        except Exception as exc:
            log.exception("snapshot for node %r failed", node.id)
            raise StreamRefused(
                grpc.StatusCode.UNAVAILABLE, f"no config for node {node.id!r} yet: {exc}"
            ) from None
        conn = _Connection(next(self._ids), node, context.peer(), snapshot)
        self._handle(conn, first)
        if conn.error is not None:
            raise conn.error
        return conn

    async def _read(
        self, conn: _Connection, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]
    ) -> None:
        try:
            async for req in requests:
                self._handle(conn, req)
                if conn.error is not None:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (the transport failed under us; stream over)
            log.info("ADS stream %d (node %r) read failed: %s", conn.id, conn.node.id, exc)
        finally:
            conn.closed = True
            conn.wake.set()

    def _handle(self, conn: _Connection, req: discovery_pb2.DiscoveryRequest) -> None:
        try:
            outcome: Outcome = conn.stream.receive(req)
        except AdsProtocolError as exc:
            conn.error = StreamRefused(
                grpc.StatusCode.INVALID_ARGUMENT, f"node {conn.node.id!r}: {exc}"
            )
            conn.wake.set()
            return
        if outcome.kind == "nack":
            log.warning(
                "ADS NACK from node %r for %s version %s nonce %s: %s",
                conn.node.id,
                short_name(req.type_url),
                outcome.nacked_version,
                req.response_nonce,
                outcome.nack_message,
            )
        self._send(conn, outcome.responses)

    def _run_hook(self, hook: Hook | None, node: NodeInfo) -> None:
        if hook is None:
            return
        try:
            result = hook(node)
        except Exception:
            log.exception("ADS connection hook %r failed for node %r", hook, node.id)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Future[object]) -> None:
        self._hook_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ADS connection hook failed", exc_info=task.exception())
