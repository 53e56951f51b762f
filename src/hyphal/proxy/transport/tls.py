"""TLS material for mesh mTLS: own certificate chain and key, trust bundle, SSL contexts.

Server contexts require a client certificate from the trust bundle; client contexts verify
the server against the bundle (no hostname check: identity is the URI SAN, checked by the
caller against the cluster's expected SANs). `update` rotates the material: new connections
use it, existing ones continue.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


class TlsConfigError(Exception):
    """The certificate, key or bundle cannot be loaded (message says which and why)."""


@dataclass(frozen=True, slots=True)
class _Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    client_h2: ssl.SSLContext


def _load(paths: tuple[str, str], bundle_pem: bytes, server: bool,
          alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if server:
        ctx.set_alpn_protocols(["h2", "http/1.1"])  # h2 goes to hyphal.proxy.h2
        # Upstream connections never resume sessions (they are pooled instead): the two
        # TLS 1.3 tickets a server sends after every handshake would be work and bytes
        # for nothing.
        ctx.num_tickets = 0
    elif alpn:
        ctx.set_alpn_protocols(list(alpn))
    if not server:
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(*paths)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(
            f"cannot load the workload certificate chain and key: {exc}; check that the "
            "key matches the first certificate of the chain and both are PEM"
        ) from exc
    try:
        ctx.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(f"cannot load the trust bundle (PEM roots): {exc}") from exc
    return ctx


@contextlib.contextmanager
def _pem_files(chain_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Paths holding the chain and the key while contexts load them (ssl reads key
    material only from files). On Linux these are memory files (memfd): the key never
    touches a file system and no `tempfile`/`shutil` is imported (RSS); elsewhere a
    private 0700 directory, removed at once."""
    if hasattr(os, "memfd_create"):
        fds: list[int] = []
        try:
            for data in (chain_pem, key_pem):
                fd = os.memfd_create("hyphal-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hyphal-tls-") as tmp:
        os.chmod(tmp, 0o700)
        chain_path = os.path.join(tmp, "chain.pem")
        key_path = os.path.join(tmp, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        with open(chain_path, "wb") as handle:
            handle.write(chain_pem)
        yield chain_path, key_path


class TlsMaterial:
    """Own chain + key + trust bundle, and the SSL contexts built from them."""

    __slots__ = ("_contexts", "_front", "identity")

    def __init__(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        with _pem_files(chain_pem, key_pem) as paths:
            self._contexts = self._build(paths, bundle_pem)
            self.identity = _spiffe_from_file(paths[0])
            # The listening sockets keep one "front" context whose SNI callback swaps in
            # the current one at ClientHello time, so rotation reaches bound listeners.
            self._front = _load(paths, bundle_pem, server=True)
        self._front.sni_callback = self._select

    @staticmethod
    def _build(paths: tuple[str, str], bundle_pem: bytes) -> _Contexts:
        return _Contexts(_load(paths, bundle_pem, server=True),
                         _load(paths, bundle_pem, server=False),
                         _load(paths, bundle_pem, server=False, alpn=("h2",)))

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self._contexts.server
        if sslobj.context is not current:
            sslobj.context = current

    def update(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        """Rotate: contexts are built first, so a bad input leaves the old material serving."""
        with _pem_files(chain_pem, key_pem) as paths:
            contexts = self._build(paths, bundle_pem)
            identity = _spiffe_from_file(paths[0])
        self.identity = identity
        self._contexts = contexts

    @property
    def server_context(self) -> ssl.SSLContext:
        """The context to bind listeners with (follows `update`)."""
        return self._front

    @property
    def client_context(self) -> ssl.SSLContext:
        """The context for a new upstream connection (take it per connection)."""
        return self._contexts.client

    @property
    def h2_client_context(self) -> ssl.SSLContext:
        """The same, offering ALPN `h2` (clusters with `http2`)."""
        return self._contexts.client_h2


def uri_sans(peercert: dict[str, Any] | None) -> tuple[str, ...]:
    if not peercert:
        return ()
    entries: Iterable[tuple[str, str]] = peercert.get("subjectAltName", ())
    return tuple(value for kind, value in entries if kind == "URI")


def spiffe_id(peercert: dict[str, Any] | None) -> str | None:
    """The peer's SPIFFE id (first `spiffe://` URI SAN) from `getpeercert()`."""
    for uri in uri_sans(peercert):
        if uri.startswith("spiffe://"):
            return uri
    return None


def _spiffe_from_file(chain_path: str) -> str:
    """Our own SPIFFE id, from the leaf of the PEM chain at `chain_path` ("" if none)."""
    # OpenSSL decodes the leaf into the same dict as `getpeercert()` gives for peers, so
    # the sidecar does not load `cryptography` (~7 MB RSS) for its own id. The decoder is
    # CPython's `_ssl._test_decode_cert`; should a Python lack it, `cryptography` does it.
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        with open(chain_path, "rb") as handle:
            return _spiffe_with_cryptography(handle.read())
    try:
        return spiffe_id(decode(chain_path)) or ""
    except (ssl.SSLError, OSError, ValueError):
        return ""


def _spiffe_with_cryptography(chain_pem: bytes) -> str:
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificate(chain_pem)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return ""
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return str(uri)
    return ""
