"""A caller's own copy of a header the mesh vouches for never reaches the app: the JWT
payload header (every provider's `forward_payload_header`, with a valid, an invalid under
`allow_missing_or_failed`, or no token), and `x-hyphal-deadline` values that are not a
non-negative millisecond count are ignored rather than trusted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy" / "filters"))
from jwt_helpers import SigningKey, jwks

from hyphal.proxy.filters.chain import RequestState
from hyphal.proxy.filters.jwt import JwtFilter, JwtProvider, parse_jwks
from hyphal.proxy.resilience.deadline import (
    effective_timeout,
    parse_deadline_header,
    remaining_from_headers,
)

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.make("ES256", "k1")


def _providers(key: SigningKey) -> tuple[JwtProvider, JwtProvider]:
    keys = parse_jwks(jwks(key))
    return (JwtProvider("a", "https://a.test", keys, payload_header="x-jwt-a"),
            JwtProvider("b", "https://b.test", keys, payload_header="x-jwt-b"))


def _state(headers: list[tuple[bytes, bytes]]) -> RequestState:
    return RequestState(headers, "", "spiffe://cluster.local/ns/demo/sa/client")


def _names(state: RequestState) -> dict[bytes, bytes]:
    return {n.lower(): v for n, v in state.headers}


def test_valid_token_of_one_provider_strips_the_other_providers_payload_header(
    key: SigningKey,
) -> None:
    token = key.sign({"iss": "https://a.test", "sub": "alice", "exp": NOW + 60})
    state = _state([(b"authorization", f"Bearer {token}".encode()),
                    (b"X-Jwt-B", b"eyJzdWIiOiJhZG1pbiJ9")])  # {"sub":"admin"}, unsigned
    JwtFilter(_providers(key)).apply(state, NOW)
    assert state.reply is None and state.auth is not None
    names = _names(state)
    assert b"x-jwt-b" not in names
    assert names[b"x-jwt-a"] == token.split(".")[1].encode()


def test_invalid_token_allowed_through_carries_no_payload_header(key: SigningKey) -> None:
    forged = SigningKey.make("ES256", "k1").sign({"iss": "https://a.test", "sub": "admin"})
    state = _state([(b"authorization", f"Bearer {forged}".encode()),
                    (b"x-jwt-a", b"eyJzdWIiOiJhZG1pbiJ9")])
    JwtFilter(_providers(key), allow_failed=True).apply(state, NOW)
    assert state.reply is None and state.auth is None
    assert b"x-jwt-a" not in _names(state)


def test_no_token_strips_every_payload_header(key: SigningKey) -> None:
    state = _state([(b"x-jwt-a", b"e30"), (b"X-JWT-B", b"e30"), (b"accept", b"*/*")])
    JwtFilter(_providers(key)).apply(state, NOW)
    assert state.reply is None
    assert set(_names(state)) == {b"accept"}


@pytest.mark.parametrize("value", ["-1", "-0", "1e9", "abc", "", " ", "0x10", "١٢", "+5",
                                   "9" * 13, "99999999999999999999999999", "1.5", "\x00"])
def test_malformed_deadline_is_ignored(value: str) -> None:
    assert parse_deadline_header(value) is None
    assert remaining_from_headers({"x-hyphal-deadline": value}) is None


def test_huge_deadline_is_bounded_by_the_route_timeout() -> None:
    remaining = parse_deadline_header("9" * 12)
    assert remaining is not None and remaining > 0
    assert effective_timeout(5.0, remaining) == 5.0
