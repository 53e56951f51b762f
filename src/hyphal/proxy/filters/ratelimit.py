"""Local rate limit filter (Envoy's local_ratelimit): token buckets, one per listener and one
per caller identity (bounded LRU), checked before the request reaches RBAC and the app.

A request passes when the listener's bucket (if any) and its caller's bucket (an override
for listed identities, else the per-identity rate, if any) both hold a token; only then are
tokens taken. Buckets refill continuously at `tokens_per_fill / fill_interval` up to
`max_tokens`. Bucket state outlives config pushes that leave the listener's limits as they
were (`RateLimitFilter.for_config` reuses it), so a push does not hand out a fresh burst.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass

from hyphal.proxy.filters.chain import LocalReply, RequestState

__all__ = ["ANONYMOUS", "BucketSpec", "RateLimitConfig", "RateLimitFilter", "TokenBucket"]

ANONYMOUS = ""  # the identity of plaintext callers: they share one bucket


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """Envoy's TokenBucket: `max_tokens`, refilled by `tokens_per_fill` each `fill_interval_s`."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval_s: float

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.tokens_per_fill < 1 or self.fill_interval_s <= 0:
            raise ValueError("a token bucket needs max_tokens >= 1, tokens_per_fill >= 1 and "
                             "a positive fill_interval")

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.tokens_per_fill / self.fill_interval_s


class TokenBucket:
    """Mutable bucket state (runtime, not config); time is passed in, never read here."""

    __slots__ = ("last", "spec", "tokens")

    def __init__(self, spec: BucketSpec, now: float) -> None:
        self.spec = spec
        self.tokens = float(spec.max_tokens)
        self.last = now

    def refill(self, now: float) -> float:
        """Tokens available at `now` (a clock going backwards adds nothing)."""
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(float(self.spec.max_tokens), self.tokens + elapsed * self.spec.rate)
            self.last = now
        return self.tokens

    def take(self) -> None:
        """Take one token (call after `refill` said there is one)."""
        self.tokens -= 1.0

    def reset_after(self) -> int:
        """Whole seconds until the next token (for `x-ratelimit-reset`)."""
        missing = 1.0 - self.tokens
        return max(1, math.ceil(missing / self.spec.rate)) if missing > 0 else 0


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """One listener's compiled local_ratelimit filter. `identity` is the per-caller bucket
    (None: none); `overrides` map SPIFFE ids to their own per-caller bucket."""

    stat_prefix: str
    total: BucketSpec | None = None
    identity: BucketSpec | None = None
    overrides: tuple[tuple[str, BucketSpec], ...] = ()
    max_identities: int = 10_000
    enabled: float = 1.0  # filter_enabled as a fraction: share of requests checked
    enforced: float = 1.0  # filter_enforced: share of limited requests actually refused
    x_ratelimit_headers: bool = False


_STATE_LIMIT = 256
_STATE: OrderedDict[RateLimitConfig, RateLimitFilter] = OrderedDict()


class RateLimitFilter:
    """The filter of one listener: its config and its buckets."""

    __slots__ = ("_rng", "callers", "config", "overrides", "total")

    def __init__(self, config: RateLimitConfig, now: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.total = TokenBucket(config.total, now) if config.total is not None else None
        self.overrides = dict(config.overrides)
        self.callers: OrderedDict[str, TokenBucket] = OrderedDict()
        self._rng = rng or random.Random()

    @classmethod
    def for_config(cls, config: RateLimitConfig) -> RateLimitFilter:
        """The filter for `config`, reusing the buckets of an equal config seen before."""
        found = _STATE.get(config)
        if found is None:
            found = _STATE[config] = cls(config)
            while len(_STATE) > _STATE_LIMIT:
                _STATE.popitem(last=False)
        else:
            _STATE.move_to_end(config)
        return found

    def _caller(self, identity: str, now: float) -> TokenBucket | None:
        spec = self.overrides.get(identity, self.config.identity) if identity else \
            self.config.identity
        if spec is None:
            return None
        bucket = self.callers.get(identity)
        if bucket is None:
            bucket = self.callers[identity] = TokenBucket(spec, now)
            if len(self.callers) > self.config.max_identities:
                self.callers.popitem(last=False)  # least recently seen caller
        else:
            self.callers.move_to_end(identity)
        return bucket

    def decide(self, identity: str | None, now: float) -> TokenBucket | None:
        """None when the request may pass (tokens taken), else the bucket that is empty."""
        caller = self._caller(identity or ANONYMOUS, now)
        total = self.total
        if total is not None and total.refill(now) < 1.0:
            return total
        if caller is not None and caller.refill(now) < 1.0:
            return caller
        if total is not None:
            total.take()
        if caller is not None:
            caller.take()
        return None

    def apply(self, state: RequestState, now: float) -> None:
        cfg = self.config
        if cfg.enabled < 1.0 and self._rng.random() >= cfg.enabled:
            return
        empty = self.decide(state.principal, now)
        enforce = empty is not None and (cfg.enforced >= 1.0
                                         or self._rng.random() < cfg.enforced)
        if state.stats is not None:
            decision = "limited" if enforce else "allowed"
            state.stats.count_labeled(
                "hyphal_ratelimit_total", (("listener", cfg.stat_prefix), ("decision", decision)))
        if not enforce or empty is None:
            return
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if cfg.x_ratelimit_headers:
            limit = str(empty.spec.max_tokens).encode()
            window = max(1, round(empty.spec.fill_interval_s))
            headers = (
                (b"x-ratelimit-limit", limit + b", " + limit + b";w=%d" % window),
                (b"x-ratelimit-remaining", b"0"),
                (b"x-ratelimit-reset", str(empty.reset_after()).encode()),
            )
        state.reply = LocalReply(429, "rate_limited", headers)
