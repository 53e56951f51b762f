"""Workload keys and certificate signing requests: ECDSA P-256, PEM, CSRs with a SPIFFE URI SAN."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hyphal.identity.spiffe import SpiffeId

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key; it should never leave the process that made it."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (files holding it must be 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Load an EC or RSA private key from PEM; the error never repeats the key material."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # Do not chain: the underlying error could carry fragments of the key material.
        raise ValueError(
            "could not load private key: expected an unencrypted PEM EC or RSA key"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TypeError(f"unsupported private key type {type(key).__name__}: use ECDSA P-256")
    return key


def make_csr(key: PrivateKey, spiffe_id: SpiffeId) -> bytes:
    """A PEM PKCS#10 request whose only SAN is the workload's SPIFFE URI."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id.uri)]),
            critical=True,
        )
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)
