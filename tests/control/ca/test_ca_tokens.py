"""Bootstrap tokens: HS256 JWTs minted and verified by TokenIssuer."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path

import pytest

from hyphal.control.ca.tokens import TokenError, TokenIssuer
from hyphal.identity.spiffe import SpiffeId

HOUR = dt.timedelta(hours=1)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.fixture
def issuer(tmp_path: Path) -> TokenIssuer:
    return TokenIssuer.load_or_create(tmp_path / "state")


def test_key_file_is_32_random_bytes_0600_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = TokenIssuer.load_or_create(state)
    key = state / "token-key"
    assert len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    token = first.mint("shop", "product", HOUR)
    # A restart loads the same key, so earlier tokens stay valid.
    assert TokenIssuer.load_or_create(state).verify(token) == SpiffeId(
        "cluster.local", "shop", "product"
    )
    assert key.read_bytes() == key.read_bytes()
    assert TokenIssuer.load_or_create(tmp_path / "other").mint("a", "b", HOUR) != token


def test_mint_has_the_documented_claims(issuer: TokenIssuer) -> None:
    now = time.time()
    token = issuer.mint("shop", "product", HOUR)
    header_b64, payload_b64, _ = token.split(".")
    assert json.loads(unb64(header_b64)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(unb64(payload_b64))
    assert claims["iss"] == "hyphal"
    assert claims["sub"] == "spiffe://cluster.local/ns/shop/sa/product"
    assert (claims["ns"], claims["sa"]) == ("shop", "product")
    assert abs(claims["iat"] - now) < 5 and claims["exp"] - claims["iat"] == 3600


def test_verify_returns_the_identity(issuer: TokenIssuer) -> None:
    token = issuer.mint("shop", "product", HOUR)
    assert issuer.verify(token) == SpiffeId("cluster.local", "shop", "product")


def test_tampered_payload_is_a_bad_signature(issuer: TokenIssuer) -> None:
    header, payload, sig = issuer.mint("shop", "product", HOUR).split(".")
    claims = json.loads(unb64(payload))
    claims["sa"] = "admin"
    claims["sub"] = "spiffe://cluster.local/ns/shop/sa/admin"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{sig}"
    with pytest.raises(TokenError, match="bad signature") as info:
        issuer.verify(forged)
    assert info.value.reason.startswith("bad signature")
    assert forged not in str(info.value)


def test_tampered_signature_is_refused(issuer: TokenIssuer) -> None:
    header, payload, sig = issuer.mint("shop", "product", HOUR).split(".")
    raw = bytearray(unb64(sig))
    raw[0] ^= 1
    with pytest.raises(TokenError, match="bad signature"):
        issuer.verify(f"{header}.{payload}.{b64(bytes(raw))}")


def test_token_of_another_control_plane_is_refused(issuer: TokenIssuer, tmp_path: Path) -> None:
    other = TokenIssuer.load_or_create(tmp_path / "elsewhere")
    with pytest.raises(TokenError, match="bad signature"):
        issuer.verify(other.mint("shop", "product", HOUR))


def test_alg_none_is_refused(issuer: TokenIssuer) -> None:
    _, payload, _ = issuer.mint("shop", "product", HOUR).split(".")
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.{b64(b'x')}"):
        with pytest.raises(TokenError, match="algorithm 'none'"):
            issuer.verify(token)


def test_other_algorithms_are_refused_even_if_hmac_is_right(tmp_path: Path) -> None:
    state = tmp_path / "s"
    issuer = TokenIssuer.load_or_create(state)
    key = (state / "token-key").read_bytes()
    _, payload, _ = issuer.mint("shop", "product", HOUR).split(".")
    header = b64(json.dumps({"alg": "HS512"}).encode())
    sig = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha512).digest()
    with pytest.raises(TokenError, match="HS512"):
        issuer.verify(f"{header}.{payload}.{b64(sig)}")


def test_expired_token_is_refused(issuer: TokenIssuer) -> None:
    token = issuer.mint("shop", "product", dt.timedelta(seconds=10), now=time.time() - 20)
    with pytest.raises(TokenError, match="expired") as info:
        issuer.verify(token)
    assert info.value.reason.startswith("expired")
    # Still valid a moment before expiry.
    assert issuer.verify(token, now=time.time() - 15).namespace == "shop"


def test_wrong_issuer_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s"
    issuer = TokenIssuer.load_or_create(state)
    key = (state / "token-key").read_bytes()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {
        "iss": "someone-else",
        "sub": "spiffe://cluster.local/ns/shop/sa/product",
        "ns": "shop",
        "sa": "product",
        "iat": now,
        "exp": now + 60,
    }
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="wrong issuer"):
        issuer.verify(f"{header}.{payload}.{b64(sig)}")


def test_wrong_trust_domain_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s"
    minted = TokenIssuer.load_or_create(state, "other.domain").mint("shop", "p", HOUR)
    with pytest.raises(TokenError, match="wrong trust domain"):
        TokenIssuer.load_or_create(state, "cluster.local").verify(minted)


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b", "a.b.c.d", "!!!.???.###", "e30.e30.", "W10.e30.AAAA", "x" * 5000],
)
def test_bad_format_is_refused(issuer: TokenIssuer, garbage: str) -> None:
    with pytest.raises(TokenError, match=r"bad format|algorithm"):
        issuer.verify(garbage)


def test_compare_is_constant_time() -> None:
    import inspect

    from hyphal.control.ca import tokens

    assert "hmac.compare_digest" in inspect.getsource(tokens.TokenIssuer.claims)


def test_mint_refuses_invalid_names_and_ttl(issuer: TokenIssuer) -> None:
    with pytest.raises(ValueError, match="namespace"):
        issuer.mint("bad ns", "sa", HOUR)
    with pytest.raises(ValueError, match="positive"):
        issuer.mint("ns", "sa", dt.timedelta(0))
