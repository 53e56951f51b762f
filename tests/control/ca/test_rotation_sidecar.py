"""The sidecar's side of root rotation: when a new ROOTCA makes it renew early, and which root
its certificate reports (CERT_ROOT)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hyphal.control.ca.authority import CertificateAuthority, make_root
from hyphal.control.ca.bundle import fingerprint
from hyphal.identity.certs import chain_to_pem
from hyphal.identity.client import CertBundle
from hyphal.identity.keys import generate_key, key_to_pem
from hyphal.identity.spiffe import SpiffeId
from hyphal.proxy.certs import CertManager

ID = SpiffeId("cluster.local", "demo", "api")


def manager(tmp_path: Path) -> tuple[CertManager, CertificateAuthority]:
    ca = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    boot: Any = SimpleNamespace(spiffe_id=ID.uri)
    m = CertManager(boot)
    key = generate_key()
    leaf = ca.issue(key.public_key(), ID, dt.timedelta(minutes=10))
    now = dt.datetime.now(dt.UTC)
    m._root_pem = ca.root_cert_pem
    m._bundle = CertBundle(key_to_pem(key), chain_to_pem([leaf]), now + dt.timedelta(minutes=10),
                           ID, now, ca.root_cert_pem)
    return m, ca


def test_reports_the_root_its_certificate_chains_to(tmp_path: Path) -> None:
    m, ca = manager(tmp_path)
    assert m.root_fingerprint == fingerprint(ca.root_cert)
    info = m.info()
    assert info is not None and info.root_fingerprint == fingerprint(ca.root_cert)


def test_same_signing_root_first_does_not_renew(tmp_path: Path) -> None:
    m, ca = manager(tmp_path)
    other = chain_to_pem([make_root(generate_key())])
    m.set_trust_bundle(ca.root_cert_pem + other)  # a root added after ours: nothing to do
    assert m._renew_due is None


def test_switched_signing_root_renews_early(tmp_path: Path) -> None:
    m, ca = manager(tmp_path)
    new = chain_to_pem([make_root(generate_key())])
    m.set_trust_bundle(new + ca.root_cert_pem)
    assert m._renew_due is m._bundle
    assert "CA now signs with root" in m._renewal_reason(new + ca.root_cert_pem)


def test_bundle_without_our_root_renews_early(tmp_path: Path) -> None:
    m, _ca = manager(tmp_path)
    new = chain_to_pem([make_root(generate_key())])
    assert "no longer holds root" in m._renewal_reason(new)
    m.set_trust_bundle(new)
    assert m._renew_due is m._bundle
    # The control plane is verified against the bootstrap root and the ROOTCA roots.
    assert new.strip() in m.control_plane_roots() and m._root_pem.strip() in m.control_plane_roots()
