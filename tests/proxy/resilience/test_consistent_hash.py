"""Ring hash and Maglev: stability when an endpoint joins, weights, exclusion; hash keys."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hyphal.proxy.resilience.consistent_hash import Maglev, RingHash, hash64
from hyphal.proxy.resilience.hash_policy import HashPolicy, hash_key_for
from hyphal.proxy.runtime.tables import HashPolicy as TablesHashPolicy

KEYS = [f"user-{i}".encode() for i in range(10_000)]
ENDPOINTS = tuple(f"10.0.0.{i}:8080" for i in range(10))
JOINED = ENDPOINTS + ("10.0.0.99:8080",)


def test_hash64_is_stable_across_processes() -> None:
    # A fixed value: a change here would reshuffle every sticky session in a mesh upgrade.
    assert hash64(b"hyphal") == int.from_bytes(
        __import__("hashlib").blake2b(b"hyphal", digest_size=8).digest(), "little")


@pytest.mark.parametrize("kind", [RingHash, Maglev])
def test_only_about_one_nth_of_keys_move_when_an_endpoint_joins(kind: type) -> None:
    before = kind(ENDPOINTS)
    after = kind(JOINED)
    moved = [k for k in KEYS if before.pick(k) != after.pick(k)]
    fraction = len(moved) / len(KEYS)
    ideal = 1 / len(JOINED)  # 9.1%
    assert ideal * 0.6 < fraction < ideal * 1.5, fraction
    to_new = sum(after.pick(k) == "10.0.0.99:8080" for k in moved)
    assert to_new / len(moved) > (0.999 if kind is RingHash else 0.9)


@pytest.mark.parametrize("kind", [RingHash, Maglev])
def test_keys_spread_evenly_and_by_weight(kind: type) -> None:
    balancer = kind(ENDPOINTS[:4], [1, 1, 2, 4])
    counts = Counter(balancer.pick(k) for k in KEYS)
    expected = {ENDPOINTS[0]: 0.125, ENDPOINTS[1]: 0.125, ENDPOINTS[2]: 0.25,
                ENDPOINTS[3]: 0.5}
    tolerance = 0.04 if kind is RingHash else 0.02
    for key, share in expected.items():
        assert counts[key] / len(KEYS) == pytest.approx(share, abs=tolerance)


def test_ring_has_at_least_the_minimum_size() -> None:
    assert len(RingHash(ENDPOINTS[:3])) >= 1024
    assert len(RingHash(ENDPOINTS[:3], min_ring_size=4096)) >= 4096


def test_ring_exclusion_lands_where_a_ring_without_the_endpoint_would() -> None:
    ring = RingHash(ENDPOINTS)
    gone = ENDPOINTS[3]
    for key in KEYS[:2000]:
        picked = ring.pick(key, exclude={gone})
        assert picked != gone
        if ring.pick(key) != gone:
            assert picked == ring.pick(key)  # keys of other endpoints do not move
    assert ring.pick(b"x", exclude=set(ENDPOINTS)) is None


def test_maglev_exclusion_is_deterministic_and_avoids_the_excluded() -> None:
    table = Maglev(ENDPOINTS)
    gone = {ENDPOINTS[0], ENDPOINTS[1]}
    for key in KEYS[:2000]:
        picked = table.pick(key, exclude=gone)
        assert picked not in gone and picked == table.pick(key, exclude=gone)
    assert table.pick(b"x", exclude=set(ENDPOINTS)) is None
    assert sum(table.share().values()) == pytest.approx(1.0)


def test_builders_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="prime"):
        Maglev(ENDPOINTS, table_size=65536)
    with pytest.raises(ValueError, match="unique"):
        RingHash(("a:1", "a:1"))
    assert RingHash(()).pick(b"k") is None and Maglev(()).pick(b"k") is None


def test_hash_key_terms_in_order_first_value_wins() -> None:
    policy = (HashPolicy(header="x-user"), HashPolicy(query_parameter="id"),
              HashPolicy(source_ip=True))
    assert hash_key_for(policy, {"x-user": "alice"}, "id=7", "10.1.1.1").key == b"alice"
    assert hash_key_for(policy, {}, "a=1&id=7", "10.1.1.1").key == b"7"
    assert hash_key_for(policy, {}, "", "10.1.1.1").key == b"10.1.1.1"
    assert hash_key_for(policy, {}, "", None).key is None


def test_cookie_term_reads_the_cookie_or_generates_one() -> None:
    policy = (HashPolicy(cookie="session", cookie_ttl_s=3600, cookie_path="/shop"),)
    found = hash_key_for(policy, {"cookie": "a=1; session=abc; b=2"})
    assert found.key == b"abc" and found.set_cookie is None
    made = hash_key_for(policy, {"cookie": "a=1"}, rng=random.Random(1))
    assert made.generated_cookie is not None and made.key == made.generated_cookie.encode()
    assert made.set_cookie == (f"session={made.generated_cookie}; Path=/shop; Max-Age=3600; "
                               "HttpOnly")
    # The next request carries it and hashes the same.
    again = hash_key_for(policy, {"cookie": f"session={made.generated_cookie}"})
    assert again.key == made.key and again.set_cookie is None


def test_runtime_tables_hash_policy_is_accepted() -> None:
    policy = (TablesHashPolicy(header="x-shard"), TablesHashPolicy(cookie="sid"))
    assert hash_key_for(policy, {"x-shard": "7"}).key == b"7"
    made = hash_key_for(policy, {}, rng=random.Random(2))
    assert made.set_cookie is not None and made.set_cookie.startswith("sid=")
