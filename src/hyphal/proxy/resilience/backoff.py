"""Retry backoff and retriability: full-jitter exponential delays, Retry-After, Envoy `retry_on`.

Delays follow the brief's form of Envoy's jittered backoff: retry number `k` (0 for the first
retry) waits `uniform(0, min(cap, base * 2**k))` ("full jitter"), base 25 ms and cap 250 ms by
default (Envoy's `base_interval` and its default `max_interval` of 10 x base). Envoy itself
draws from `[0, (2**(k+1) - 1) * base]`; the two agree on the first retry and on the cap.

A `Retry-After` response header (delta seconds or an HTTP-date) replaces the computed delay,
bounded by `retry_after_max_s` so a hostile upstream cannot park a request for hours.

`RetryConditions` compiles an Envoy `retry_on` set once (config time) and answers, per try,
whether its outcome is retriable. Outcome = (HTTP status or None, grpc-status or None,
failure kind or None); a failure kind means no response arrived.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class FailureKind(StrEnum):
    """Why a try produced no response (the local-origin outcomes)."""

    CONNECT_FAILURE = "connect_failure"  # refused, unreachable, TLS handshake, connect timeout
    RESET = "reset"  # the connection or stream died before a complete response head
    REFUSED_STREAM = "refused_stream"  # HTTP/2 REFUSED_STREAM: the upstream never saw it
    TIMEOUT = "timeout"  # the per-try timeout fired


GRPC_CANCELLED: Final = 1
GRPC_DEADLINE_EXCEEDED: Final = 4
GRPC_RESOURCE_EXHAUSTED: Final = 8
GRPC_INTERNAL: Final = 13
GRPC_UNAVAILABLE: Final = 14

_GRPC_FLAGS: Final[dict[str, int]] = {
    "cancelled": GRPC_CANCELLED,
    "deadline-exceeded": GRPC_DEADLINE_EXCEEDED,
    "resource-exhausted": GRPC_RESOURCE_EXHAUSTED,
    "internal": GRPC_INTERNAL,
    "unavailable": GRPC_UNAVAILABLE,
}
_HTTP_FLAGS: Final = frozenset({
    "5xx", "gateway-error", "connect-failure", "refused-stream", "reset",
    "retriable-status-codes", "retriable-4xx",
})
KNOWN_RETRY_ON: Final = _HTTP_FLAGS | frozenset(_GRPC_FLAGS)
_GATEWAY_ERRORS: Final = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryConditions:
    """A compiled `retry_on`. Build with `from_flags`; `should_retry` is the per-try check.

    Envoy's semantics: `5xx` and `gateway-error` also cover every no-response outcome (connect
    failure, reset, refused stream, per-try timeout, which Envoy answers as a 504); `reset`
    covers every no-response outcome; `connect-failure` and `refused-stream` only their own;
    `retriable-4xx` is 409 only; the gRPC names match the response's `grpc-status`.
    """

    on_5xx: bool = False
    on_gateway_error: bool = False
    on_connect_failure: bool = False
    on_refused_stream: bool = False
    on_reset: bool = False
    on_retriable_4xx: bool = False
    status_codes: frozenset[int] = frozenset()
    grpc_statuses: frozenset[int] = frozenset()

    @classmethod
    def from_flags(
        cls, retry_on: frozenset[str] | set[str] | tuple[str, ...],
        retriable_status_codes: frozenset[int] | set[int] | tuple[int, ...] = (),
    ) -> RetryConditions:
        """Raises ValueError naming any flag hyphal does not know (fail at config time)."""
        flags = frozenset(f.strip().lower() for f in retry_on if f.strip())
        unknown = sorted(flags - KNOWN_RETRY_ON)
        if unknown:
            raise ValueError(
                f"retry_on: unsupported condition(s) {', '.join(unknown)}; "
                f"use any of {', '.join(sorted(KNOWN_RETRY_ON))}"
            )
        return cls(
            on_5xx="5xx" in flags,
            on_gateway_error="gateway-error" in flags,
            on_connect_failure="connect-failure" in flags,
            on_refused_stream="refused-stream" in flags,
            on_reset="reset" in flags,
            on_retriable_4xx="retriable-4xx" in flags,
            status_codes=(frozenset(retriable_status_codes)
                          if "retriable-status-codes" in flags else frozenset()),
            grpc_statuses=frozenset(code for name, code in _GRPC_FLAGS.items() if name in flags),
        )

    def should_retry(
        self, status: int | None, grpc_status: int | None = None,
        failure: FailureKind | str | None = None,
    ) -> bool:
        if failure is not None:
            if self.on_5xx or self.on_gateway_error or self.on_reset:
                return True
            if failure == FailureKind.CONNECT_FAILURE:
                return self.on_connect_failure
            if failure == FailureKind.REFUSED_STREAM:
                return self.on_refused_stream
            return False
        if grpc_status is not None and grpc_status in self.grpc_statuses:
            return True
        if status is None:
            return False
        if status >= 500:
            if self.on_5xx:
                return True
            if self.on_gateway_error and status in _GATEWAY_ERRORS:
                return True
        elif status == 409 and self.on_retriable_4xx:
            return True
        return status in self.status_codes


def is_retriable(
    retry_on: frozenset[str] | set[str] | tuple[str, ...],
    status: int | None,
    grpc_status: int | None = None,
    failure: FailureKind | str | None = None,
    retriable_status_codes: frozenset[int] | set[int] | tuple[int, ...] = (),
) -> bool:
    """One-shot form of `RetryConditions.from_flags(...).should_retry(...)` (compiles per call:
    keep it off the request path)."""
    conditions = RetryConditions.from_flags(retry_on, retriable_status_codes)
    return conditions.should_retry(status, grpc_status, failure)


def parse_retry_after(value: str | bytes | None, now_unix: float) -> float | None:
    """Seconds to wait from a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
    (`Wed, 21 Oct 2015 07:28:00 GMT`, relative to `now_unix`, floored at 0). None when the
    header is absent or malformed: the caller keeps its computed backoff."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    # Imported here: HTTP-date Retry-After is rare, and email.utils costs ~1.4 MB per sidecar.
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means "-0000"
        return None
    return max(0.0, when.timestamp() - now_unix)


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    base_s: float = 0.025
    cap_s: float = 0.25
    retry_after_max_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise ValueError(f"backoff base interval must be > 0 seconds, got {self.base_s}")
        if self.cap_s < self.base_s:
            raise ValueError(
                f"backoff max interval ({self.cap_s}s) must be >= base interval ({self.base_s}s)"
            )
        if self.retry_after_max_s < 0:
            raise ValueError("retry_after_max_s must be >= 0")


class Backoff:
    """Delay before retry number `attempt` (0 = first retry). Stateless apart from the rng,
    so one instance can serve a whole cluster."""

    __slots__ = ("_ceilings", "_rng", "config")

    def __init__(self, config: BackoffConfig = BackoffConfig(),
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng if rng is not None else random.Random()
        ceilings: list[float] = []
        ceiling = config.base_s
        while ceiling < config.cap_s:
            ceilings.append(ceiling)
            ceiling *= 2
        ceilings.append(config.cap_s)
        self._ceilings = tuple(ceilings)

    def ceiling(self, attempt: int) -> float:
        """The upper bound of retry `attempt`'s delay: min(cap, base * 2**attempt)."""
        ceilings = self._ceilings
        return ceilings[attempt] if 0 <= attempt < len(ceilings) else ceilings[-1]

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.config.retry_after_max_s)
        return self._rng.random() * self.ceiling(attempt)
