"""Local rate limit core: token bucket arithmetic on an injected clock, per-identity buckets
(LRU-bounded), overrides, filter_enabled/enforced and the 429 it answers."""

from __future__ import annotations

import random

import pytest

from hyphal.proxy.filters.chain import RequestState
from hyphal.proxy.filters.ratelimit import (
    BucketSpec,
    RateLimitConfig,
    RateLimitFilter,
    TokenBucket,
)
from hyphal.telemetry.stats import Stats

A = "spiffe://cluster.local/ns/demo/sa/a"
B = "spiffe://cluster.local/ns/demo/sa/b"


def passes(f: RateLimitFilter, who: str | None, now: float) -> bool:
    return f.decide(who, now) is None


def test_bucket_starts_full_and_refills_continuously() -> None:
    b = TokenBucket(BucketSpec(max_tokens=5, tokens_per_fill=10, fill_interval_s=1.0), now=100.0)
    assert b.refill(100.0) == 5.0
    for _ in range(5):
        b.take()
    assert b.refill(100.0) == 0.0
    assert b.reset_after() == 1
    assert b.refill(100.25) == pytest.approx(2.5)  # 10 per second
    assert b.refill(200.0) == 5.0  # capped at max_tokens
    assert b.refill(150.0) == 5.0  # a clock going back adds nothing


def test_bucket_spec_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="fill_interval"):
        BucketSpec(1, 1, 0.0)


def test_total_bucket_admits_burst_then_rate() -> None:
    f = RateLimitFilter(RateLimitConfig("l", total=BucketSpec(20, 20, 1.0)), now=0.0)
    admitted = sum(passes(f, None, 0.0) for _ in range(200))
    assert admitted == 20
    # one second later: exactly 20 more, whatever the identity
    admitted = sum(passes(f, A if i % 2 else B, 1.0) for i in range(200))
    assert admitted == 20


def test_identity_buckets_are_per_caller_and_plaintext_shares_one() -> None:
    f = RateLimitFilter(RateLimitConfig("l", identity=BucketSpec(3, 3, 1.0)), now=0.0)
    assert [passes(f, A, 0.0) for _ in range(4)] == [True, True, True, False]
    assert [passes(f, B, 0.0) for _ in range(4)] == [True, True, True, False]
    assert [passes(f, None, 0.0) for _ in range(4)] == [True, True, True, False]
    assert set(f.callers) == {A, B, ""}


def test_overrides_replace_the_identity_rate_for_listed_callers() -> None:
    cfg = RateLimitConfig("l", identity=BucketSpec(2, 2, 1.0),
                          overrides=((A, BucketSpec(5, 5, 1.0)),))
    f = RateLimitFilter(cfg, now=0.0)
    assert sum(passes(f, A, 0.0) for _ in range(10)) == 5
    assert sum(passes(f, B, 0.0) for _ in range(10)) == 2


def test_override_without_identity_rate_limits_only_listed_callers() -> None:
    f = RateLimitFilter(RateLimitConfig("l", overrides=((A, BucketSpec(1, 1, 1.0)),)), now=0.0)
    assert sum(passes(f, A, 0.0) for _ in range(10)) == 1
    assert sum(passes(f, B, 0.0) for _ in range(10)) == 10


def test_no_token_is_taken_when_another_bucket_refuses() -> None:
    f = RateLimitFilter(RateLimitConfig("l", total=BucketSpec(10, 10, 1.0),
                                        identity=BucketSpec(1, 1, 1.0)), now=0.0)
    assert passes(f, A, 0.0)
    assert not passes(f, A, 0.0)  # A's bucket is empty: the total bucket keeps its token
    assert f.total is not None and f.total.refill(0.0) == 9.0


def test_identity_buckets_are_lru_bounded() -> None:
    f = RateLimitFilter(RateLimitConfig("l", identity=BucketSpec(1, 1, 1.0), max_identities=3),
                        now=0.0)
    for who in ("a", "b", "c"):
        assert passes(f, who, 0.0)
    assert not passes(f, "a", 0.0)  # "a" is now the most recently seen
    assert passes(f, "d", 0.0)  # evicts "b", the least recently seen
    assert list(f.callers) == ["c", "a", "d"]


def test_apply_answers_429_with_headers_and_counts() -> None:
    stats = Stats()
    cfg = RateLimitConfig("inbound|8080", total=BucketSpec(2, 1, 1.0), x_ratelimit_headers=True)
    f = RateLimitFilter(cfg, now=0.0)
    replies = []
    for _ in range(3):
        st = RequestState([], "", A, stats)
        f.apply(st, 0.0)
        replies.append(st.reply)
    assert replies[:2] == [None, None]
    reply = replies[2]
    assert reply is not None and (reply.status, reply.reason) == (429, "rate_limited")
    assert dict(reply.headers) == {b"x-ratelimit-limit": b"2, 2;w=1",
                                   b"x-ratelimit-remaining": b"0", b"x-ratelimit-reset": b"1"}
    labels = (("listener", "inbound|8080"),)
    assert stats.labeled("hyphal_ratelimit_total", (*labels, ("decision", "allowed"))) == 2
    assert stats.labeled("hyphal_ratelimit_total", (*labels, ("decision", "limited"))) == 1
    assert 'hyphal_ratelimit_total{listener="inbound|8080",decision="limited"} 1' in stats.render()


def test_not_enforced_counts_but_lets_through() -> None:
    f = RateLimitFilter(RateLimitConfig("l", total=BucketSpec(1, 1, 1.0), enforced=0.0), now=0.0)
    results = []
    for _ in range(3):
        st = RequestState([], "", None)
        f.apply(st, 0.0)
        results.append(st.reply)
    assert results == [None, None, None]


def test_filter_enabled_fraction_skips_checks() -> None:
    f = RateLimitFilter(RateLimitConfig("l", total=BucketSpec(1, 1, 1.0), enabled=0.5),
                        now=0.0, rng=random.Random(7))
    refused = 0
    for _ in range(400):
        st = RequestState([], "", None)
        f.apply(st, 0.0)
        refused += st.reply is not None
    assert 150 < refused < 250  # about half the requests are checked (and refused)


def test_equal_configs_share_bucket_state_across_pushes() -> None:
    cfg = RateLimitConfig("listener-x", total=BucketSpec(1, 1, 3600.0))
    first = RateLimitFilter.for_config(cfg)
    assert passes(first, None, 10.0)
    again = RateLimitFilter.for_config(
        RateLimitConfig("listener-x", total=BucketSpec(1, 1, 3600.0)))
    assert again is first and not passes(again, None, 10.0)
    other = RateLimitFilter.for_config(
        RateLimitConfig("listener-x", total=BucketSpec(2, 1, 3600.0)))
    assert other is not first
