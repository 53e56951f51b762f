"""The sidecar's workload certificate: obtain it from the CA at start, rotate it, hand it out.

The private key is made here (ECDSA P-256) and never leaves the process: it is not logged,
not written to disk, and `repr` of everything holding it hides it. A fresh key is made for
every renewal. The certificate is obtained with the bootstrap token (`token_file`, re-read
each time) and, for renewals, falls back to proving identity with the current certificate
over mTLS when the token is gone or expired.

Consumers subscribe with `on_rotate(callback)`: the data plane's `TlsMaterial.update` and the
ADS client's reconnect. The trust bundle is the bootstrap's root until the control plane
sends the `ROOTCA` Secret (`set_trust_bundle`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from hyphal.identity.client import (
    CertBundle,
    CertificateRequestError,
    CertificateRotator,
    request_certificate,
)
from hyphal.identity.keys import generate_key
from hyphal.identity.spiffe import SpiffeId
from hyphal.proxy.bootstrap import Bootstrap, BootstrapError
from hyphal.proxy.xds_client import TlsCredentials

__all__ = ["CertInfo", "CertManager", "CertificateRequestError"]

log = logging.getLogger("hyphal.proxy.certs")


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What /config_dump shows about the workload certificate (never the key)."""

    spiffe_id: str
    serial: str
    not_before: str
    not_after: str
    rotations: int


class CertManager:
    """Holds the current workload certificate and the trust bundle; renews in the background."""

    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        rotator: CertificateRotator | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self._b = bootstrap
        self._spiffe = SpiffeId.parse(bootstrap.spiffe_id)
        self._rotator = rotator or CertificateRotator()
        self._timeout = request_timeout
        self._bundle: CertBundle | None = None
        self._root_pem = b""
        self._trust_bundle: bytes | None = None
        self._callbacks: list[Callable[[CertBundle, bytes], None]] = []
        self._rotations = 0

    def __repr__(self) -> str:
        return f"CertManager({self._spiffe.uri})"

    # -- state

    @property
    def ready(self) -> bool:
        return self._bundle is not None

    @property
    def bundle(self) -> CertBundle:
        if self._bundle is None:
            raise RuntimeError("no workload certificate yet: call `await issue()` first")
        return self._bundle

    @property
    def trust_bundle(self) -> bytes:
        """PEM roots that verify mesh peers: ROOTCA from xDS, else the bootstrap root (+ CA's)."""
        if self._trust_bundle is not None:
            return self._trust_bundle
        extra = self._bundle.roots_pem if self._bundle is not None else b""
        if extra and extra.strip() not in self._root_pem:
            return self._root_pem.rstrip(b"\n") + b"\n" + extra
        return self._root_pem

    def on_rotate(self, callback: Callable[[CertBundle, bytes], None]) -> None:
        """Call `callback(bundle, trust_bundle_pem)` on every new certificate or trust bundle."""
        self._callbacks.append(callback)

    def set_trust_bundle(self, pem: bytes) -> None:
        """The control plane's `ROOTCA`; consumers are told when it changes."""
        if pem == self._trust_bundle:
            return
        self._trust_bundle = pem
        log.info(
            "trust bundle updated from the control plane (%d roots)",
            pem.count(b"-----BEGIN CERTIFICATE-----"),
        )
        self._notify()

    def tls_credentials(self) -> TlsCredentials:
        """Client material for the ADS channel: our cert, verified against the bootstrap root."""
        b = self.bundle
        return TlsCredentials(root_pem=self._root_pem, key_pem=b.key_pem, chain_pem=b.chain_pem)

    def info(self) -> CertInfo | None:
        if self._bundle is None:
            return None
        leaf = x509.load_pem_x509_certificate(self._bundle.chain_pem)
        return CertInfo(
            spiffe_id=self._bundle.spiffe_id.uri,
            serial=format(leaf.serial_number, "x"),
            not_before=leaf.not_valid_before_utc.isoformat(),
            not_after=leaf.not_valid_after_utc.isoformat(),
            rotations=self._rotations,
        )

    # -- obtaining certificates

    async def issue(self) -> CertBundle:
        """The first certificate, with the bootstrap token. Raises CertificateRequestError
        (the CA refused or is unreachable) or BootstrapError (token/root unreadable)."""
        self._root_pem = self._b.read_root_pem()
        bundle = await self._request(self._b.read_token(), None)
        self._bundle = bundle
        log.info(
            "obtained certificate for %s, valid until %s",
            bundle.spiffe_id.uri,
            bundle.not_after.isoformat(),
        )
        return bundle

    async def _request(self, token: str | None, current: CertBundle | None) -> CertBundle:
        return await request_certificate(
            self._b.ca_address,
            self._root_pem,
            token,
            generate_key(),
            self._spiffe,
            dt.timedelta(seconds=self._b.cert_ttl_seconds),
            client_bundle=current,
            timeout=self._timeout,
        )

    async def _renew(self, current: CertBundle) -> CertBundle:
        try:
            token: str | None = self._b.read_token()
        except BootstrapError:
            token = None
        if token is not None:
            try:
                return await self._request(token, None)
            except CertificateRequestError as exc:
                log.info(
                    "renewal with the bootstrap token failed (%s); using the current "
                    "certificate instead",
                    exc,
                )
        return await self._request(None, current)

    def _accept(self, bundle: CertBundle) -> None:
        self._bundle = bundle
        self._rotations += 1
        self._notify()

    def _notify(self) -> None:
        if self._bundle is None:
            return
        for cb in tuple(self._callbacks):
            try:
                cb(self._bundle, self.trust_bundle)
            except Exception:  # one consumer's failure must not stop the others
                log.exception("certificate consumer %r failed", cb)

    async def run(self, stop: asyncio.Event) -> None:
        """Rotate at half the lifetime (+ jitter), retrying with backoff, until `stop`."""
        await self._rotator.run(self.bundle, self._renew, self._accept, stop)
