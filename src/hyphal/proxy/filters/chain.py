"""Request filters of an inbound HTTP listener (jwt_authn, local_ratelimit): the one seam.

Theory of operation: a listener compiles its request filters into a tuple once, at config
time (an empty tuple costs nothing per request). Per request the exchange makes one call,
`run_request_filters`, before its RBAC decision. Each filter reads and may change a small
`RequestState` (headers, the verified request auth for RBAC, or a local reply that ends the
request); filters run in listener order and the first local reply wins. Filters are
sans-I/O: they see bytes and a clock, never a socket.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, Protocol

from hyphal.proxy.http.headers import Headers
from hyphal.telemetry.stats import Stats

__all__ = [
    "ANSWERED",
    "LocalReply",
    "RequestFilter",
    "RequestState",
    "run_request_filters",
]


@dataclass(frozen=True, slots=True)
class LocalReply:
    """The proxy answers the request itself: status, `x-hyphal-reason` flag, extra headers."""

    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


class RequestState:
    """What request filters read and write for one request (built per request only when
    the listener has filters)."""

    __slots__ = ("auth", "headers", "principal", "query", "reply", "stats")

    def __init__(self, headers: Headers, query: str, principal: str | None,
                 stats: Stats | None = None) -> None:
        self.headers = headers  # replace the list to change it; never mutate it in place
        self.query = query
        self.principal = principal  # the peer's verified SPIFFE id (None: plaintext)
        self.auth: Mapping[str, Any] | None = None  # request auth for RBAC (jwt_authn)
        self.reply: LocalReply | None = None
        self.stats = stats


class RequestFilter(Protocol):
    def apply(self, state: RequestState, now: float) -> None:
        """Read and change `state`; set `state.reply` to answer the request here."""


# The exchange was answered by a filter: a marker distinct from "no auth" (None) and from
# any verified request auth (compare with `is`).
ANSWERED: Final[Mapping[str, Any]] = MappingProxyType({})


class FilterHost(Protocol):
    """The part of an exchange the seam needs (hyphal.proxy.http.exchange.Exchange)."""

    head: Any
    down: Any
    ctx: Any

    def _local(self, status: int, flag: str, body: bytes | None = None,
               extra: Headers | None = None) -> None: ...


def run_request_filters(host: FilterHost, filters: tuple[RequestFilter, ...],
                        query: str) -> Mapping[str, Any] | None:
    """Run `filters` on the exchange's request. Returns ANSWERED when a filter answered it
    (the local reply is already sent), else the request auth for RBAC (None: no JWT)."""
    head = host.head
    state = RequestState(head.headers, query, host.down.peer_identity, host.ctx.stats)
    now = time.time()
    for f in filters:
        f.apply(state, now)
        if state.reply is not None:
            reply = state.reply
            host._local(reply.status, reply.reason, extra=list(reply.headers))
            return ANSWERED
    if state.headers is not head.headers:
        host.head = replace(head, headers=state.headers, budget=True)  # (see RequestHead)
    return state.auth
