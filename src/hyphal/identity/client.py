"""Sidecar side of the CA: request a certificate over gRPC, hold it, and rotate it in time.

`cryptography` (and the modules built on it) is imported only by the functions that make or
check certificates: the sidecar's long-lived process holds `CertBundle`s and rotates them,
but obtains them in a short-lived child (`hyphal.proxy.cert_worker`), which keeps ~10 MB of
RSS out of every sidecar.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from hyphal.identity.files import write_private
from hyphal.identity.spiffe import SpiffeId

if TYPE_CHECKING:
    from hyphal.identity.keys import PrivateKey

log = logging.getLogger("hyphal.identity")

KEY_FILE = "key.pem"
CHAIN_FILE = "cert-chain.pem"
ROOT_FILE = "root-cert.pem"


class CertificateRequestError(Exception):
    """The CA refused or could not be reached; `code` is the gRPC status (None if local)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CertBundle:
    """A workload's key and certificate chain (leaf first, no self-signed root)."""

    key_pem: bytes = field(repr=False)
    chain_pem: bytes
    not_after: dt.datetime
    spiffe_id: SpiffeId
    issued_at: dt.datetime
    roots_pem: bytes = b""

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.issued_at

    def write(self, directory: Path) -> None:
        """Write key.pem (0600), cert-chain.pem and root-cert.pem into `directory` (0700),
        each replaced atomically."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(directory / KEY_FILE, self.key_pem, durable=False)
        write_private(directory / CHAIN_FILE, self.chain_pem, durable=False)
        if self.roots_pem:
            write_private(directory / ROOT_FILE, self.roots_pem, durable=False)


def _channel_options(ca_address: str) -> list[tuple[str, str | int]]:
    # The CA's serving certificate names DNS localhost and IP 127.0.0.1/::1; gRPC checks IP
    # SANs for IP targets, so no override is needed unless the address is another name.
    host = ca_address.rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "::1", "localhost"):
        return []
    return [("grpc.ssl_target_name_override", "localhost")]


async def request_certificate(
    ca_address: str,
    root_pem: bytes,
    token: str | None,
    key: PrivateKey,
    spiffe_id: SpiffeId,
    ttl: dt.timedelta | None = None,
    *,
    client_bundle: CertBundle | None = None,
    timeout: float = 10.0,
) -> CertBundle:
    """Send a CSR for `spiffe_id` (signed by `key`) to the CA at `ca_address`.

    `root_pem` authenticates the CA's serving certificate. Identity is proven by `token`
    (bearer metadata) or, when `token` is None, by `client_bundle` presented over mTLS.
    The answer is checked: it must carry `spiffe_id`, match `key` and chain to a root.
    """
    from hyphal.control.ca.proto import ca_pb2, ca_pb2_grpc
    from hyphal.identity.keys import make_csr

    if token is None and client_bundle is None:
        raise CertificateRequestError("no credential: give a bootstrap token or a current cert")
    if client_bundle is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=root_pem,
            private_key=client_bundle.key_pem,
            certificate_chain=client_bundle.chain_pem,
        )
    else:
        creds = grpc.ssl_channel_credentials(root_certificates=root_pem)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    request = ca_pb2.IstioCertificateRequest(
        csr=make_csr(key, spiffe_id).decode("ascii"),
        validity_duration=int(ttl.total_seconds()) if ttl is not None else 0,
    )
    async with grpc.aio.secure_channel(
        ca_address, creds, options=_channel_options(ca_address)
    ) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        try:
            response = await stub.CreateCertificate(request, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise CertificateRequestError(
                f"CA at {ca_address} refused the certificate request for {spiffe_id.uri}: "
                f"{exc.code().name}: {exc.details()}",
                exc.code(),
            ) from None
    return bundle_from_response(list(response.cert_chain), key, spiffe_id, root_pem)


def bundle_from_response(
    cert_chain: list[str], key: PrivateKey, spiffe_id: SpiffeId, root_pem: bytes
) -> CertBundle:
    """Check a CA answer (leaf first, root last) and make a CertBundle of it."""
    from cryptography.hazmat.primitives import serialization

    from hyphal.identity.certs import (
        CertificateError,
        chain_to_pem,
        load_chain,
        not_after,
        verify_chain,
    )
    from hyphal.identity.keys import key_to_pem

    issued_at = dt.datetime.now(dt.UTC)
    try:
        certs = load_chain("".join(cert_chain).encode("ascii"))
    except (CertificateError, UnicodeEncodeError) as exc:
        raise CertificateRequestError(f"CA answered an unreadable chain: {exc}") from None
    leaf, rest = certs[0], certs[1:]
    roots = [c for c in rest if c.issuer == c.subject]
    intermediates = [c for c in rest if c.issuer != c.subject]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise CertificateRequestError("CA answered a certificate for a different key")
    try:
        trusted = load_chain(root_pem) + roots
        got = verify_chain(leaf, intermediates, trusted)
    except CertificateError as exc:
        raise CertificateRequestError(
            f"CA answered a certificate that does not verify: {exc}"
        ) from exc
    if got != spiffe_id:
        raise CertificateRequestError(
            f"CA answered a certificate for {got.uri}, not {spiffe_id.uri}"
        )
    return CertBundle(
        key_pem=key_to_pem(key),
        chain_pem=chain_to_pem([leaf, *intermediates]),
        not_after=not_after(leaf),
        spiffe_id=got,
        issued_at=issued_at,
        roots_pem=chain_to_pem(roots),
    )


@dataclass(frozen=True, slots=True)
class CertificateRotator:
    """When to renew: at `fraction` of the lifetime, minus up to `jitter` of it at random."""

    fraction: float = 0.5
    jitter: float = 0.05
    min_retry: float = 0.5
    max_retry: float = 30.0

    def next_rotation(self, bundle: CertBundle, rng: random.Random | None = None) -> dt.datetime:
        spread = (rng or random).uniform(0.0, self.jitter)
        return bundle.issued_at + bundle.lifetime * max(0.0, self.fraction - spread)

    def delay(
        self,
        bundle: CertBundle,
        now: dt.datetime | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds from `now` until the next rotation (0 if already due)."""
        current = now or dt.datetime.now(dt.UTC)
        return max(0.0, (self.next_rotation(bundle, rng) - current).total_seconds())

    async def run(
        self,
        current: CertBundle,
        renew: Callable[[CertBundle], Awaitable[CertBundle]],
        on_new: Callable[[CertBundle], None],
        stop: asyncio.Event,
    ) -> None:
        """Renew `current` forever (until `stop`): call `renew(current)` when due, hand the
        result to `on_new`; on failure retry with backoff, never later than the expiry."""
        while not stop.is_set():
            if await _wait(stop, self.delay(current)):
                return
            backoff = self.min_retry
            while True:
                try:
                    fresh = await renew(current)
                except Exception as exc:  # noqa: BLE001 (any failure: keep the current cert, retry)
                    left = (current.not_after - dt.datetime.now(dt.UTC)).total_seconds()
                    log.warning(
                        "certificate rotation for %s failed (%s); retrying in %.1fs, "
                        "current certificate expires in %.0fs",
                        current.spiffe_id.uri,
                        exc,
                        backoff,
                        left,
                    )
                    if await _wait(stop, min(backoff, max(left / 4, self.min_retry))):
                        return
                    backoff = min(backoff * 2, self.max_retry)
                    continue
                break
            log.info(
                "rotated certificate for %s, valid until %s",
                fresh.spiffe_id.uri,
                fresh.not_after.isoformat(),
            )
            on_new(fresh)
            current = fresh


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
