"""Test keys and JWTs signed with `cryptography` (RS256, ES256, EdDSA) and their JWKS."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int, size: int | None = None) -> str:
    length = size or max(1, (n.bit_length() + 7) // 8)
    return b64(n.to_bytes(length, "big"))


@dataclass(frozen=True)
class SigningKey:
    alg: str
    kid: str
    private: Any

    @classmethod
    def make(cls, alg: str, kid: str) -> SigningKey:
        if alg == "RS256":
            return cls(alg, kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg == "ES256":
            return cls(alg, kid, ec.generate_private_key(ec.SECP256R1()))
        if alg == "EdDSA":
            return cls(alg, kid, ed25519.Ed25519PrivateKey.generate())
        raise ValueError(alg)

    def jwk(self) -> dict[str, Any]:
        pub = self.private.public_key()
        if self.alg == "RS256":
            nums = pub.public_numbers()
            return {"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                    "n": _uint(nums.n), "e": _uint(nums.e)}
        if self.alg == "ES256":
            nums = pub.public_numbers()
            return {"kty": "EC", "kid": self.kid, "crv": "P-256",
                    "x": _uint(nums.x, 32), "y": _uint(nums.y, 32)}
        from cryptography.hazmat.primitives import serialization

        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64(raw)}

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        signing = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        data = signing.encode()
        if self.alg == "RS256":
            sig = self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif self.alg == "ES256":
            r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self.private.sign(data)
        return f"{signing}.{b64(sig)}"


def jwks(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.jwk() for k in keys]})
