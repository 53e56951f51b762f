"""Checks a certificate signing request must pass before the CA signs it."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hyphal.identity.spiffe import SpiffeId

SignablePublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

MIN_RSA_BITS = 2048
MAX_CSR_BYTES = 16 * 1024


class CsrError(ValueError):
    """The CSR is malformed or unacceptable (maps to INVALID_ARGUMENT)."""


class IdentityMismatch(CsrError):
    """The CSR asks for an identity other than the one the caller proved (PERMISSION_DENIED)."""

    def __init__(
        self, requested: list[str], proven: SpiffeId, trust_domain: str | None = None
    ) -> None:
        self.requested = requested
        self.proven = proven
        if trust_domain is not None:
            message = (
                f"{proven.uri} is outside this CA's trust domain {trust_domain!r}; "
                f"start the control plane with --trust-domain {proven.trust_domain} "
                f"or mint the token for {trust_domain}"
            )
        else:
            asked = ", ".join(requested) if requested else "no SPIFFE id"
            message = (
                f"CSR asks for {asked} but the caller is authenticated as {proven.uri}; "
                f"a workload may only request a certificate for its own identity"
            )
        super().__init__(message)


def parse_and_check(csr_pem: bytes, expected: SpiffeId) -> SignablePublicKey:
    """Parse `csr_pem` and return its public key if it is well-formed, self-signed and asks
    for exactly `expected` (one URI SAN, no other SAN)."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CsrError(f"CSR is {len(csr_pem)} bytes; the limit is {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CsrError("CSR is not a PEM PKCS#10 certificate signing request") from None
    try:
        public_key = csr.public_key()
        signature_ok = csr.is_signature_valid
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise CsrError(f"CSR could not be decoded: {exc}") from None
    if not signature_ok:
        raise CsrError("CSR signature does not verify: it was not signed by the key it carries")
    key = _check_key(public_key)
    requested = _requested_uris(csr)
    if requested != [expected.uri]:
        raise IdentityMismatch(requested, expected)
    return key


def _check_key(public_key: object) -> SignablePublicKey:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise CsrError(
                f"CSR key uses curve {public_key.curve.name}; the CA signs ECDSA P-256 "
                f"(secp256r1) or RSA >= {MIN_RSA_BITS} keys"
            )
        return public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CsrError(
                f"CSR key is RSA {public_key.key_size} bits; the minimum is {MIN_RSA_BITS}"
            )
        return public_key
    raise CsrError(f"CSR key type {type(public_key).__name__} is not supported; use ECDSA P-256")


def _requested_uris(csr: x509.CertificateSigningRequest) -> list[str]:
    """Every SAN the CSR asks for, as strings; non-URI SANs are listed so the error shows them."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CsrError(f"CSR extensions could not be decoded: {exc}") from None
    out: list[str] = []
    for name in ext.value:
        if isinstance(name, x509.UniformResourceIdentifier):
            out.append(name.value)
        else:
            out.append(f"{type(name).__name__}:{name.value}")
    return out
