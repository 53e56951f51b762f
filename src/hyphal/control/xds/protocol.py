"""One ADS stream's state of the world, sans I/O: requests and snapshots in, responses out.

Theory of operation. Per type URL the stream remembers what the client subscribed to
(`None` = wildcard), and what was last sent (names, version, nonce), acked and NACKed.

- A request for a type not seen before on this stream is a subscription: answer it.
- A request whose nonce is not the last one sent for its type is stale: ignore it entirely
  (the client will re-send its current subscription when it answers the newer response).
- A request echoing the last nonce is an ACK, or a NACK when `error_detail` is set (recorded,
  never answered by re-sending the same version). If it also changes the subscribed names,
  answer with the new set.
- A request with an empty nonce on a known type is a fresh request: answer it.
- Never answer a named subscription while none of its names exist (a proxyless gRPC client
  takes an empty answer as "does not exist"); but once the client holds resources of the
  type, state-of-the-world applies: a vanished resource is sent as a set without it.
- A new snapshot re-sends, in `PUSH_ORDER`, exactly the types whose selected content changed.

Wildcard (LDS/CDS): a first request with no names, or any request naming `*`; a stream that
is in that legacy wildcard mode stays there while it keeps sending empty lists. After an
explicit named subscription, an empty list means "unsubscribed from everything".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from envoy.service.discovery.v3 import discovery_pb2

from hyphal.control.xds.snapshot import (
    PUSH_ORDER,
    TYPE_URLS,
    WILDCARD_TYPES,
    Snapshot,
    short_name,
)

WILDCARD = "*"


class AdsProtocolError(ValueError):
    """A request that breaks the ADS protocol; the message tells the client what to fix."""


@dataclass(frozen=True, slots=True)
class Response:
    """A DiscoveryResponse to send: `names` of `type_url` from `snapshot`, at `version`."""

    type_url: str
    version: str
    nonce: str
    names: tuple[str, ...]
    snapshot: Snapshot = field(repr=False, compare=False)


OutcomeKind = Literal["subscribe", "request", "ack", "nack", "stale"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request meant and what to send back."""

    kind: OutcomeKind
    responses: tuple[Response, ...] = ()
    nacked_version: str | None = None
    nack_message: str | None = None


@dataclass(frozen=True, slots=True)
class TypeStatus:
    """What a status page shows for one type URL of one stream."""

    type_url: str
    subscribed: tuple[str, ...] | None  # None: wildcard
    sent_version: str | None
    sent_nonce: str | None
    sent_count: int
    acked_version: str | None
    last_nack: str | None

    @property
    def short(self) -> str:
        return short_name(self.type_url)


@dataclass(slots=True)
class _TypeState:
    subscribed: frozenset[str] | None
    sent_names: tuple[str, ...] = ()
    sent_version: str | None = None
    sent_nonce: str | None = None
    acked_version: str | None = None
    last_nack: str | None = None


def _check_type_url(type_url: str) -> None:
    if type_url in TYPE_URLS:
        return
    served = ", ".join(sorted(TYPE_URLS))
    if not type_url:
        raise AdsProtocolError(
            f"DiscoveryRequest.type_url is empty; every ADS request must name its type ({served})"
        )
    raise AdsProtocolError(f"unsupported type_url {type_url!r}; this server serves {served}")


class AdsStream:
    """Protocol state of one ADS stream: feed it requests and snapshots, send what it returns."""

    __slots__ = ("_nonce", "_snapshot", "_types", "node_id")

    def __init__(self, node_id: str, snapshot: Snapshot) -> None:
        self.node_id = node_id
        self._snapshot = snapshot
        self._types: dict[str, _TypeState] = {}
        self._nonce = 0

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def receive(self, req: discovery_pb2.DiscoveryRequest) -> Outcome:
        """Account for one DiscoveryRequest; raises AdsProtocolError for a malformed one."""
        type_url = req.type_url
        _check_type_url(type_url)
        nonce = req.response_nonce
        ts = self._types.get(type_url)
        if ts is None:
            # New subscription (a nonce here comes from an earlier stream: answer anyway).
            ts = _TypeState(subscribed=self._subscription(type_url, req.resource_names, None))
            self._types[type_url] = ts
            return Outcome("subscribe", self._answer(type_url, ts, force=True))
        if nonce and ts.sent_nonce is not None and nonce != ts.sent_nonce:
            return Outcome("stale")
        kind: OutcomeKind = "request"
        nacked_version = nack_message = None
        if nonce and nonce == ts.sent_nonce:
            if req.HasField("error_detail"):
                kind = "nack"
                nacked_version = ts.sent_version
                nack_message = req.error_detail.message or f"code {req.error_detail.code}"
                ts.last_nack = nack_message
            else:
                kind = "ack"
                ts.acked_version = ts.sent_version
        subscribed = self._subscription(type_url, req.resource_names, ts)
        changed = subscribed != ts.subscribed
        ts.subscribed = subscribed
        responses: tuple[Response, ...] = ()
        if changed or not nonce:
            responses = self._answer(type_url, ts, force=not nonce)
        return Outcome(kind, responses, nacked_version, nack_message)

    def update(self, snapshot: Snapshot) -> tuple[Response, ...]:
        """Switch to a new snapshot; responses for the subscribed types whose content changed."""
        self._snapshot = snapshot
        out: list[Response] = []
        for type_url in PUSH_ORDER:
            ts = self._types.get(type_url)
            if ts is not None:
                out.extend(self._answer(type_url, ts, force=False))
        return tuple(out)

    def status(self) -> tuple[TypeStatus, ...]:
        return tuple(
            TypeStatus(
                type_url=t,
                subscribed=None if ts.subscribed is None else tuple(sorted(ts.subscribed)),
                sent_version=ts.sent_version,
                sent_nonce=ts.sent_nonce,
                sent_count=len(ts.sent_names),
                acked_version=ts.acked_version,
                last_nack=ts.last_nack,
            )
            for t in PUSH_ORDER
            if (ts := self._types.get(t)) is not None
        )

    @staticmethod
    def _subscription(
        type_url: str, names: Iterable[str], ts: _TypeState | None
    ) -> frozenset[str] | None:
        wanted = frozenset(names)
        if type_url not in WILDCARD_TYPES:
            return wanted
        if WILDCARD in wanted:
            return None
        if not wanted and (ts is None or ts.subscribed is None):
            return None
        return wanted

    def _answer(self, type_url: str, ts: _TypeState, *, force: bool) -> tuple[Response, ...]:
        if ts.subscribed is not None and not ts.subscribed:
            ts.sent_names = ()  # unsubscribed from everything: the client dropped it all
            return ()
        names = self._snapshot.select(type_url, ts.subscribed)
        if not names and ts.subscribed is not None and not ts.sent_names:
            return ()  # nothing requested exists yet, and the client holds nothing of this type
        version = self._snapshot.version_for(type_url, names)
        if not force and version == ts.sent_version and names == ts.sent_names:
            return ()
        self._nonce += 1
        nonce = str(self._nonce)
        ts.sent_names, ts.sent_version, ts.sent_nonce = names, version, nonce
        return (Response(type_url, version, nonce, names, self._snapshot),)
