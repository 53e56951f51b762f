"""JWT core: verification (good, expired, not yet valid, wrong audience, wrong issuer, bad
signature, alg none and HMAC refused, kid rotation), token locations, header changes, the
per-token cache, and the JWKS parser's errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jwt_helpers import SigningKey, b64, jwks

from hyphal.proxy.filters import jwt
from hyphal.proxy.filters.chain import RequestState
from hyphal.proxy.filters.jwt import (
    AUDIENCES,
    CLAIMS,
    REQUEST_PRINCIPAL,
    JwkError,
    JwtFilter,
    JwtProvider,
    TokenLocation,
    parse_jwks,
)

NOW = 1_700_000_000.0
ISS = "https://issuer.test"


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.make("RS256", "rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.make("ES256", "ec-1")


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return SigningKey.make("EdDSA", "ed-1")


def claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "sub": "alice", "aud": "shop", "exp": NOW + 600, **extra}


def provider(*keys: SigningKey, **kw: Any) -> JwtProvider:
    return JwtProvider(name="p", issuer=ISS, keys=parse_jwks(jwks(*keys)), **kw)


def run(f: JwtFilter, headers: list[tuple[bytes, bytes]], query: str = "",
        now: float = NOW) -> RequestState:
    st = RequestState(headers, query, None)
    f.apply(st, now)
    return st


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"api"), (b"authorization", f"Bearer {token}".encode())]


@pytest.mark.parametrize("which", ["rsa_key", "ec_key", "ed_key"])
def test_good_token_gives_principal_audiences_claims(which: str,
                                                     request: pytest.FixtureRequest) -> None:
    key: SigningKey = request.getfixturevalue(which)
    f = JwtFilter((provider(key, audiences=frozenset({"shop"})),))
    st = run(f, bearer(key.sign(claims(groups=["admin"]))))
    assert st.reply is None
    assert st.auth is not None
    assert st.auth[REQUEST_PRINCIPAL] == f"{ISS}/alice"
    assert st.auth[AUDIENCES] == ["shop"]
    assert st.auth[CLAIMS]["groups"] == ["admin"]
    assert st.headers == [(b"host", b"api")]  # forwardOriginalToken false: the token is dropped


@pytest.mark.parametrize(
    ("token_claims", "why"),
    [
        (claims(exp=NOW - 61), "expired"),
        (claims(nbf=NOW + 61), "not valid yet"),
        (claims(aud="other"), "audience"),
        (claims(aud=["x", "y"]), "audience"),
        (claims(iss="https://evil.test"), "issuer"),
        (claims(exp="tomorrow"), "not a number"),
    ],
)
def test_invalid_claims_are_refused(rsa_key: SigningKey, token_claims: dict[str, Any],
                                    why: str) -> None:
    p = provider(rsa_key, audiences=frozenset({"shop"}))
    f = JwtFilter((p,))
    st = run(f, bearer(rsa_key.sign(token_claims)))
    assert st.reply is not None and (st.reply.status, st.reply.reason) == (401, "jwt_invalid")
    assert st.auth is None
    with pytest.raises(jwt.InvalidToken, match=why) if why not in ("audience", "issuer") \
            else _no_raise():
        jwt.verify(rsa_key.sign(token_claims), p.keys, NOW)


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_skew_is_allowed(rsa_key: SigningKey) -> None:
    f = JwtFilter((provider(rsa_key),))
    assert run(f, bearer(rsa_key.sign(claims(exp=NOW - 30, nbf=NOW + 30)))).auth is not None


def test_bad_signature_is_refused(rsa_key: SigningKey) -> None:
    token = rsa_key.sign(claims())
    head, payload, sig = token.split(".")
    forged_payload = b64(json.dumps(claims(sub="mallory")).encode())
    for bad in (f"{head}.{forged_payload}.{sig}", f"{head}.{payload}.{sig[:-4]}AAAA"):
        st = run(JwtFilter((provider(rsa_key),)), bearer(bad))
        assert st.reply is not None and st.reply.reason == "jwt_invalid"
    other = SigningKey.make("RS256", "rsa-1")  # same kid, different key
    st = run(JwtFilter((provider(rsa_key),)), bearer(other.sign(claims())))
    assert st.reply is not None and st.reply.status == 401


def test_alg_none_and_hmac_are_refused(rsa_key: SigningKey) -> None:
    keys = provider(rsa_key).keys
    body = b64(json.dumps(claims()).encode())
    none = b64(b'{"alg":"none"}') + f".{body}."
    with pytest.raises(jwt.InvalidToken, match="'none' is not accepted"):
        jwt.verify(none, keys, NOW)
    hs = b64(b'{"alg":"HS256"}') + f".{body}.AAAA"
    with pytest.raises(jwt.InvalidToken, match="'HS256' is not accepted"):
        jwt.verify(hs, keys, NOW)
    st = run(JwtFilter((provider(rsa_key),)), bearer(none))
    assert st.reply is not None and st.reply.reason == "jwt_invalid"


def test_alg_must_fit_the_key_type(rsa_key: SigningKey, ed_key: SigningKey) -> None:
    # an EdDSA token naming the RSA key's kid must not be checked against that key
    token = ed_key.sign(claims(), header={"kid": "rsa-1"})
    with pytest.raises(jwt.InvalidToken, match="no key"):
        jwt.verify(token, provider(rsa_key).keys, NOW)


def test_kid_rotation(rsa_key: SigningKey) -> None:
    new = SigningKey.make("RS256", "rsa-2")
    both = JwtFilter((provider(rsa_key, new),))
    assert run(both, bearer(rsa_key.sign(claims()))).auth is not None
    assert run(both, bearer(new.sign(claims()))).auth is not None
    only_new = JwtFilter((provider(new),))  # the old key retired by a config push
    st = run(only_new, bearer(rsa_key.sign(claims())))
    assert st.reply is not None and st.reply.reason == "jwt_invalid"
    # a token without kid is tried against every key of its alg
    assert run(only_new, bearer(new.sign(claims(), header={"kid": None}))).auth is not None


def test_missing_token_passes_without_principal_and_strips_spoofed_payload(
        rsa_key: SigningKey) -> None:
    f = JwtFilter((provider(rsa_key, payload_header="x-jwt-payload"),))
    st = run(f, [(b"host", b"api"), (b"X-Jwt-Payload", b"eyJzdWIiOiJyb290In0")])
    assert st.reply is None and st.auth is None
    assert st.headers == [(b"host", b"api")]
    required = JwtFilter((provider(rsa_key),), allow_missing=False)
    st = run(required, [(b"host", b"api")])
    assert st.reply is not None and st.reply.status == 401


def test_unknown_issuer_is_refused(rsa_key: SigningKey) -> None:
    other = SigningKey.make("RS256", "x")
    st = run(JwtFilter((provider(rsa_key),)), bearer(other.sign(claims(iss="someone-else"))))
    assert st.reply is not None and st.reply.reason == "jwt_invalid"


def test_locations_forwarding_and_payload_header(rsa_key: SigningKey) -> None:
    token = rsa_key.sign(claims())
    p = provider(rsa_key, locations=(TokenLocation("x-jwt"), TokenLocation(param="token")),
                 forward=True, payload_header="x-jwt-payload")
    f = JwtFilter((p,))
    st = run(f, [(b"X-JWT", token.encode())])
    assert st.auth is not None
    assert dict(st.headers)[b"x-jwt-payload"] == token.split(".")[1].encode()
    assert dict(st.headers)[b"X-JWT"] == token.encode()  # forwarded
    st = run(f, [], query=f"a=1&token={token}")
    assert st.auth is not None
    # the default Authorization location is not one of this provider's
    assert run(f, bearer(token)).auth is None


def test_cache_makes_a_repeated_token_a_lookup(rsa_key: SigningKey,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = jwt.verify

    def counting(*args: Any, **kw: Any) -> dict[str, Any]:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(jwt, "verify", counting)
    f = JwtFilter((provider(rsa_key),))
    good = rsa_key.sign(claims(exp=NOW + 10))
    bad = good[:-4] + "AAAA"
    for _ in range(50):
        assert run(f, bearer(good)).auth is not None
        assert run(f, bearer(bad)).reply is not None
    assert len(calls) == 2
    # past exp (+ skew) the cached result is not used: the token is refused
    st = run(f, bearer(good), now=NOW + 100)
    assert st.reply is not None and st.reply.reason == "jwt_invalid"


def test_jwks_errors_name_the_key() -> None:
    with pytest.raises(JwkError, match="not valid JSON"):
        parse_jwks("{")
    with pytest.raises(JwkError, match=r"key 0 \(kid 'k', kty 'RSA'\)"):
        parse_jwks(json.dumps({"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB"}]}))
    # unknown types and encryption keys are skipped, not errors
    assert parse_jwks(json.dumps({"keys": [{"kty": "oct", "k": "x"},
                                           {"kty": "RSA", "use": "enc"}]})) == ()
