"""Deadline propagation: `x-hyphal-deadline` and `grpc-timeout` in and out, next-hop timeouts.

`x-hyphal-deadline` carries the caller's **remaining time in integer milliseconds** (relative,
not an absolute timestamp), so two hosts whose clocks disagree still agree on the budget;
the cost is that time spent on the wire between two sidecars is not subtracted, which on a
mesh's short hops is far below a millisecond or two. Each sidecar converts the header into a
local monotonic deadline on arrival and writes the then-remaining time on the way out.

`grpc-timeout` follows the gRPC over HTTP/2 spec: `TimeoutValue TimeoutUnit`, at most 8 ASCII
digits and one of `H` (hours), `M` (minutes), `S` (seconds), `m` (ms), `u` (µs), `n` (ns).
Encoding picks the finest unit that fits in 8 digits and rounds up, as grpc-go does, so a
deadline is never shortened by the encoding.

The next hop's timeout is the smallest of the route's timeout (None or 0 = no limit, as in
Envoy) and the caller's remaining time; a remaining time <= 0 means the caller has already
given up: answer 504 (gRPC: DEADLINE_EXCEEDED, 4) without calling upstream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

DEADLINE_HEADER: Final = "x-hyphal-deadline"
GRPC_TIMEOUT_HEADER: Final = "grpc-timeout"
_MAX_DIGITS: Final = 8
_MAX_VALUE: Final = 10**_MAX_DIGITS - 1
# unit -> (multiplier, divisor): dividing keeps 100000u exactly 0.1 s.
_UNITS: Final[dict[str, tuple[int, float]]] = {
    "H": (3600, 1.0), "M": (60, 1.0), "S": (1, 1.0), "m": (1, 1e3), "u": (1, 1e6),
    "n": (1, 1e9),
}
# Finest first; integer nanoseconds per unit for exact encoding.
_ENCODE_UNITS: Final = (("n", 1), ("u", 1_000), ("m", 1_000_000), ("S", 1_000_000_000),
                        ("M", 60_000_000_000), ("H", 3_600_000_000_000))


def parse_grpc_timeout(value: str | bytes | None) -> float | None:
    """Seconds from a `grpc-timeout` value, or None when absent or malformed (the spec says a
    malformed value is to be treated as absent by proxies; servers may reject it)."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if len(text) < 2 or len(text) > _MAX_DIGITS + 1:
        return None
    digits, unit = text[:-1], text[-1]
    scale = _UNITS.get(unit)
    if scale is None or not digits.isascii() or not digits.isdigit():
        return None
    multiplier, divisor = scale
    return int(digits) * multiplier / divisor


def format_grpc_timeout(seconds: float) -> str:
    """Encode a timeout for `grpc-timeout` (>= 1 ns; never shorter than `seconds`)."""
    nanos = max(1, math.ceil(seconds * 1e9 - 1e-6)) if seconds > 0 else 1
    for unit, per in _ENCODE_UNITS:
        value = -(-nanos // per)
        if value <= _MAX_VALUE:
            return f"{value}{unit}"
    return f"{_MAX_VALUE}H"


def parse_deadline_header(value: str | bytes | None) -> float | None:
    """Seconds remaining from `x-hyphal-deadline` (non-negative integer milliseconds), or None
    when absent or malformed."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if not text or len(text) > 12 or not text.isascii() or not text.isdigit():
        return None
    return int(text) / 1000.0


def deadline_millis(remaining_s: float) -> int:
    """Integer milliseconds remaining, floored (a deadline is never extended); 0 if passed.

    Float noise is rounded away first (33554.429 s * 1000 is 33554428.999...): the result is
    `int(round(ms, 6))`. That rounding is slow (it formats decimals), and it can only change
    the floor when the fraction is within 1e-6 of the next integer, so only then is it done."""
    if remaining_s <= 0:
        return 0
    millis = remaining_s * 1000.0
    floor = int(millis)
    if millis - floor >= 0.999999:
        return int(round(millis, 6))
    return floor


def format_deadline_header(remaining_s: float) -> str:
    """`x-hyphal-deadline`'s value: `deadline_millis` as text."""
    return str(deadline_millis(remaining_s))


def remaining_from_headers(headers: Mapping[str, str]) -> float | None:
    """The caller's remaining time: the smaller of `x-hyphal-deadline` and `grpc-timeout`
    (lower-case header names), None when neither is present."""
    ours = parse_deadline_header(headers.get(DEADLINE_HEADER))
    grpc = parse_grpc_timeout(headers.get(GRPC_TIMEOUT_HEADER))
    if ours is None:
        return grpc
    if grpc is None:
        return ours
    return min(ours, grpc)


def effective_timeout(route_timeout_s: float | None, caller_remaining_s: float | None,
                      per_try_timeout_s: float | None = None) -> float | None:
    """min(route timeout, caller's remaining, per-try timeout); None or 0 route/per-try
    timeouts mean "no limit" (Envoy). None = no limit at all."""
    best: float | None = None
    for value in (route_timeout_s or None, caller_remaining_s, per_try_timeout_s or None):
        if value is not None and (best is None or value < best):
            best = value
    return best


@dataclass(frozen=True, slots=True)
class Deadline:
    """A request's deadline on this host's monotonic clock (`expires_at` None = none)."""

    expires_at: float | None

    @classmethod
    def start(cls, now: float, route_timeout_s: float | None,
              headers: Mapping[str, str] | None = None) -> Deadline:
        """Deadline of a request arriving at `now`: route timeout and caller's budget."""
        caller = remaining_from_headers(headers) if headers is not None else None
        timeout = effective_timeout(route_timeout_s, caller)
        return cls(None if timeout is None else now + timeout)

    def remaining(self, now: float) -> float | None:
        return None if self.expires_at is None else self.expires_at - now

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def try_timeout(self, now: float, per_try_timeout_s: float | None) -> float | None:
        """Timeout for the next try: min(remaining, per-try timeout)."""
        return effective_timeout(None, self.remaining(now), per_try_timeout_s)

    def outgoing_headers(self, now: float, grpc: bool) -> tuple[tuple[str, str], ...]:
        """Headers to set (replace) on the upstream request; empty without a deadline.
        `grpc-timeout` is rewritten only for gRPC requests."""
        remaining = self.remaining(now)
        if remaining is None:
            return ()
        ours = (DEADLINE_HEADER, format_deadline_header(remaining))
        if grpc:
            return (ours, (GRPC_TIMEOUT_HEADER, format_grpc_timeout(max(remaining, 0.0))))
        return (ours,)
