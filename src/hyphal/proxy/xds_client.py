"""The sidecar's ADS client: state-of-the-world xDS over one gRPC stream, ACK/NACK, reconnect.

Theory of operation. `AdsSession` is the protocol core and does no I/O: it is fed
`DiscoveryResponse`s and answers with the `DiscoveryRequest`s to send, plus, when the set of
accepted resources is complete, a freshly compiled config to apply.

- Subscriptions: Cluster and Listener by wildcard; ClusterLoadAssignment, RouteConfiguration
  and Secret by the names the accepted Clusters and Listeners mention (the compiler says which).
- A response of one type is compiled (each resource, then the whole set together with the
  other types' accepted resources). Success: the type's resources are accepted and ACKed
  (`version_info` + `response_nonce`). Failure: NACK (`error_detail` with the compiler's
  message, `version_info` = the last accepted version) and the previous resources of that type
  stay. NACKs are per type.
- When every referenced resource is present the whole set is compiled once and handed to
  `on_config`. If references stay missing past `warming_timeout`, missing endpoints/routes are
  treated as empty (as Envoy's initial_fetch_timeout does) so the sidecar becomes ready.

`XdsClient` runs the session over `grpc.aio` (mTLS with the workload certificate, or
plaintext for tests), keeps serving the last good config when the control plane goes away,
and reconnects with capped, jittered exponential backoff, resubscribing from scratch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, struct_pb2
from google.rpc import status_pb2

from hyphal.proxy.bootstrap import NodeInfo
from hyphal.proxy.compile.types import (
    ALL_TYPES,
    KIND,
    SHORT,
    WILDCARD_TYPES,
    CompileError,
)

__all__ = [
    "AdsSession",
    "Compiler",
    "SessionOutput",
    "TlsCredentials",
    "TypeStatus",
    "XdsClient",
    "XdsStatus",
    "build_node",
]

log = logging.getLogger("hyphal.proxy.xds")

C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)
Accepted = Mapping[str, Mapping[str, object]]

_INVALID_ARGUMENT = 3


class Compiler(Protocol[C_co]):
    """What the session needs from the compiler (hyphal.proxy.compile.Compiler implements it)."""

    def check(self, type_url: str, resources: Sequence[any_pb2.Any]) -> Mapping[str, object]:
        """Decode and compile every resource of one type; raise CompileError on the first bad one."""
        ...

    def wanted(self, accepted: Accepted) -> Mapping[str, frozenset[str]]:
        """Names to subscribe to for the non-wildcard types, given what is accepted."""
        ...

    def assemble(
        self, accepted: Accepted, versions: Mapping[str, str], *, allow_missing: bool
    ) -> C_co | None:
        """The whole config, or None while referenced resources are missing."""
        ...


def build_node(node: NodeInfo) -> base_pb2.Node:
    """The `DiscoveryRequest.node` for this sidecar, as docs/xds-conventions.md fixes it."""
    md = struct_pb2.Struct()
    md.update(node.metadata())
    return base_pb2.Node(
        id=node.id,
        cluster=node.cluster,
        metadata=md,
        user_agent_name="hyphal",
        user_agent_version="0.1.0",
    )


# --- status (read by the admin endpoint) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class TypeStatus:
    """Per-type protocol state: what is accepted and how the last response went."""

    type_url: str
    version: str = ""
    nonce: str = ""
    state: str = "waiting"  # waiting | acked | nacked
    last_nack: str = ""
    names: tuple[str, ...] = ()
    count: int = 0


@dataclass(frozen=True, slots=True)
class XdsStatus:
    """A snapshot of the client's state for /config_dump."""

    connected: bool
    applied_count: int
    last_applied_at: float
    types: tuple[TypeStatus, ...]
    warming: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionOutput(Generic[C]):
    """What to do after one response: requests to send, and maybe a config to apply."""

    requests: tuple[discovery_pb2.DiscoveryRequest, ...]
    config: C | None = None


# --- the sans-I/O protocol core -------------------------------------------------------------


@dataclass(slots=True)
class _TypeState:
    version: str = ""
    nonce: str = ""
    names: frozenset[str] = frozenset()
    subscribed: bool = False
    state: str = "waiting"
    last_nack: str = ""
    received: bool = False


class AdsSession(Generic[C]):
    """ADS state of the world for one sidecar, independent of any transport."""

    def __init__(self, node: base_pb2.Node, compiler: Compiler[C]) -> None:
        self._node = node
        self._compiler = compiler
        self._types: dict[str, _TypeState] = {t: _TypeState() for t in ALL_TYPES}
        self._accepted: dict[str, Mapping[str, object]] = {t: {} for t in ALL_TYPES}
        self._first = True

    # -- requests

    def _request(
        self, type_url: str, *, error: str | None = None, nonce: str | None = None
    ) -> discovery_pb2.DiscoveryRequest:
        st = self._types[type_url]
        req = discovery_pb2.DiscoveryRequest(
            version_info=st.version,
            type_url=type_url,
            response_nonce=st.nonce if nonce is None else nonce,
            resource_names=sorted(st.names),
        )
        if self._first:
            req.node.CopyFrom(self._node)
            self._first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=_INVALID_ARGUMENT, message=error))
        return req

    def start(self) -> tuple[discovery_pb2.DiscoveryRequest, ...]:
        """Requests that open (or reopen) a stream: every subscription, versions forgotten.

        Versions and nonces belong to one stream; after a reconnect the server sends everything
        again and the accepted resources are replaced type by type.
        """
        self._first = True
        out: list[discovery_pb2.DiscoveryRequest] = []
        for t in ALL_TYPES:
            st = self._types[t]
            st.version, st.nonce = "", ""
            if t in WILDCARD_TYPES:
                st.subscribed = True
                out.append(self._request(t))
            else:
                # Within one stream, a first request with no names means "everything".
                st.subscribed = False
        out.extend(self._resubscribe(force=True))
        return tuple(out)

    def _resubscribe(self, force: bool = False) -> list[discovery_pb2.DiscoveryRequest]:
        wanted = self._compiler.wanted(self._accepted)
        out = []
        for t, names in wanted.items():
            st = self._types[t]
            if not names and not st.subscribed:
                st.names = names
                continue  # never open a non-wildcard type with no names: it means "everything"
            if names == st.names and st.subscribed and not force:
                continue
            st.names = names
            st.subscribed = True
            out.append(self._request(t))
        return out

    # -- responses

    def on_response(self, resp: discovery_pb2.DiscoveryResponse) -> SessionOutput[C]:
        """Compile one response; ACK or NACK it; resubscribe; maybe produce a config."""
        t = resp.type_url
        if t not in self._types:
            self._first = False
            msg = f"type {t!r} is not supported by the hyphal sidecar"
            req = discovery_pb2.DiscoveryRequest(
                type_url=t,
                response_nonce=resp.nonce,
                error_detail=status_pb2.Status(code=_INVALID_ARGUMENT, message=msg),
            )
            return SessionOutput((req,))
        st = self._types[t]
        try:
            compiled = self._compiler.check(t, resp.resources)
            trial = dict(self._accepted)
            trial[t] = compiled
            versions = {k: v.version for k, v in self._types.items()}
            versions[t] = resp.version_info
            config = self._compiler.assemble(trial, versions, allow_missing=False)
        except CompileError as exc:
            st.state, st.last_nack = "nacked", str(exc)
            log.warning("NACK %s version %s: %s", KIND[t], resp.version_info, exc)
            return SessionOutput((self._request(t, error=str(exc), nonce=resp.nonce),))
        self._accepted[t] = compiled
        st.version, st.nonce, st.state, st.received = resp.version_info, resp.nonce, "acked", True
        log.info("ACK %s version %s (%d resources)", KIND[t], resp.version_info, len(compiled))
        out = [self._request(t)]
        out.extend(self._resubscribe())
        ready = config is not None and all(self._types[w].received for w in WILDCARD_TYPES)
        return SessionOutput(tuple(out), config if ready else None)

    def assemble_now(self, *, allow_missing: bool) -> C | None:
        """Compile the accepted set (used by the warming timeout); None if still incomplete."""
        if not all(self._types[w].received for w in WILDCARD_TYPES):
            return None
        try:
            versions = {k: v.version for k, v in self._types.items()}
            return self._compiler.assemble(self._accepted, versions, allow_missing=allow_missing)
        except CompileError as exc:  # pragma: no cover - accepted sets assembled before
            log.error("accepted resources no longer compile: %s", exc)
            return None

    def missing(self) -> tuple[str, ...]:
        """Referenced names not yet received, as `KIND/name` (for /config_dump and logs)."""
        out: list[str] = []
        for t, names in self._compiler.wanted(self._accepted).items():
            have = self._accepted[t]
            out.extend(f"{KIND[t]}/{n}" for n in sorted(names) if n not in have)
        return tuple(out)

    def status(self) -> tuple[TypeStatus, ...]:
        return tuple(
            TypeStatus(
                type_url=t,
                version=st.version,
                nonce=st.nonce,
                state=st.state,
                last_nack=st.last_nack,
                names=tuple(sorted(st.names)),
                count=len(self._accepted[t]),
            )
            for t, st in self._types.items()
        )


# --- the I/O loop ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsCredentials:
    """Client certificate material for the ADS channel (PEM bytes)."""

    root_pem: bytes
    key_pem: bytes
    chain_pem: bytes


def _channel(target: str, creds: TlsCredentials | None) -> grpc.aio.Channel:
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        # Our own backoff decides when to retry; let each attempt fail fast.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]
    if creds is None:
        return grpc.aio.insecure_channel(target, options=options)
    host = target.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
        # The control plane's serving cert carries DNS `localhost` (and IP 127.0.0.1).
        options.append(("grpc.ssl_target_name_override", "localhost"))
    except ValueError:
        pass
    ssl = grpc.ssl_channel_credentials(creds.root_pem, creds.key_pem, creds.chain_pem)
    return grpc.aio.secure_channel(target, ssl, options=options)


class XdsClient(Generic[C]):
    """Keeps one ADS stream open to the control plane and applies what it pushes."""

    def __init__(
        self,
        target: str,
        node: base_pb2.Node,
        compiler: Compiler[C],
        on_config: Callable[[C], Awaitable[None] | None],
        *,
        credentials: Callable[[], TlsCredentials | None] = lambda: None,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        warming_timeout: float = 10.0,
    ) -> None:
        self._target = target
        self._session: AdsSession[C] = AdsSession(node, compiler)
        self._on_config = on_config
        self._credentials = credentials
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._warming_timeout = warming_timeout
        self._connected = False
        self._applied = 0
        self._applied_at = 0.0
        self._reconnect = asyncio.Event()
        self._deliberate = False
        self._stopping = False
        self._first_config = asyncio.Event()
        self._warm_task: asyncio.Task[None] | None = None
        self.last_error: str = ""

    # -- public

    @property
    def has_config(self) -> bool:
        return self._applied > 0

    async def wait_config(self, timeout: float | None = None) -> bool:
        """Wait until a first config has been applied; True if it was."""
        try:
            await asyncio.wait_for(self._first_config.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def reconnect(self) -> None:
        """Reopen the stream (new credentials, e.g. after a certificate rotation)."""
        self._reconnect.set()

    def stop(self) -> None:
        self._stopping = True
        self._reconnect.set()

    def status(self) -> XdsStatus:
        return XdsStatus(
            connected=self._connected,
            applied_count=self._applied,
            last_applied_at=self._applied_at,
            types=self._session.status(),
            warming=self._session.missing(),
        )

    async def run(self) -> None:
        """Stream until `stop()`; on failure keep the last config and retry with backoff."""
        delay = self._backoff_initial
        try:
            while not self._stopping:
                got_response = await self._one_stream()
                if self._stopping:
                    break
                if self._deliberate:  # asked for (new certificate): no backoff
                    self._deliberate = False
                    delay = self._backoff_initial
                    continue
                if got_response:
                    delay = self._backoff_initial
                sleep = random.uniform(delay / 2, delay)  # jittered, capped exponential
                delay = min(delay * 2, self._backoff_max)
                log.info("reconnecting to %s in %.2fs", self._target, sleep)
                try:
                    await asyncio.wait_for(self._reconnect.wait(), sleep)
                except TimeoutError:
                    pass
        finally:
            if self._warm_task is not None:
                self._warm_task.cancel()

    # -- internals

    async def _apply(self, config: C) -> None:
        result = self._on_config(config)
        if result is not None:
            await result
        self._applied += 1
        self._applied_at = time.time()
        self._first_config.set()
        if self._warm_task is not None:
            self._warm_task.cancel()
            self._warm_task = None

    def _arm_warming(self) -> None:
        if self._warm_task is None and self._session.missing():
            self._warm_task = asyncio.get_running_loop().create_task(self._warming())

    async def _warming(self) -> None:
        await asyncio.sleep(self._warming_timeout)
        self._warm_task = None
        missing = self._session.missing()
        config = self._session.assemble_now(allow_missing=True)
        if config is not None:
            log.warning(
                "applying config with missing resources after %.1fs: %s",
                self._warming_timeout,
                ", ".join(missing),
            )
            await self._apply(config)

    async def _one_stream(self) -> bool:
        """Run one stream to its end; True if at least one response arrived."""
        self._reconnect.clear()
        got = False
        try:
            creds = self._credentials()
        except Exception as exc:  # noqa: BLE001 - surfaced in status, retried with backoff
            self.last_error = f"no credentials for the ADS channel: {exc}"
            log.warning("%s", self.last_error)
            return False
        channel = _channel(self._target, creds)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources()
        reconnect_wait = asyncio.ensure_future(self._reconnect.wait())
        try:
            for req in self._session.start():
                await call.write(req)
            while True:
                read = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait(
                    {read, reconnect_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                if read not in done:
                    read.cancel()
                    log.info("closing the ADS stream to reconnect")
                    self._deliberate = True
                    return got
                resp = read.result()
                if resp is grpc.aio.EOF:
                    self.last_error = "control plane closed the ADS stream"
                    log.warning("%s", self.last_error)
                    return got
                if not got:
                    log.info("connected to the control plane at %s", self._target)
                got = True
                self._connected = True
                out = self._session.on_response(resp)
                for req in out.requests:
                    await call.write(req)
                if out.config is not None:
                    await self._apply(out.config)
                else:
                    self._arm_warming()
        except grpc.aio.AioRpcError as exc:
            self.last_error = f"ADS stream to {self._target}: {exc.code().name}: {exc.details()}"
            log.warning("%s", self.last_error)
            return got
        except asyncio.CancelledError:
            raise
        finally:
            self._connected = False
            reconnect_wait.cancel()
            call.cancel()
            await channel.close(grace=None)


def short_type(type_url: str) -> str:
    """`Cluster`, `Listener`, … for a type URL (for display)."""
    return SHORT.get(type_url, type_url)
