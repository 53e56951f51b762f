"""The sidecar's workload certificate: obtain it from the CA at start, rotate it, hand it out.

The private key (ECDSA P-256) is made, with the CSR, in a short-lived child process
(`hyphal.proxy.cert_worker`, so that `cryptography` and its ~10 MB stay out of this
long-lived one) and reaches this process over a pipe: it is not logged, not written to disk,
and `repr` of everything holding it hides it. A fresh key is made for every renewal. The
certificate is obtained with the bootstrap token (`token_file`, re-read each time) and, for
renewals, falls back to proving identity with the current certificate over mTLS when the
token is gone or expired.

Consumers subscribe with `on_rotate(callback)`: the data plane's `TlsMaterial.update` and the
ADS client's reconnect. The trust bundle is the bootstrap's root until the control plane
sends the `ROOTCA` Secret (`set_trust_bundle`); the control plane itself is verified against
the bootstrap root and the ROOTCA roots together, so it may move to a new root.

Root rotation: a ROOTCA that no longer holds the root our certificate chains to means peers
are about to reject it, and a ROOTCA whose first (signing) root is another one means the CA
has switched roots; either way the certificate is renewed at once (after up to a second of
jitter, so a mesh does not renew in one burst) instead of at half its lifetime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import random
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from hyphal.identity.client import (
    CertBundle,
    CertificateRequestError,
    CertificateRotator,
)
from hyphal.identity.spiffe import SpiffeId
from hyphal.proxy.bootstrap import Bootstrap, BootstrapError
from hyphal.proxy.cert_worker import LeafFacts, candidate_roots, leaf_facts, obtain
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
    root_fingerprint: str = ""  # SHA-256 of the root this certificate chains to


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
        self._renew_due: CertBundle | None = None  # renew this one at once (root rotation)
        self._wake: asyncio.Event | None = None
        # What the worker found about each certificate it obtained (by chain PEM).
        self._facts: dict[bytes, LeafFacts] = {}
        self.early_renewal_jitter = 1.0  # seconds

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
        why = self._renewal_reason(pem)
        if why:
            self.renew_now(why)

    def _renewal_reason(self, pem: bytes) -> str:
        """Why the ROOTCA `pem` asks for a new certificate now, or ''."""
        if self._bundle is None:
            return ""
        mine = self.root_fingerprint
        try:
            roots = _pem_fingerprints(pem)
        except (ssl.SSLError, ValueError):
            return ""  # the data plane reports an unusable bundle; nothing to decide here
        if not mine or not roots:
            return ""
        if mine not in roots:
            return f"the trust bundle no longer holds root {mine[:16]} that our certificate uses"
        if roots[0] != mine:
            return f"the CA now signs with root {roots[0][:16]}"
        return ""

    def renew_now(self, why: str) -> None:
        """Replace the current certificate as soon as possible (once per certificate)."""
        if self._bundle is None or self._renew_due is self._bundle:
            return
        log.info("renewing the workload certificate early: %s", why)
        self._renew_due = self._bundle
        if self._wake is not None:
            self._wake.set()

    @property
    def root_fingerprint(self) -> str:
        """SHA-256 (hex) of the root our certificate chains to ('' before the first one)."""
        b = self._bundle
        return self._leaf_facts(b).root_fingerprint if b is not None else ""

    def _leaf_facts(self, b: CertBundle) -> LeafFacts:
        found = self._facts.get(b.chain_pem)
        if found is not None:
            return found
        # A bundle that did not come from the worker (set directly, as tests do): look it up
        # here, with cryptography, against the roots known now.
        return leaf_facts(b, candidate_roots(self._trust_bundle or b"", b, self._root_pem))

    def control_plane_roots(self) -> bytes:
        """Roots that may have signed the control plane's serving cert: bootstrap + ROOTCA."""
        extra = self._trust_bundle or b""
        if not extra or extra.strip() in self._root_pem:
            return self._root_pem
        return self._root_pem.rstrip(b"\n") + b"\n" + extra

    def tls_credentials(self) -> TlsCredentials:
        """Client material for the ADS channel: our cert; the server verified against the
        bootstrap root and the ROOTCA roots."""
        b = self.bundle
        return TlsCredentials(
            root_pem=self.control_plane_roots(), key_pem=b.key_pem, chain_pem=b.chain_pem
        )

    def info(self) -> CertInfo | None:
        if self._bundle is None:
            return None
        facts = self._leaf_facts(self._bundle)
        return CertInfo(
            spiffe_id=self._bundle.spiffe_id.uri,
            serial=facts.serial,
            not_before=facts.not_before,
            not_after=facts.not_after,
            rotations=self._rotations,
            root_fingerprint=facts.root_fingerprint,
        )

    # -- obtaining certificates

    async def issue(self) -> CertBundle:
        """The first certificate, with the bootstrap token. Raises CertificateRequestError
        (the CA refused or is unreachable) or BootstrapError (token/root unreadable)."""
        self._root_pem = self._b.read_root_pem()
        bundle = await self._request(self._b.read_token(), None)
        self._bundle = bundle
        self._forget_facts_but(bundle)
        log.info(
            "obtained certificate for %s, valid until %s",
            bundle.spiffe_id.uri,
            bundle.not_after.isoformat(),
        )
        return bundle

    async def _request(self, token: str | None, current: CertBundle | None) -> CertBundle:
        # Proof by the current certificate needs a port that requires and verifies client
        # certificates: the mTLS xDS port, where the CA service is served too. The CA port
        # is server-side TLS only (a CSR there carries a token).
        address = self._b.ca_address if token is not None else self._b.xds_address
        bundle, facts = await obtain(
            address,
            self.control_plane_roots(),
            token,
            self._spiffe,
            dt.timedelta(seconds=self._b.cert_ttl_seconds),
            client_bundle=current,
            timeout=self._timeout,
            trust_bundle=self._trust_bundle or b"",
            bootstrap_root=self._root_pem,
        )
        self._facts[bundle.chain_pem] = facts
        return bundle

    def _forget_facts_but(self, bundle: CertBundle) -> None:
        self._facts = {k: v for k, v in self._facts.items() if k == bundle.chain_pem}

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
        self._forget_facts_but(bundle)
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
        """Rotate at half the lifetime (+ jitter), retrying with backoff, until `stop`;
        at once (after a short jitter) when `renew_now` asks."""
        while not stop.is_set():
            wake = self._wake = asyncio.Event()
            relay = asyncio.ensure_future(_relay(stop, wake))
            early = self._renew_due is not None and self._renew_due is self._bundle
            rotator = self._rotator
            if early:
                await _sleep_or(stop, random.uniform(0.0, self.early_renewal_jitter))
                rotator = dataclasses.replace(rotator, fraction=0.0, jitter=0.0)

            def accepted(
                bundle: CertBundle, early: bool = early, wake: asyncio.Event = wake
            ) -> None:
                self._accept(bundle)
                if early:
                    wake.set()  # back to renewing at half-life

            try:
                await rotator.run(self.bundle, self._renew, accepted, wake)
            finally:
                relay.cancel()
                self._wake = None


async def _relay(stop: asyncio.Event, wake: asyncio.Event) -> None:
    await stop.wait()
    wake.set()


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _pem_fingerprints(pem: bytes) -> list[str]:
    """SHA-256 of each certificate's DER in `pem`, without cryptography. A blob OpenSSL
    cannot read raises ssl.SSLError or ValueError."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem.decode("ascii"))
    return [hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group().decode("ascii"))).hexdigest()
            for m in _PEM_CERT.finditer(pem)]
