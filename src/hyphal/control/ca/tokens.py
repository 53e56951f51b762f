"""Bootstrap tokens: compact HS256 JWTs that prove a workload's namespace and service account."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, TypeGuard

from hyphal.control.ca import files
from hyphal.identity.spiffe import SpiffeId

ISSUER = "hyphal"
KEY_FILE = "token-key"
KEY_BYTES = 32
MAX_TOKEN_BYTES = 4096
# Tolerated clock difference for `iat` in the future (tokens made on another machine).
CLOCK_SKEW_SECONDS = 60


class TokenError(Exception):
    """A token was refused; `reason` is short and safe to show (it never contains the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(part: str) -> bytes:
    if not part or any(c not in _B64_ALPHABET for c in part):
        raise TokenError("bad format: a part is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("bad format: a part is not base64url") from None


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_HEADER = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())


class TokenIssuer:
    """Mints and verifies bootstrap tokens with the HMAC key in `<state>/token-key`."""

    __slots__ = ("_key", "trust_domain")

    def __init__(self, key: bytes, trust_domain: str = "cluster.local") -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"token key must be at least {KEY_BYTES} bytes, got {len(key)}")
        SpiffeId(trust_domain, "x", "x")  # validates the spelling
        self._key = key
        self.trust_domain = trust_domain

    def __repr__(self) -> str:
        return f"TokenIssuer(trust_domain={self.trust_domain!r})"

    @classmethod
    def load_or_create(cls, state_dir: Path, trust_domain: str = "cluster.local") -> TokenIssuer:
        """Load `state_dir/token-key`, creating 32 random bytes (mode 0600) on first use."""
        state_dir = Path(state_dir)
        path = state_dir / KEY_FILE
        with files.locked(state_dir):
            if not path.exists():
                files.write_new(path, secrets.token_bytes(KEY_BYTES))
            key = files.read_private(path)
        if len(key) < KEY_BYTES:
            raise ValueError(
                f"{path} holds {len(key)} bytes; a token key needs {KEY_BYTES}. "
                "Move it away to make a new one (existing tokens stop working)"
            )
        return cls(key, trust_domain)

    def mint(
        self,
        namespace: str,
        service_account: str,
        ttl: dt.timedelta,
        *,
        now: float | None = None,
    ) -> str:
        """A token proving `spiffe://<td>/ns/<namespace>/sa/<service_account>` for `ttl`."""
        if ttl <= dt.timedelta(0):
            raise ValueError(f"token lifetime must be positive, got {ttl}")
        sid = SpiffeId(self.trust_domain, namespace, service_account)
        iat = int(time.time() if now is None else now)
        claims = {
            "iss": ISSUER,
            "sub": sid.uri,
            "ns": namespace,
            "sa": service_account,
            "iat": iat,
            "exp": iat + max(1, int(ttl.total_seconds())),
            "jti": _b64encode(os.urandom(9)),
        }
        payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{_HEADER}.{payload}"
        return f"{signing_input}.{_b64encode(self._sign(signing_input))}"

    def verify(self, token: str, *, now: float | None = None) -> SpiffeId:
        """The identity a token proves; raises TokenError saying why it is refused."""
        claims = self.claims(token, now=now)
        return _identity(claims, self.trust_domain)

    def claims(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """Verified claims of `token` (signature, algorithm, issuer and expiry checked)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise TokenError("bad format: not a token")
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise TokenError("bad format: a JWT has three dot-separated parts")
        header_b64, payload_b64, signature_b64 = parts
        header = _json_object(_b64decode(header_b64), "header")
        alg = header.get("alg")
        if alg != "HS256":
            raise TokenError(f"unsupported algorithm {str(alg)[:20]!r}: only HS256 is accepted")
        signature = _b64decode(signature_b64)
        expected = self._sign(f"{header_b64}.{payload_b64}")
        if not hmac.compare_digest(signature, expected):
            raise TokenError("bad signature: the token was not made with this control plane's key")
        claims = _json_object(_b64decode(payload_b64), "payload")
        if claims.get("iss") != ISSUER:
            raise TokenError(f"wrong issuer {str(claims.get('iss'))[:40]!r}: expected {ISSUER!r}")
        current = time.time() if now is None else now
        exp, iat = claims.get("exp"), claims.get("iat")
        if not _is_int(exp) or not _is_int(iat):
            raise TokenError("bad format: iat and exp must be integers")
        if current >= exp:
            ago = int(current - exp)
            raise TokenError(f"expired {ago}s ago: create a new one with `hyphal token create`")
        if iat > current + CLOCK_SKEW_SECONDS:
            raise TokenError("issued in the future: check the clocks")
        return claims

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise TokenError(f"bad format: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"bad format: {what} is not a JSON object")
    return value


def _identity(claims: dict[str, Any], trust_domain: str) -> SpiffeId:
    try:
        sid = SpiffeId.parse(str(claims.get("sub")))
    except ValueError:
        raise TokenError("bad format: sub is not a SPIFFE id") from None
    if claims.get("ns") != sid.namespace or claims.get("sa") != sid.service_account:
        raise TokenError("bad format: ns/sa claims disagree with sub")
    if sid.trust_domain != trust_domain:
        raise TokenError(
            f"wrong trust domain {sid.trust_domain!r}: this control plane serves {trust_domain!r}"
        )
    return sid
