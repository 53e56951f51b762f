"""Trust bundle files: parse and check roots, fingerprints, atomic edits of `ca/trust-bundle.pem`.

A bundle is PEM root certificates, concatenated. Every root must be a self-signed CA
certificate that has not expired; a bundle that breaks this is refused as a whole (the old
one stays in force), with a message naming the certificate and what is wrong with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from hyphal.control.ca import files
from hyphal.identity.certs import CertificateError, chain_to_pem, load_chain

__all__ = [
    "BundleError",
    "RootInfo",
    "add_root",
    "describe_roots",
    "fingerprint",
    "issued_by",
    "parse_bundle",
    "write_bundle",
]


class BundleError(ValueError):
    """A trust bundle (or a root offered for it) that cannot be used; says which and why."""


@dataclass(frozen=True, slots=True)
class RootInfo:
    """One trusted root, as `hyphal ca show` prints it."""

    fingerprint: str  # SHA-256 of the DER, lowercase hex
    subject: str
    serial: str
    not_before: str
    not_after: str
    signing: bool  # the root that signs workload certificates now

    def to_json(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "subject": self.subject,
            "serial": self.serial,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "signing": self.signing,
        }


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex (what `ca show` prints)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def issued_by(leaf: x509.Certificate, root: x509.Certificate) -> bool:
    """True when `root` signed `leaf` (names alone are not enough: every hyphal root is called
    "hyphal root CA")."""
    if leaf.issuer != root.subject:
        return False
    try:
        leaf.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def check_root(cert: x509.Certificate, where: str, now: dt.datetime | None = None) -> None:
    """Raise BundleError unless `cert` is a usable root: CA, self-signed, within validity."""
    now = now or dt.datetime.now(dt.UTC)
    name = cert.subject.rfc4514_string() or "(empty subject)"
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = x509.BasicConstraints(ca=False, path_length=None)
    if not bc.ca:
        raise BundleError(f"{where}: {name} is not a CA certificate (basicConstraints CA:false)")
    if not issued_by(cert, cert):
        raise BundleError(f"{where}: {name} is not self-signed; a trust bundle holds roots only")
    if cert.not_valid_after_utc <= now:
        raise BundleError(
            f"{where}: {name} (fingerprint {fingerprint(cert)[:16]}) expired at "
            f"{cert.not_valid_after_utc.isoformat()}; remove it from the bundle"
        )


def parse_bundle(pem: bytes, source: str = "trust bundle") -> list[x509.Certificate]:
    """Every root in `pem`, in order, duplicates dropped; BundleError if any is unusable."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise BundleError(f"{source}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        certs = load_chain(pem)
    except (CertificateError, ValueError) as exc:
        raise BundleError(f"{source}: not readable PEM certificates: {exc}") from None
    out: list[x509.Certificate] = []
    for i, cert in enumerate(certs):
        check_root(cert, f"{source} certificate #{i + 1}")
        if cert not in out:
            out.append(cert)
    return out


def describe_roots(
    roots: Sequence[x509.Certificate], signing: x509.Certificate | None
) -> list[RootInfo]:
    return [
        RootInfo(
            fingerprint=fingerprint(r),
            subject=r.subject.rfc4514_string(),
            serial=f"{r.serial_number:x}",
            not_before=r.not_valid_before_utc.isoformat(),
            not_after=r.not_valid_after_utc.isoformat(),
            signing=signing is not None and r == signing,
        )
        for r in roots
    ]


def write_bundle(path: Path, roots: Sequence[x509.Certificate]) -> None:
    """Replace the bundle file atomically (a reader sees the old or the new file, never half)."""
    if not roots:
        raise BundleError(f"{path}: refusing to write an empty trust bundle")
    files.replace(path, chain_to_pem(roots))


def add_root(path: Path, pem: bytes, source: str) -> tuple[x509.Certificate, bool]:
    """Append the root(s) in `pem` to the bundle at `path`, atomically, under the CA lock.

    Returns (the first root offered, whether the bundle changed). BundleError if the offered
    PEM or the existing bundle is unusable.
    """
    offered = parse_bundle(pem, source)
    with files.locked(path.parent):
        current = parse_bundle(path.read_bytes(), str(path)) if path.exists() else []
        merged = current + [r for r in offered if r not in current]
        changed = len(merged) != len(current)
        if changed:
            write_bundle(path, merged)
    return offered[0], changed
