"""JWT authentication filter (Envoy's jwt_authn): find a token, verify it, expose its claims.

Istio semantics (Envoy `requires_any: [providers..., allow_missing]`): a request without a
token passes with no request principal; a token that does not verify — bad signature, no key
for it, unknown issuer, wrong audience, expired, not yet valid, `alg: none` or HMAC — is
answered 401 `jwt_invalid`. A verified token gives RBAC the request principal `iss/sub`, the
audiences and the claims (`REQUEST_PRINCIPAL`, `AUDIENCES`, `CLAIMS` in `RequestState.auth`).

Signatures are checked with `cryptography`: RS256/384/512, PS256/384/512, ES256/384/512 and
EdDSA (Ed25519). Results, good and bad, are cached per token (bounded LRU; a good one until its
`exp`), so a repeated token costs a dict lookup. The keys are part of the listener's config: a
key rotation is a config push, which builds a new filter with an empty cache.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hyphal.proxy.filters.chain import LocalReply, RequestState

__all__ = [
    "AUDIENCES",
    "CLAIMS",
    "REQUEST_PRINCIPAL",
    "JwkError",
    "JwtFilter",
    "JwtProvider",
    "Key",
    "TokenLocation",
    "parse_jwks",
    "verify",
]

REQUEST_PRINCIPAL = "request.auth.principal"
AUDIENCES = "request.auth.audiences"
CLAIMS = "request.auth.claims"

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512,
}
_EC_CURVES: dict[str, tuple[type[ec.EllipticCurve], str, int]] = {
    "P-256": (ec.SECP256R1, "ES256", 32),
    "P-384": (ec.SECP384R1, "ES384", 48),
    "P-521": (ec.SECP521R1, "ES512", 66),
}
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                        "ES256", "ES384", "ES512", "EdDSA"})


class JwkError(ValueError):
    """A JSON Web Key Set cannot be used (the message says which key and why)."""


class InvalidToken(Exception):
    """Why a token does not verify (logged, and counted; the client sees `jwt_invalid`)."""


@dataclass(frozen=True, slots=True)
class Key:
    """One public key of a JWKS: its `kid` (None: none given), key type and key object."""

    kid: str | None
    kty: str  # RSA, EC (with its ES alg), OKP
    alg: str | None  # the JWK's `alg`, or the only one its curve allows
    public: Any  # rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

    def accepts(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if self.kty == "RSA":
            return alg[:2] in ("RS", "PS")
        if self.kty == "EC":
            return alg.startswith("ES")
        return alg == "EdDSA"


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _int(data: str) -> int:
    return int.from_bytes(_b64(data), "big")


def parse_jwks(text: str) -> tuple[Key, ...]:
    """The usable public keys of a JWKS (JSON). Keys of other types or uses are skipped;
    a key of a supported type that is malformed is an error."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise JwkError(f"the JWKS is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwkError('the JWKS must be {"keys": [...]}')
    out: list[Key] = []
    for i, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        alg = jwk.get("alg")
        try:
            kty = jwk.get("kty")
            if kty == "RSA":
                public: Any = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()
            elif kty == "EC" and jwk.get("crv") in _EC_CURVES:
                curve, ec_alg, _ = _EC_CURVES[jwk["crv"]]
                public = ec.EllipticCurvePublicNumbers(
                    _int(jwk["x"]), _int(jwk["y"]), curve()).public_key()
                alg = alg or ec_alg
            elif kty == "OKP" and jwk.get("crv") == "Ed25519":
                public = ed25519.Ed25519PublicKey.from_public_bytes(_b64(jwk["x"]))
                alg = alg or "EdDSA"
            else:
                continue  # a key type hyphal does not verify with (oct, X25519, ...)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise JwkError(f"JWKS key {i} (kid {kid!r}, kty {jwk.get('kty')!r}) is not a "
                           f"valid public key: {exc!r}") from None
        out.append(Key(str(kid) if kid is not None else None, kty, alg, public))
    return tuple(out)


def _check_signature(key: Key, alg: str, signed: bytes, sig: bytes) -> bool:
    try:
        if alg == "EdDSA":
            key.public.verify(sig, signed)
        elif alg[:2] == "RS":
            key.public.verify(sig, signed, padding.PKCS1v15(), _HASHES[alg[2:]]())
        elif alg[:2] == "PS":
            h = _HASHES[alg[2:]]()
            key.public.verify(sig, signed, padding.PSS(padding.MGF1(h), h.digest_size), h)
        else:  # ES: JOSE sends r || s, fixed width
            size = next(n for _, a, n in _EC_CURVES.values() if a == alg)
            if len(sig) != 2 * size or key.public.curve.name != _curve_name(alg):
                return False
            r, s = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
            key.public.verify(encode_dss_signature(r, s), signed,
                              ec.ECDSA(_HASHES[alg[2:]]()))
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


def _curve_name(alg: str) -> str:
    return {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}[alg]


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64(part))
    except (ValueError, binascii.Error):
        raise InvalidToken(f"the {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"the {what} is not a JSON object")
    return value


def _number(payload: Mapping[str, Any], claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidToken(f"`{claim}` is not a number")
    return float(value)


def verify(token: str, keys: tuple[Key, ...], now: float, skew_s: float = 60.0
           ) -> dict[str, Any]:
    """The payload of `token` if its signature verifies with one of `keys` and it is within
    `exp`/`nbf` (± skew); raises InvalidToken saying why otherwise. Issuer and audience are
    the caller's to check."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a JWS compact serialization (header.payload.signature)")
    header = _json_part(parts[0], "header")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidToken(f"algorithm {alg!r} is not accepted")
    payload = _json_part(parts[1], "payload")
    try:
        sig = _b64(parts[2])
    except (ValueError, binascii.Error):
        raise InvalidToken("the signature is not base64url") from None
    kid = header.get("kid")
    candidates = [k for k in keys if k.accepts(alg) and (kid is None or k.kid in (kid, None))]
    if not candidates:
        raise InvalidToken(f"no key for kid {kid!r} and alg {alg}")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not any(_check_signature(k, alg, signed, sig) for k in candidates):
        raise InvalidToken("the signature does not verify")
    exp = _number(payload, "exp")
    if exp is not None and now > exp + skew_s:
        raise InvalidToken("the token has expired")
    nbf = _number(payload, "nbf")
    if nbf is not None and now + skew_s < nbf:
        raise InvalidToken("the token is not valid yet")
    return payload


@dataclass(frozen=True, slots=True)
class TokenLocation:
    """A header (lower-case name, value prefix) or, with `param`, a query parameter."""

    header: str | None = None
    prefix: str = ""
    param: str | None = None


DEFAULT_LOCATIONS = (TokenLocation("authorization", "Bearer "), TokenLocation(param="access_token"))


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One issuer (Envoy JwtProvider): keys, audiences, where its tokens are, what to forward."""

    name: str
    issuer: str
    keys: tuple[Key, ...]
    audiences: frozenset[str] = frozenset()
    locations: tuple[TokenLocation, ...] = DEFAULT_LOCATIONS
    forward: bool = False  # keep the token header on the request
    payload_header: str | None = None  # forward_payload_header (lower-case)
    clock_skew_s: float = 60.0


_Result = tuple[JwtProvider, dict[str, Any]] | InvalidToken
_CACHE_SIZE = 1024


def _extract(headers: list[tuple[bytes, bytes]], query: str, loc: TokenLocation
             ) -> str | None:
    if loc.param is not None:
        if not query:
            return None
        for key, param in parse_qsl(query, keep_blank_values=False):
            if key == loc.param:
                return param
        return None
    assert loc.header is not None
    wanted = loc.header.encode("latin-1")
    prefix = loc.prefix.encode("latin-1")
    for name, value in headers:
        if name.lower() == wanted:
            if prefix:
                if value[:len(prefix)].lower() != prefix.lower():
                    continue
                value = value[len(prefix):]
            return value.strip().decode("latin-1") or None
    return None


class JwtFilter:
    """The jwt_authn filter of one listener: providers, and a cache of verified tokens."""

    __slots__ = ("_cache", "_payload_headers", "allow_failed", "allow_missing", "providers")

    def __init__(self, providers: tuple[JwtProvider, ...], *, allow_missing: bool = True,
                 allow_failed: bool = False) -> None:
        self.providers = providers
        self.allow_missing = allow_missing  # Istio's semantics: no token, no principal
        self.allow_failed = allow_failed  # allow_missing_or_failed
        self._cache: OrderedDict[str, tuple[float, _Result]] = OrderedDict()
        # Every provider's payload header: only this filter may set one (a caller's own copy
        # would read as verified claims to the app).
        self._payload_headers = frozenset(p.payload_header.encode("latin-1")
                                          for p in providers if p.payload_header is not None)

    def _verify(self, token: str, now: float) -> _Result:
        hit = self._cache.get(token)
        if hit is not None and now <= hit[0]:
            self._cache.move_to_end(token)
            return hit[1]
        result: _Result
        expires = now + 300.0  # failures and exp-less tokens are re-checked after 5 minutes
        try:
            unverified = _json_part(token.split(".")[1], "payload") if token.count(".") == 2 \
                else {}
            issuer = unverified.get("iss")
            provider = next((p for p in self.providers if p.issuer == issuer), None)
            if provider is None:
                raise InvalidToken(f"issuer {issuer!r} is not configured")
            payload = verify(token, provider.keys, now, provider.clock_skew_s)
            if payload.get("iss") != provider.issuer:
                raise InvalidToken(f"issuer {payload.get('iss')!r} is not {provider.issuer!r}")
            if provider.audiences:
                aud = payload.get("aud")
                auds = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) \
                    else set()
                if not auds & provider.audiences:
                    raise InvalidToken(f"audience {aud!r} is not one of "
                                       f"{sorted(provider.audiences)}")
            exp = _number(payload, "exp")
            if exp is not None:
                expires = min(expires, exp + provider.clock_skew_s)
            result = (provider, payload)
        except InvalidToken as exc:
            result = exc
        self._cache[token] = (expires, result)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def _find(self, state: RequestState) -> tuple[str, TokenLocation] | None:
        for p in self.providers:
            for loc in p.locations:
                token = _extract(state.headers, state.query, loc)
                if token is not None:
                    return token, loc
        return None

    def apply(self, state: RequestState, now: float) -> None:
        # The app must not mistake a caller's own payload header for a verified one: drop
        # them all first, whatever the token (none, invalid but allowed, another provider's).
        spoofable = self._payload_headers
        if spoofable and any(n.lower() in spoofable for n, _ in state.headers):
            state.headers = [(n, v) for n, v in state.headers if n.lower() not in spoofable]
        found = self._find(state)
        if found is None:
            if not self.allow_missing and not self.allow_failed:
                state.reply = LocalReply(401, "jwt_missing")
            return
        token, loc = found
        result = self._verify(token, now)
        if isinstance(result, InvalidToken):
            if state.stats is not None:
                state.stats.count("hyphal_jwt_authn_denied", "jwt_invalid")
            if not self.allow_failed:
                state.reply = LocalReply(
                    401, "jwt_invalid", ((b"www-authenticate", b'Bearer realm="hyphal"'),))
            return
        provider, payload = result
        aud = payload.get("aud")
        state.auth = {
            REQUEST_PRINCIPAL: f"{payload.get('iss', '')}/{payload.get('sub', '')}",
            AUDIENCES: [aud] if isinstance(aud, str) else list(aud or ()),
            CLAIMS: payload,
        }
        headers = state.headers
        if not provider.forward and loc.header is not None:
            drop = loc.header.encode("latin-1")
            headers = [(n, v) for n, v in headers if n.lower() != drop]
        if provider.payload_header is not None:
            headers = [*headers, (provider.payload_header.encode("latin-1"),
                                  token.split(".")[1].encode("ascii"))]
        state.headers = headers
