"""Helpers for the security tests: a throwaway mesh CA, workload material, mTLS client contexts."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hyphal.proxy.transport.tls import TlsMaterial

Ca = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
PEM = serialization.Encoding.PEM


def make_ca() -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "security test root")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def leaf(ca: Ca, uri: str) -> tuple[bytes, bytes, bytes]:
    """(cert PEM, key PEM, root PEM) of a workload certificate for `uri`."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                           critical=True)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(PEM), key_pem, ca_cert.public_bytes(PEM)


def material(ca: Ca, uri: str) -> TlsMaterial:
    return TlsMaterial(*leaf(ca, uri))


def client_context(ca: Ca, uri: str, alpn: list[str]) -> ssl.SSLContext:
    """A mesh client's TLS context (own certificate, mesh root; no hostname check)."""
    cert, key, root = leaf(ca, uri)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=root.decode())
    ctx.check_hostname = False
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.pem").write_bytes(cert)
        (Path(d) / "k.pem").write_bytes(key)
        ctx.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
    ctx.set_alpn_protocols(alpn)
    return ctx
