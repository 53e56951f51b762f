"""The root CA on disk and what sign_csr accepts and refuses."""

from __future__ import annotations

import datetime as dt
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hyphal.control.ca.authority import CertificateAuthority, make_root
from hyphal.control.ca.csr import CsrError, IdentityMismatch
from hyphal.identity.certs import load_chain, spiffe_id_of, verify_chain
from hyphal.identity.keys import generate_key, key_to_pem, make_csr
from hyphal.identity.spiffe import SpiffeId

TD = "cluster.local"
SHOP = SpiffeId(TD, "shop", "product")
CART = SpiffeId(TD, "shop", "cart")
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def ca(state: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(state, TD)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_root_with_private_modes(ca: CertificateAuthority, state: Path) -> None:
    d = state / "ca"
    for name in ("root-cert.pem", "root-key.pem", "trust-bundle.pem"):
        assert (d / name).exists(), name
    assert mode(d / "root-key.pem") == 0o600
    assert mode(d) == 0o700 and mode(state) == 0o700
    root = ca.root_cert
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hyphal root CA"
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "hyphal"
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length in (0, 1)
    ku = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert lifetime >= dt.timedelta(days=3649)


def test_second_start_loads_and_never_overwrites(ca: CertificateAuthority, state: Path) -> None:
    d = state / "ca"
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    again = CertificateAuthority.load_or_create(state, TD)
    assert again.root_cert == ca.root_cert
    after = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    assert after == before


def test_half_missing_root_is_an_error_not_a_new_root(
    ca: CertificateAuthority, state: Path
) -> None:
    (state / "ca" / "root-cert.pem").unlink()
    with pytest.raises(FileNotFoundError, match=r"restore root-cert\.pem"):
        CertificateAuthority.load_or_create(state, TD)
    assert (state / "ca" / "root-key.pem").exists()


def test_world_readable_root_key_is_refused(ca: CertificateAuthority, state: Path) -> None:
    key = state / "ca" / "root-key.pem"
    key.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        CertificateAuthority.load_or_create(state, TD)


def test_operator_root_is_used_and_its_key_stays_put(tmp_path: Path, state: Path) -> None:
    key = generate_key()
    root = make_root(key)
    cert_file, key_file = tmp_path / "op-root.pem", tmp_path / "op-root.key"
    cert_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key_to_pem(key))
    key_file.chmod(0o600)
    ca = CertificateAuthority.load_or_create(
        state, TD, root_cert_file=cert_file, root_key_file=key_file
    )
    assert ca.root_cert == root
    assert not (state / "ca" / "root-key.pem").exists()
    assert load_chain((state / "ca" / "root-cert.pem").read_bytes()) == [root]
    leaf = load_chain(b"".join(ca.sign_csr(make_csr(generate_key(), SHOP), SHOP, HOUR)))[0]
    leaf.verify_directly_issued_by(root)


def test_operator_root_key_must_match(tmp_path: Path, state: Path) -> None:
    root = make_root(generate_key())
    cert_file, key_file = tmp_path / "r.pem", tmp_path / "r.key"
    cert_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key_to_pem(generate_key()))
    key_file.chmod(0o600)
    with pytest.raises(ValueError, match="is not the private key"):
        CertificateAuthority.load_or_create(
            state, TD, root_cert_file=cert_file, root_key_file=key_file
        )


def test_trust_bundle_holds_several_roots_for_rotation(
    ca: CertificateAuthority, state: Path, tmp_path: Path
) -> None:
    new_root = CertificateAuthority.load_or_create(tmp_path / "next", TD)
    bundle = state / "ca" / "trust-bundle.pem"
    bundle.write_bytes(bundle.read_bytes() + new_root.root_cert_pem)
    ca.reload_trust_bundle()
    assert ca.roots == (ca.root_cert, new_root.root_cert)
    assert load_chain(ca.trust_bundle_pem) == [ca.root_cert, new_root.root_cert]
    # A workload signed by the next root verifies against the bundle: rotation without downtime.
    leaf = load_chain(b"".join(new_root.sign_csr(make_csr(generate_key(), SHOP), SHOP, HOUR)))[0]
    assert verify_chain(leaf, [], ca.roots) == SHOP
    # A restart sees the same bundle.
    assert CertificateAuthority.load_or_create(state, TD).roots == ca.roots


def test_bundle_without_own_root_still_trusts_it(ca: CertificateAuthority, state: Path) -> None:
    other = make_root(generate_key())
    (state / "ca" / "trust-bundle.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    reloaded = CertificateAuthority.load_or_create(state, TD)
    assert reloaded.roots == (ca.root_cert, other)


def test_signed_leaf_has_the_mesh_profile(ca: CertificateAuthority) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    chain = ca.sign_csr(make_csr(generate_key(), SHOP), SHOP, dt.timedelta(seconds=30))
    assert len(chain) == 2 and chain[1] == ca.root_cert_pem
    leaf = load_chain(chain[0])[0]
    assert spiffe_id_of(leaf) == SHOP
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # notBefore is backdated 60s for clock skew; notAfter is now + ttl.
    assert before - dt.timedelta(seconds=61) <= leaf.not_valid_before_utc
    assert leaf.not_valid_before_utc <= before - dt.timedelta(seconds=59)
    end = leaf.not_valid_after_utc - before
    assert dt.timedelta(seconds=29) <= end <= dt.timedelta(seconds=32)


def test_refuses_csr_for_another_identity(ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityMismatch) as info:
        ca.sign_csr(make_csr(generate_key(), CART), SHOP, HOUR)
    assert CART.uri in str(info.value) and SHOP.uri in str(info.value)


def _csr_with_sans(key: ec.EllipticCurvePrivateKey, sans: list[x509.GeneralName]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_refuses_csr_with_two_sans(ca: CertificateAuthority) -> None:
    uri = x509.UniformResourceIdentifier
    two = _csr_with_sans(generate_key(), [uri(SHOP.uri), uri(CART.uri)])
    with pytest.raises(IdentityMismatch, match="cart"):
        ca.sign_csr(two, SHOP, HOUR)
    with_dns = _csr_with_sans(generate_key(), [uri(SHOP.uri), x509.DNSName("evil.example")])
    with pytest.raises(IdentityMismatch, match=r"evil\.example"):
        ca.sign_csr(with_dns, SHOP, HOUR)
    with pytest.raises(IdentityMismatch, match="no SPIFFE id"):
        ca.sign_csr(_csr_with_sans(generate_key(), []), SHOP, HOUR)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_refuses_garbage_csr(ca: CertificateAuthority, garbage: bytes) -> None:
    with pytest.raises(CsrError, match=r"PKCS#10|decoded"):
        ca.sign_csr(garbage, SHOP, HOUR)


def test_refuses_csr_with_bad_signature(ca: CertificateAuthority) -> None:
    # Sign the CSR with one key but carry another's public key: re-encode by swapping SPKI.
    good = x509.load_pem_x509_csr(make_csr(generate_key(), SHOP))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="signature"):
        ca.sign_csr(tampered, SHOP, HOUR)


def test_refuses_weak_or_unsupported_keys(ca: CertificateAuthority) -> None:
    san = [x509.UniformResourceIdentifier(SHOP.uri)]
    weak: list[tuple[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, str]] = [
        (ec.generate_private_key(ec.SECP384R1()), "secp384r1"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA 1024"),
    ]
    for key, pattern in weak:
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=True)
        pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        with pytest.raises(CsrError, match=pattern):
            ca.sign_csr(pem, SHOP, HOUR)
    ed = ed25519.Ed25519PrivateKey.generate()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=True)
    pem = builder.sign(ed, None).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="not supported"):
        ca.sign_csr(pem, SHOP, HOUR)


def test_accepts_rsa_2048(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    chain = ca.sign_csr(make_csr(key, SHOP), SHOP, HOUR)
    assert spiffe_id_of(load_chain(chain[0])[0]) == SHOP


def test_refuses_identity_of_another_trust_domain(ca: CertificateAuthority) -> None:
    foreign = SpiffeId("other.domain", "shop", "product")
    with pytest.raises(IdentityMismatch, match="trust domain"):
        ca.sign_csr(make_csr(generate_key(), foreign), foreign, HOUR)


def test_leaf_never_outlives_the_root(ca: CertificateAuthority) -> None:
    chain = ca.sign_csr(make_csr(generate_key(), SHOP), SHOP, dt.timedelta(days=100000))
    assert load_chain(chain[0])[0].not_valid_after_utc <= ca.root_cert.not_valid_after_utc


def test_server_credentials_made_once_with_control_plane_names(
    ca: CertificateAuthority, state: Path
) -> None:
    creds = ca.server_credentials()
    leaf = load_chain(creds.chain_pem)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{TD}/ns/hyphal-system/sa/hyphal-control"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert mode(state / "ca" / "server-key.pem") == 0o600
    leaf.verify_directly_issued_by(ca.root_cert)
    assert ca.server_credentials().chain_pem == creds.chain_pem  # loaded, not remade
    assert "key_pem" not in repr(creds)


def test_server_credentials_renewed_after_root_change(
    ca: CertificateAuthority, state: Path, tmp_path: Path
) -> None:
    first = ca.server_credentials()
    other = CertificateAuthority.load_or_create(tmp_path / "x", TD)
    # Put a serving cert from another root in place: it must be replaced, not trusted.
    (state / "ca" / "server-cert.pem").write_bytes(
        (tmp_path / "x" / "ca" / "root-cert.pem").read_bytes()
    )
    assert other.root_cert != ca.root_cert
    second = ca.server_credentials()
    assert second.chain_pem != first.chain_pem
    load_chain(second.chain_pem)[0].verify_directly_issued_by(ca.root_cert)


def test_no_private_key_in_logs_or_repr(state: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ca = CertificateAuthority.load_or_create(state, TD)
    ca.server_credentials()
    ca.sign_csr(make_csr(generate_key(), SHOP), SHOP, HOUR)
    root_key = (state / "ca" / "root-key.pem").read_bytes()
    server_key = (state / "ca" / "server-key.pem").read_bytes()
    body = root_key.decode().splitlines()[1]
    text = caplog.text + repr(ca)
    assert "PRIVATE KEY" not in text
    assert body not in text and server_key.decode().splitlines()[1] not in text
