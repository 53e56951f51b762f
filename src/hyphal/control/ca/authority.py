"""The mesh certificate authority: a root kept in the state directory that signs workload CSRs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hyphal.control.ca import files
from hyphal.control.ca.bundle import issued_by
from hyphal.control.ca.csr import IdentityMismatch, SignablePublicKey, parse_and_check
from hyphal.identity.certs import CertificateError, chain_to_pem, load_chain, not_after
from hyphal.identity.keys import PrivateKey, generate_key, key_to_pem, load_private_key
from hyphal.identity.spiffe import SpiffeId

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("hyphal.ca")

ROOT_TTL = dt.timedelta(days=3650)
SERVER_TTL = dt.timedelta(days=365)
SERVER_RENEW_BEFORE = dt.timedelta(days=30)
CLOCK_SKEW = dt.timedelta(seconds=60)
CONTROL_NAMESPACE = "hyphal-system"
CONTROL_SERVICE_ACCOUNT = "hyphal-control"

ROOT_CERT = "root-cert.pem"
ROOT_KEY = "root-key.pem"
TRUST_BUNDLE = "trust-bundle.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
SIGNING_ROOT = "signing-root"  # names the directory (under ca/) of the signing root, if not ca/


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """The control plane's own serving certificate, for its gRPC ports."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    trust_bundle_pem: bytes
    spiffe_id: SpiffeId
    not_after: dt.datetime

    def grpc_credentials(self, require_client_auth: bool = False) -> grpc.ServerCredentials:
        """gRPC server credentials; with `require_client_auth` peers must present a mesh cert."""
        import grpc

        return grpc.ssl_server_credentials(
            [(self.key_pem, self.chain_pem)],
            root_certificates=self.trust_bundle_pem if require_client_auth else None,
            require_client_auth=require_client_auth,
        )


class CertificateAuthority:
    """Signs workload certificates with a root held in `<state>/ca/` (or given explicitly)."""

    __slots__ = (
        "_ca_dir",
        "_key",
        "_leaf_template",
        "_roots",
        "_signer",
        "_signer_pem",
        "trust_domain",
    )

    def __init__(
        self,
        trust_domain: str,
        signer: x509.Certificate,
        key: PrivateKey,
        roots: Sequence[x509.Certificate],
        ca_dir: Path,
    ) -> None:
        SpiffeId(trust_domain, "x", "x")  # validates the trust domain's spelling
        self.trust_domain = trust_domain
        self._signer = signer
        self._signer_pem = _pem(signer)
        self._key = key
        self._roots = tuple(roots)
        self._ca_dir = ca_dir
        try:
            ski = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
        # The parts every leaf shares, built once: about 15% of the cost of a signature.
        self._leaf_template = (
            x509.CertificateBuilder()
            .issuer_name(signer.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(_LEAF_EKU, critical=False)
            .add_extension(aki, critical=False)
        )

    def __repr__(self) -> str:
        return f"CertificateAuthority(trust_domain={self.trust_domain!r}, dir={self._ca_dir})"

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        trust_domain: str,
        *,
        root_cert_file: Path | None = None,
        root_key_file: Path | None = None,
    ) -> CertificateAuthority:
        """Load the root from `state_dir/ca/`, creating it on first start; never overwrite.

        An operator-provided root (`root_cert_file` and `root_key_file`, both or neither) is
        used in place of the state directory's; its certificate is copied to
        `ca/root-cert.pem` when that file does not exist yet, the key stays where it is.
        """
        ca_dir = Path(state_dir) / "ca"
        files.ensure_private_dir(Path(state_dir))
        with files.locked(ca_dir):
            if (root_cert_file is None) != (root_key_file is None):
                raise ValueError(
                    "an operator-provided root needs both its certificate file and its key file "
                    "(or neither)"
                )
            if root_cert_file is not None and root_key_file is not None:
                signer, key = _load_root(Path(root_cert_file), Path(root_key_file))
                if not (ca_dir / ROOT_CERT).exists():
                    files.write_new(ca_dir / ROOT_CERT, _pem(signer))
            elif (ca_dir / SIGNING_ROOT).exists():
                signer, key = load_signing_root(ca_dir)
            else:
                signer, key = _load_or_make_root(ca_dir)
            roots = _load_or_make_bundle(ca_dir, signer)
        return cls(trust_domain, signer, key, roots, ca_dir)

    def reload_trust_bundle(self) -> bool:
        """Re-read `ca/trust-bundle.pem` (an operator added or removed a root); True if the
        roots changed. A malformed bundle raises BundleError and the old roots stay."""
        from hyphal.control.ca.bundle import parse_bundle

        path = self._ca_dir / TRUST_BUNDLE
        with files.locked(self._ca_dir):
            if path.exists():
                parse_bundle(path.read_bytes(), str(path))  # refuse before touching anything
            roots = tuple(_load_or_make_bundle(self._ca_dir, self._signer))
        changed = roots != self._roots
        self._roots = roots
        return changed

    def set_signer(self, signer: x509.Certificate, key: PrivateKey) -> None:
        """Sign new workload certificates with another root (root rotation's switch step).

        The caller has made sure `signer` is in the trust bundle everyone already holds.
        """
        if not _same_public_key(key, signer):
            raise ValueError("the signing key does not belong to the signing certificate")
        fresh = CertificateAuthority(self.trust_domain, signer, key, self._roots, self._ca_dir)
        self._signer, self._signer_pem, self._key = signer, fresh._signer_pem, key
        self._leaf_template = fresh._leaf_template
        self._roots = (signer, *(r for r in self._roots if r != signer))

    # -- what others read -------------------------------------------------------------------

    @property
    def root_cert(self) -> x509.Certificate:
        """The certificate that signs workload certificates."""
        return self._signer

    @property
    def root_cert_pem(self) -> bytes:
        return self._signer_pem

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    @property
    def trust_bundle_pem(self) -> bytes:
        """Every trusted root, concatenated (the ROOTCA secret's content)."""
        return chain_to_pem(self._roots)

    # -- signing ----------------------------------------------------------------------------

    def sign_csr(self, csr_pem: bytes, expected: SpiffeId, ttl: dt.timedelta) -> list[bytes]:
        """Sign a CSR for exactly `expected`; returns PEMs leaf first, root last (Istio's form).

        Raises CsrError (malformed, bad signature, weak key) or IdentityMismatch (its SANs are
        not exactly `expected`).
        """
        return [_pem(self.sign(csr_pem, expected, ttl)), *self.chain_tail_pem]

    def sign(self, csr_pem: bytes, expected: SpiffeId, ttl: dt.timedelta) -> x509.Certificate:
        """Like `sign_csr` but returns the leaf certificate object only."""
        if expected.trust_domain != self.trust_domain:
            raise IdentityMismatch([expected.uri], expected, self.trust_domain)
        public_key = parse_and_check(csr_pem, expected)
        return self.issue(public_key, expected, ttl)

    @property
    def chain_tail_pem(self) -> list[bytes]:
        """The PEMs that follow a leaf in a response: intermediates (none yet), then the root."""
        return [self._signer_pem]

    def issue(
        self,
        public_key: SignablePublicKey,
        spiffe_id: SpiffeId,
        ttl: dt.timedelta,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        subject: x509.Name | None = None,
    ) -> x509.Certificate:
        """Issue a leaf for `public_key` (callers must already have checked who asks)."""
        if ttl <= dt.timedelta(0):
            raise ValueError(f"certificate lifetime must be positive, got {ttl}")
        now = dt.datetime.now(dt.UTC)
        end = min(now + ttl, self._signer.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id.uri)]
        sans += [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        name = subject if subject is not None else x509.Name([])
        builder = (
            self._leaf_template.subject_name(name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(end)
            # An empty subject makes the SAN the only name, so it must be critical (RFC 5280).
            .add_extension(x509.SubjectAlternativeName(sans), critical=len(name) == 0)
        )
        return builder.sign(self._key, hashes.SHA256())

    def server_credentials(self, *, renew: bool = False) -> ServerCredentials:
        """The control plane's serving cert in `ca/server-*.pem`, made (or renewed when
        expiring within 30 days, when its root is no longer trusted, or when `renew`) as
        needed. A serving cert from a root still in the bundle is kept, so sidecars whose
        bootstrap names that root keep verifying the control plane during a root rotation."""
        spiffe_id = SpiffeId(self.trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
        cert_path, key_path = self._ca_dir / SERVER_CERT, self._ca_dir / SERVER_KEY
        with files.locked(self._ca_dir):
            current = None if renew else self._load_server(cert_path, key_path)
            if current is None:
                key = generate_key()
                leaf = self.issue(
                    key.public_key(),
                    spiffe_id,
                    SERVER_TTL,
                    dns_names=["localhost"],
                    ip_addresses=["127.0.0.1", "::1"],
                    subject=x509.Name(
                        [
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hyphal"),
                            x509.NameAttribute(NameOID.COMMON_NAME, CONTROL_SERVICE_ACCOUNT),
                        ]
                    ),
                )
                key_pem, chain = key_to_pem(key), [leaf]
                # Key first: a cert without its key is useless, a key without a cert is renewed.
                files.replace(key_path, key_pem)
                files.replace(cert_path, chain_to_pem(chain))
                log.info(
                    "issued control-plane serving certificate serial=%x not_after=%s",
                    leaf.serial_number,
                    not_after(leaf).isoformat(),
                )
            else:
                chain, key_pem = current
        return ServerCredentials(
            chain_pem=chain_to_pem(chain),
            key_pem=key_pem,
            trust_bundle_pem=self.trust_bundle_pem,
            spiffe_id=spiffe_id,
            not_after=not_after(chain[0]),
        )

    def _load_server(
        self, cert_path: Path, key_path: Path
    ) -> tuple[list[x509.Certificate], bytes] | None:
        if not (cert_path.exists() and key_path.exists()):
            return None
        chain = load_chain(cert_path.read_bytes())
        key_pem = files.read_private(key_path)
        leaf = chain[0]
        now = dt.datetime.now(dt.UTC)
        if not_after(leaf) - now < SERVER_RENEW_BEFORE:
            log.info("control-plane serving certificate expires soon: renewing it")
            return None
        if not any(issued_by(leaf, root) for root in self._roots):
            log.info("control-plane serving certificate chains to no trusted root: renewing")
            return None
        if not _same_public_key(load_private_key(key_pem), leaf):
            log.warning("%s does not match %s: renewing both", key_path.name, cert_path.name)
            return None
        return chain, key_pem


_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)
_ROOT_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_signing_root(ca_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
    """The root named by `ca/signing-root` (set by `hyphal ca rotate`), e.g. `roots/2`."""
    pointer = ca_dir / SIGNING_ROOT
    rel = pointer.read_text(encoding="utf-8").strip()
    where = (ca_dir / rel).resolve()
    if not rel or ca_dir.resolve() not in where.parents:
        raise ValueError(f"{pointer} must name a directory under {ca_dir}, not {rel!r}")
    return _load_root(where / ROOT_CERT, where / ROOT_KEY)


def _same_public_key(key: PrivateKey, cert: x509.Certificate) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, fmt) == cert.public_key().public_bytes(der, fmt)


def make_root(key: ec.EllipticCurvePrivateKey, ttl: dt.timedelta = ROOT_TTL) -> x509.Certificate:
    """A self-signed mesh root: CA:true pathlen 0, keyCertSign + cRLSign."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hyphal"),
            x509.NameAttribute(NameOID.COMMON_NAME, "hyphal root CA"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ROOT_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _load_or_make_root(ca_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
    cert_path, key_path = ca_dir / ROOT_CERT, ca_dir / ROOT_KEY
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert and have_key:
        return _load_root(cert_path, key_path)
    if have_cert or have_key:
        present, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise FileNotFoundError(
            f"{present} exists but {missing} does not; restore {missing.name} from backup, "
            f"or move both away to create a new root (every workload certificate will change)"
        )
    key = generate_key()
    root = make_root(key)
    files.write_new(key_path, key_to_pem(key))
    files.write_new(cert_path, _pem(root))
    log.info("created mesh root CA in %s (serial=%x)", ca_dir, root.serial_number)
    return root, key


def _load_root(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKey]:
    try:
        cert = load_chain(cert_path.read_bytes())[0]
    except CertificateError as exc:
        raise CertificateError(f"{cert_path}: {exc}") from None
    try:
        key = load_private_key(files.read_private(key_path))
    except ValueError as exc:
        raise ValueError(f"{key_path}: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TypeError(f"{key_path}: unsupported key type")
    if not _same_public_key(key, cert):
        raise ValueError(f"{key_path} is not the private key of {cert_path}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = x509.BasicConstraints(ca=False, path_length=None)
    if not bc.ca:
        raise CertificateError(f"{cert_path} is not a CA certificate (basicConstraints CA:false)")
    if cert.subject != cert.issuer:
        raise CertificateError(f"{cert_path} is not self-signed; give the root itself")
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise CertificateError(
            f"{cert_path} expired at {cert.not_valid_after_utc.isoformat()}; rotate the root"
        )
    return cert, key


def _load_or_make_bundle(ca_dir: Path, signer: x509.Certificate) -> list[x509.Certificate]:
    path = ca_dir / TRUST_BUNDLE
    if not path.exists():
        files.write_new(path, _pem(signer))
        return [signer]
    try:
        roots = load_chain(path.read_bytes())
    except CertificateError as exc:
        raise CertificateError(f"{path}: {exc}; it must hold PEM root certificates") from None
    if signer not in roots:
        log.warning("%s does not contain the signing root; trusting it anyway", path)
        roots.insert(0, signer)
    # The signing root first, then the others in file order, without duplicates.
    ordered = [signer] + [r for r in roots if r != signer]
    unique: list[x509.Certificate] = []
    for r in ordered:
        if r not in unique:
            unique.append(r)
    return unique
