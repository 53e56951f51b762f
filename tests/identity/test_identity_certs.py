"""Keys, CSRs and certificate chain checks, including a real mTLS handshake with `ssl`."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hyphal.control.ca.authority import CertificateAuthority, make_root
from hyphal.identity.certs import (
    CertificateError,
    load_chain,
    not_after,
    spiffe_id_of,
    verify_chain,
)
from hyphal.identity.keys import generate_key, key_to_pem, load_private_key, make_csr
from hyphal.identity.spiffe import SpiffeId

SHOP = SpiffeId("cluster.local", "shop", "product")
CART = SpiffeId("cluster.local", "shop", "cart")


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "state", "cluster.local")


def issue(ca: CertificateAuthority, sid: SpiffeId, ttl: float = 60) -> tuple[bytes, bytes]:
    key = generate_key()
    chain = ca.sign_csr(make_csr(key, sid), sid, dt.timedelta(seconds=ttl))
    return key_to_pem(key), b"".join(chain)


def test_generated_key_is_p256_and_round_trips_pem() -> None:
    key = generate_key()
    assert isinstance(key.curve, ec.SECP256R1)
    pem = key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(pem)
    assert loaded.private_numbers() == key.private_numbers()


def test_load_private_key_error_does_not_echo_input() -> None:
    secret = (
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ValueError) as info:
        load_private_key(secret)
    assert "c2VjcmV0" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_csr_carries_exactly_the_spiffe_uri_san() -> None:
    csr = x509.load_pem_x509_csr(make_csr(generate_key(), SHOP))
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SHOP.uri]
    assert len(list(san)) == 1


def test_issued_chain_verifies_and_names_the_identity(ca: CertificateAuthority) -> None:
    _, chain_pem = issue(ca, SHOP)
    certs = load_chain(chain_pem)
    assert len(certs) == 2 and certs[1] == ca.root_cert
    assert spiffe_id_of(certs[0]) == SHOP
    assert verify_chain(certs[0], [], ca.roots) == SHOP
    # The root's signature over the leaf checks out with cryptography directly, too.
    certs[0].verify_directly_issued_by(ca.root_cert)


def test_verify_chain_refuses_another_root(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other", "cluster.local")
    _, chain_pem = issue(other, SHOP)
    with pytest.raises(CertificateError, match="does not chain to a trusted root"):
        verify_chain(load_chain(chain_pem)[0], [], ca.roots)


def test_verify_chain_refuses_expired_and_not_yet_valid(ca: CertificateAuthority) -> None:
    _, chain_pem = issue(ca, SHOP, ttl=5)
    leaf = load_chain(chain_pem)[0]
    with pytest.raises(CertificateError, match="expired"):
        verify_chain(leaf, [], ca.roots, now=not_after(leaf) + dt.timedelta(seconds=1))
    with pytest.raises(CertificateError, match="not valid before"):
        verify_chain(leaf, [], ca.roots, now=leaf.not_valid_before_utc - dt.timedelta(seconds=1))


def test_verify_chain_refuses_a_ca_certificate_as_leaf(ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateError, match="CA certificate"):
        verify_chain(ca.root_cert, [], ca.roots)


def _leaf_signed_by_root(
    root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey, sans: list[x509.GeneralName]
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(root.subject)
        .public_key(generate_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=60))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        .sign(root_key, hashes.SHA256())
    )


def test_spiffe_id_of_requires_exactly_one_uri_san() -> None:
    key = generate_key()
    root = make_root(key)
    two = _leaf_signed_by_root(
        root,
        key,
        [x509.UniformResourceIdentifier(SHOP.uri), x509.UniformResourceIdentifier(CART.uri)],
    )
    with pytest.raises(CertificateError, match="2 URI SANs"):
        spiffe_id_of(two)
    none = _leaf_signed_by_root(root, key, [x509.DNSName("product.shop")])
    with pytest.raises(CertificateError, match="0 URI SANs"):
        spiffe_id_of(none)


def test_verify_chain_refuses_a_root_without_cert_sign(tmp_path: Path) -> None:
    # A "root" that is not a CA cannot vouch for a leaf.
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "not a ca")])
    fake_root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf = _leaf_signed_by_root(fake_root, key, [x509.UniformResourceIdentifier(SHOP.uri)])
    with pytest.raises(CertificateError):
        verify_chain(leaf, [], [fake_root])


def _write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def test_mtls_handshake_with_python_ssl(ca: CertificateAuthority, tmp_path: Path) -> None:
    """Two issued certs authenticate each other with stdlib ssl; each sees the other's URI SAN."""
    bundle = _write(tmp_path, "bundle.pem", ca.trust_bundle_pem)
    server_key, server_chain = issue(ca, SHOP)
    client_key, client_chain = issue(ca, CART)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(
        _write(tmp_path, "s.pem", server_chain), _write(tmp_path, "s.key", server_key)
    )
    server_ctx.load_verify_locations(bundle)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(
        _write(tmp_path, "c.pem", client_chain), _write(tmp_path, "c.key", client_key)
    )
    client_ctx.load_verify_locations(bundle)
    client_ctx.check_hostname = False  # mesh peers are checked by URI SAN, not host name

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen["client"] = tls.getpeercert()
            tls.sendall(tls.recv(5))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client_ctx.wrap_socket(raw) as tls,
        ):
            server_cert = tls.getpeercert()
            tls.sendall(b"hello")
            assert tls.recv(5) == b"hello"
        thread.join(5)
    finally:
        listener.close()
    assert ("URI", SHOP.uri) in server_cert["subjectAltName"]  # type: ignore[index]
    client_cert = seen["client"]
    assert ("URI", CART.uri) in client_cert["subjectAltName"]  # type: ignore[index]


def test_ssl_refuses_a_peer_from_another_root(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other", "cluster.local")
    key, chain = issue(other, SHOP)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.trust_bundle_pem.decode())
    ctx.check_hostname = False
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(_write(tmp_path, "o.pem", chain), _write(tmp_path, "o.key", key))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            server_ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ctx.wrap_socket(raw)
        thread.join(5)
    finally:
        listener.close()


def test_key_pem_is_pkcs8_unencrypted() -> None:
    pem = key_to_pem(generate_key())
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


def test_peer_identity_from_a_grpc_auth_context(ca: CertificateAuthority, tmp_path: Path) -> None:
    from hyphal.identity.certs import peer_identity

    _, chain = issue(ca, SHOP)
    leaf_pem = chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [leaf_pem]}
    assert peer_identity(context, ca.roots) == SHOP
    assert peer_identity({"transport_security_type": [b"ssl"]}, ca.roots) is None
    other = CertificateAuthority.load_or_create(tmp_path / "o", "cluster.local")
    with pytest.raises(CertificateError):
        peer_identity(context, other.roots)
