"""Per-request policy helpers (pure): deadlines in and out, Retry-After, hash keys, shadow hosts.

The exchange calls these on the request path, so each is one pass over the headers at most,
and most return at once when the request carries nothing for them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hyphal.proxy.http.headers import Headers
from hyphal.proxy.resilience.backoff import parse_retry_after
from hyphal.proxy.resilience.deadline import (
    format_deadline_header,
    format_grpc_timeout,
    parse_deadline_header,
    parse_grpc_timeout,
)
from hyphal.proxy.resilience.hash_policy import NO_KEY, HashKey, hash_key_for
from hyphal.proxy.runtime.tables import HashPolicy

DEADLINE = b"x-hyphal-deadline"
GRPC_TIMEOUT = b"grpc-timeout"
_CONTENT_TYPE = b"content-type"
_GRPC = b"application/grpc"


@dataclass(frozen=True, slots=True)
class CallerBudget:
    """What the request says about its caller's deadline.

    `remaining_s` is the smaller of `x-hyphal-deadline` (relative ms) and `grpc-timeout`
    (None: the caller set no deadline); `headers` is the request's headers without those
    two (they are rewritten per try), or None when the request carried neither."""

    remaining_s: float | None
    grpc: bool
    headers: Headers | None


NO_BUDGET = CallerBudget(None, False, None)


def caller_budget(headers: Headers, strip: bool = True) -> CallerBudget:
    """One pass over the request headers (names compared case-insensitively). `strip=False`:
    the caller drops the deadline headers itself (the HTTP/1.1 head builder does), so
    `headers` of the answer is left None."""
    remaining: float | None = None
    grpc = False
    found = False
    for name, value in headers:
        # Gated on the name's length: most headers cost one len() and two comparisons.
        size = len(name)
        if size == 17:
            if name.lower() != DEADLINE:
                continue
            parsed = parse_deadline_header(value)
        elif size == 12:
            lower = name.lower()
            if lower != GRPC_TIMEOUT:
                if lower == _CONTENT_TYPE and value.startswith(_GRPC):
                    grpc = True
                continue
            parsed = parse_grpc_timeout(value)
        else:
            continue
        found = True
        if parsed is not None and (remaining is None or parsed < remaining):
            remaining = parsed
    if not found:
        return CallerBudget(None, grpc, None) if grpc else NO_BUDGET
    if not strip:
        return CallerBudget(remaining, grpc, None)
    kept = [(n, v) for n, v in headers if n.lower() not in (DEADLINE, GRPC_TIMEOUT)]
    return CallerBudget(remaining, grpc, kept)


def effective_deadline(started: float, route_timeout_s: float | None,
                       caller_remaining_s: float | None) -> float | None:
    """Monotonic time by which the exchange must end (None: no limit). A route timeout of
    None or 0 means no limit, as in Envoy; the caller's budget always applies."""
    limit = route_timeout_s or None
    if caller_remaining_s is not None and (limit is None or caller_remaining_s < limit):
        limit = caller_remaining_s
    return None if limit is None else started + limit


def with_deadline(up_head: bytes, deadline: float | None, grpc: bool,
                  now: float | None = None) -> bytes:
    """`up_head` (ending in CRLF CRLF) with the remaining time for the next hop."""
    if deadline is None:
        return up_head
    remaining = deadline - (time.monotonic() if now is None else now)
    if not grpc:  # every request on a route with a timeout: one format, no str detour
        # deadline_millis(remaining), inlined: this runs once per request.
        if remaining <= 0:
            millis = 0
        else:
            exact = remaining * 1000.0
            millis = int(exact)
            if exact - millis >= 0.999999:
                millis = int(round(exact, 6))
        return b"%bx-hyphal-deadline: %d\r\n\r\n" % (up_head[:-2], millis)
    extra = b"x-hyphal-deadline: " + format_deadline_header(remaining).encode() + b"\r\n"
    extra += b"grpc-timeout: " + format_grpc_timeout(max(remaining, 0.0)).encode() + b"\r\n"
    return up_head[:-2] + extra + b"\r\n"


def retry_after(headers: Headers) -> float | None:
    """Seconds from a response's `Retry-After` (None when absent or malformed)."""
    for name, value in headers:
        if len(name) == 11 and name.lower() == b"retry-after":
            return parse_retry_after(value, time.time())
    return None


def request_hash_key(policy: Sequence[HashPolicy], headers: Headers, query: str,
                     peer_ip: str, rng: random.Random) -> HashKey:
    """The consistent-hash key of a request (Envoy's hash_policy; a cookie term whose cookie
    is absent generates one: `HashKey.set_cookie` goes on the response)."""
    if not policy:
        return NO_KEY
    wanted = {t.header.lower() for t in policy if t.header}
    if any(t.cookie for t in policy):
        wanted.add("cookie")
    lowered: dict[str, str] = {}
    if wanted:
        for raw_name, raw_value in headers:
            name = raw_name.decode("latin-1").lower()
            if name in wanted:
                value = raw_value.decode("latin-1")
                joiner = "; " if name == "cookie" else ", "
                lowered[name] = f"{lowered[name]}{joiner}{value}" if name in lowered else value
    return hash_key_for(policy, lowered, query, peer_ip, rng)


def shadow_authority(authority: str) -> str:
    """Envoy's mirror host: `-shadow` after the host part (`api:8080` -> `api-shadow:8080`)."""
    if authority.startswith("["):
        return authority  # an IPv6 literal has no name to suffix
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit():
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"
