"""X.509 checks shared by both planes: load chains, read SPIFFE ids, verify chains to roots."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from hyphal.identity.spiffe import SpiffeId


class CertificateError(ValueError):
    """A certificate or chain is unusable; the message says which and why."""


def load_chain(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM blob, in order; an empty or garbled blob is an error."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"could not parse PEM certificates: {exc}") from None
    if not certs:
        raise CertificateError("no PEM certificate found")
    return certs


def chain_to_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def describe(cert: x509.Certificate) -> str:
    """A short human description for error messages: subject or URI SAN, and serial."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    who = uris[0] if uris else (cert.subject.rfc4514_string() or "<empty subject>")
    return f"{who} (serial {cert.serial_number:x})"


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE id in the certificate's only URI SAN; zero or several URI SANs is an error."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError(
            f"certificate {describe(cert)} has no subjectAltName, so no SPIFFE id"
        ) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateError(
            f"certificate {describe(cert)} has {len(uris)} URI SANs {uris}; "
            "a workload certificate must carry exactly one SPIFFE id"
        )
    try:
        return SpiffeId.parse(uris[0])
    except ValueError as exc:
        raise CertificateError(f"certificate {describe(cert)}: {exc}") from None


def not_after(cert: x509.Certificate) -> dt.datetime:
    """End of validity, timezone-aware UTC."""
    return cert.not_valid_after_utc


def not_before(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
) -> SpiffeId:
    """Verify `leaf` up to one of `roots` and return its SPIFFE id.

    Checks signatures, validity periods, CA basic constraints and path lengths, key usage
    (keyCertSign on issuers) and that the leaf may authenticate a TLS client (the mesh's
    leaves carry both serverAuth and clientAuth). Raises CertificateError saying why not.
    """
    if not roots:
        raise CertificateError("no trusted roots given: load the mesh trust bundle first")
    when = now if now is not None else dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    # Friendlier messages for the commonest failures before the full path validation.
    if when < not_before(leaf):
        raise CertificateError(
            f"certificate {describe(leaf)} is not valid before {not_before(leaf).isoformat()} "
            f"(now {when.isoformat()}): check the clocks"
        )
    if when > not_after(leaf):
        raise CertificateError(
            f"certificate {describe(leaf)} expired at {not_after(leaf).isoformat()} "
            f"(now {when.isoformat()}): it should have been rotated"
        )
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise CertificateError(
                f"certificate {describe(leaf)} is a CA certificate, not a workload certificate"
            )
    except x509.ExtensionNotFound:
        pass
    spiffe_id = spiffe_id_of(leaf)
    verifier = PolicyBuilder().store(Store(list(roots))).time(when).build_client_verifier()
    try:
        verifier.verify(leaf, list(intermediates))
    except VerificationError as exc:
        raise CertificateError(
            f"certificate {describe(leaf)} does not chain to a trusted root: {exc}"
        ) from None
    _require_eku(leaf, ExtendedKeyUsageOID.CLIENT_AUTH)
    return spiffe_id


def _require_eku(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # No EKU extension: any purpose (RFC 5280 §4.2.1.12).
    if oid not in eku:
        raise CertificateError(f"certificate {describe(cert)} lacks extendedKeyUsage {oid._name}")


def peer_identity(
    auth_context: Mapping[str, Iterable[bytes]],
    roots: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
) -> SpiffeId | None:
    """The verified SPIFFE id of a gRPC peer, from `context.auth_context()`.

    None when the peer presented no certificate (plaintext or server-side TLS only); a
    CertificateError when it presented one that does not verify against `roots`.
    """
    pem = b"".join(auth_context.get("x509_pem_cert", ()))
    if not pem:
        return None
    chain = load_chain(pem)
    return verify_chain(chain[0], chain[1:], roots, now)
