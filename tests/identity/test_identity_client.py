"""CertBundle checks and CertificateRotator timing (no network: the CA is called in-process)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path

import pytest

from hyphal.control.ca.authority import CertificateAuthority
from hyphal.identity.client import (
    CertBundle,
    CertificateRequestError,
    CertificateRotator,
    bundle_from_response,
)
from hyphal.identity.keys import PrivateKey, generate_key, make_csr
from hyphal.identity.spiffe import SpiffeId

SHOP = SpiffeId("cluster.local", "shop", "product")


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "state", "cluster.local")


def issue(ca: CertificateAuthority, ttl: float, key: PrivateKey | None = None) -> CertBundle:
    key = key or generate_key()
    chain = ca.sign_csr(make_csr(key, SHOP), SHOP, dt.timedelta(seconds=ttl))
    return bundle_from_response([c.decode() for c in chain], key, SHOP, ca.root_cert_pem)


def test_bundle_from_response_checks_key_identity_and_root(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    key = generate_key()
    chain = [c.decode() for c in ca.sign_csr(make_csr(key, SHOP), SHOP, dt.timedelta(hours=1))]
    with pytest.raises(CertificateRequestError, match="different key"):
        bundle_from_response(chain, generate_key(), SHOP, ca.root_cert_pem)
    other = SpiffeId("cluster.local", "shop", "cart")
    with pytest.raises(CertificateRequestError, match=r"not spiffe://cluster\.local/ns/shop/sa/cart"):
        bundle_from_response(chain, key, other, ca.root_cert_pem)
    with pytest.raises(CertificateRequestError, match="unreadable"):
        bundle_from_response(["junk"], key, SHOP, ca.root_cert_pem)
    stranger = CertificateAuthority.load_or_create(tmp_path / "x", "cluster.local")
    with pytest.raises(CertificateRequestError, match="does not verify"):
        bundle_from_response(chain[:1], key, SHOP, stranger.root_cert_pem)


def test_rotation_is_due_at_half_the_lifetime_with_small_jitter(ca: CertificateAuthority) -> None:
    bundle = issue(ca, ttl=100)
    rotator = CertificateRotator()
    rng = random.Random(7)
    times = [rotator.next_rotation(bundle, rng) - bundle.issued_at for _ in range(200)]
    lifetime = bundle.lifetime
    assert all(lifetime * 0.45 <= t <= lifetime * 0.5 for t in times)
    assert len(set(times)) > 100  # jittered, so many sidecars do not renew in one burst
    assert rotator.delay(bundle, now=bundle.not_after) == 0.0


def test_rotation_ignores_the_backdated_not_before(ca: CertificateAuthority) -> None:
    # notBefore is 60 s in the past; a 4 s certificate must still rotate ~2 s from now.
    bundle = issue(ca, ttl=4)
    delay = CertificateRotator(jitter=0.0).delay(bundle, now=bundle.issued_at)
    assert 1.5 <= delay <= 2.5


async def test_run_renews_before_expiry_and_retries_failures(ca: CertificateAuthority) -> None:
    first = issue(ca, ttl=2)
    received: list[CertBundle] = []
    calls = 0
    stop = asyncio.Event()

    async def renew(current: CertBundle) -> CertBundle:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("CA unreachable")  # the first attempt fails
        return issue(ca, ttl=2)

    def on_new(bundle: CertBundle) -> None:
        received.append(bundle)
        if len(received) == 2:
            stop.set()

    rotator = CertificateRotator(min_retry=0.05)
    await asyncio.wait_for(rotator.run(first, renew, on_new, stop), timeout=10)
    assert calls == 3 and len(received) == 2
    # Each renewal arrived before the certificate it replaced expired.
    assert received[0].issued_at < first.not_after
    assert received[1].issued_at < received[0].not_after


async def test_run_stops_promptly(ca: CertificateAuthority) -> None:
    stop = asyncio.Event()

    async def renew(current: CertBundle) -> CertBundle:
        raise AssertionError("not due yet")

    task = asyncio.create_task(
        CertificateRotator().run(issue(ca, ttl=3600), renew, lambda b: None, stop)
    )
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
