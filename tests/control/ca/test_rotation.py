"""Root rotation: the state machine's preconditions, bundle reloads and the TrustManager steps."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hyphal.control.ca.authority import CertificateAuthority, make_root
from hyphal.control.ca.bundle import BundleError, add_root, fingerprint, parse_bundle
from hyphal.control.ca.bundle_watch import BundleWatcher
from hyphal.control.ca.rotation import (
    RotationRefused,
    RotationState,
    SidecarTrust,
    check_prepare,
    check_retire,
    check_switch,
)
from hyphal.control.ca.serving import RotatingCredentials
from hyphal.control.ca.trust import TrustManager
from hyphal.identity.certs import chain_to_pem, load_chain
from hyphal.identity.keys import generate_key
from hyphal.identity.spiffe import SpiffeId

OLD, NEW = "a" * 64, "b" * 64


def sidecar(node: str, *, acked: bool = True, root: str | None = OLD) -> SidecarTrust:
    return SidecarTrust(node, "spiffe://cluster.local/ns/n/sa/s", True, acked, root)


# -- the state machine ------------------------------------------------------------------------


def test_prepare_only_from_idle() -> None:
    state = check_prepare(RotationState(), OLD, NEW)
    assert (state.phase, state.new_root, state.old_root) == ("published", NEW, OLD)
    with pytest.raises(RotationRefused, match="run `hyphal ca rotate` again"):
        check_prepare(state, OLD, "c" * 64)


def test_switch_waits_for_every_sidecar_to_ack_the_new_bundle() -> None:
    published = RotationState("published", NEW, OLD)
    with pytest.raises(RotationRefused, match=r"1 connected sidecar\(s\) have not ACKed.*b-0"):
        check_switch(published, [sidecar("a-0"), sidecar("b-0", acked=False)])
    assert check_switch(published, [sidecar("a-0")]).phase == "switched"
    with pytest.raises(RotationRefused, match="no root rotation under way"):
        check_switch(RotationState(), [])
    with pytest.raises(RotationRefused, match="already switched"):
        check_switch(RotationState("switched", NEW, OLD), [])


def test_retire_refuses_signing_root_unknown_root_and_roots_in_use() -> None:
    switched = RotationState("switched", NEW, OLD)
    trusted = [NEW, OLD]
    with pytest.raises(RotationRefused, match="signs workload certificates now"):
        check_retire(switched, NEW, trusted, NEW, [])
    with pytest.raises(RotationRefused, match="matches no trusted root"):
        check_retire(switched, "c" * 8, trusted, NEW, [])
    with pytest.raises(RotationRefused, match=r"still present a certificate.*a-0"):
        check_retire(switched, OLD[:12], trusted, NEW, [sidecar("a-0", root=OLD)])
    with pytest.raises(RotationRefused, match="CERT_ROOT"):
        check_retire(switched, OLD, trusted, NEW, [sidecar("a-0", root=None)])
    done = check_retire(switched, OLD[:12], trusted, NEW, [sidecar("a-0", root=NEW)])
    assert done.phase == "idle"


def test_retire_new_root_while_published_abandons_the_rotation() -> None:
    published = RotationState("published", NEW, OLD)
    assert check_retire(published, NEW, [OLD, NEW], OLD, [sidecar("a-0")]).phase == "idle"
    with pytest.raises(RotationRefused, match="refusing to retire the last"):
        check_retire(RotationState(), OLD, [OLD], NEW, [])


def test_state_round_trips_and_refuses_nonsense() -> None:
    state = RotationState("switched", NEW, OLD, "t")
    assert RotationState.from_json(state.to_json()) == state
    with pytest.raises(ValueError, match="phase must be one of"):
        RotationState.from_json({"phase": "halfway"})
    with pytest.raises(ValueError, match="needs both"):
        RotationState("published", NEW, None)


# -- bundle files -----------------------------------------------------------------------------


def _root_pem() -> bytes:
    return chain_to_pem([make_root(generate_key())])


def test_parse_bundle_refuses_non_roots_and_expired_roots(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    key = generate_key()
    leaf = ca.issue(key.public_key(), SpiffeId("cluster.local", "n", "s"), dt.timedelta(hours=1))
    with pytest.raises(BundleError, match="not a CA certificate"):
        parse_bundle(ca.trust_bundle_pem + chain_to_pem([leaf]), "x.pem")
    expired = make_root(generate_key(), ttl=dt.timedelta(seconds=-30))
    with pytest.raises(BundleError, match="expired"):
        parse_bundle(chain_to_pem([expired]), "x.pem")
    with pytest.raises(BundleError, match="holds no PEM certificate"):
        parse_bundle(b"garbage", "x.pem")


def test_add_root_appends_once(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    bundle = tmp_path / "ca" / "trust-bundle.pem"
    extra = _root_pem()
    root, changed = add_root(bundle, extra, "extra.pem")
    in_file = {fingerprint(c) for c in load_chain(bundle.read_bytes())}
    assert changed and fingerprint(root) in in_file
    assert add_root(bundle, extra, "extra.pem")[1] is False
    assert len(load_chain(bundle.read_bytes())) == 2
    assert ca.reload_trust_bundle() is True and len(ca.roots) == 2


def test_malformed_bundle_is_refused_and_old_roots_stay(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    bundle = tmp_path / "ca" / "trust-bundle.pem"
    before = ca.trust_bundle_pem
    bad = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    bundle.write_bytes(before + bad)
    with pytest.raises(BundleError):
        ca.reload_trust_bundle()
    assert ca.trust_bundle_pem == before


def test_watcher_sees_atomic_replacement_and_in_place_edits(tmp_path: Path) -> None:
    path = tmp_path / "b.pem"
    path.write_bytes(b"one")
    calls: list[int] = []
    w = BundleWatcher(path, lambda: calls.append(1), interval=0.01)
    assert not w.check()
    tmp = tmp_path / "b.tmp"
    tmp.write_bytes(b"two!")
    tmp.replace(path)
    assert w.check() and calls == [1]
    with path.open("ab") as fh:
        fh.write(b"more")
    assert w.check() and calls == [1, 1]


# -- TrustManager over a real CA and state dir -------------------------------------------------


@dataclass
class FakeSource:
    """Records what would be pushed as ROOTCA (the snapshot source's input)."""

    bundles: list[bytes] = field(default_factory=list)

    def update_ca_bundle(self, ca_bundle: bytes) -> None:
        self.bundles.append(ca_bundle)

    def snapshot_for(self, node: Any) -> Any:  # no connections in these tests
        raise AssertionError("not called without connections")


def _manager(tmp_path: Path) -> tuple[TrustManager, FakeSource, RotatingCredentials]:
    ca = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    sc = ca.server_credentials()
    creds = RotatingCredentials(sc.chain_pem, sc.key_pem, sc.trust_bundle_pem)
    source = FakeSource()
    return TrustManager(ca, tmp_path / "ca", source, creds), source, creds


def test_reload_publishes_to_sidecars_and_server_credentials(tmp_path: Path) -> None:
    trust, source, creds = _manager(tmp_path)
    add_root(tmp_path / "ca" / "trust-bundle.pem", _root_pem(), "extra.pem")
    assert trust.reload()
    assert len(load_chain(source.bundles[-1])) == 2
    assert creds.trust_bundle_pem == source.bundles[-1]
    (tmp_path / "ca" / "trust-bundle.pem").write_bytes(b"oops")
    assert not trust.reload()
    assert "holds no PEM certificate" in trust.last_error and len(source.bundles) == 1


def test_full_rotation_on_disk(tmp_path: Path) -> None:
    trust, source, creds = _manager(tmp_path)
    ca = trust.ca
    old = fingerprint(ca.root_cert)
    view = trust.prepare()
    new = view["rotation"]["new_root"]
    assert view["signing_root"] == old and {r["fingerprint"] for r in view["roots"]} == {old, new}
    assert (tmp_path / "ca" / "roots" / "1" / "root-key.pem").exists()  # the first root, kept
    assert (tmp_path / "ca" / "roots" / "2" / "root-cert.pem").exists()
    assert [fingerprint(c) for c in load_chain(source.bundles[-1])] == [old, new]
    with pytest.raises(RotationRefused, match="already published"):
        trust.prepare()

    view = trust.switch()
    assert view["signing_root"] == new
    assert [fingerprint(c) for c in load_chain(source.bundles[-1])] == [new, old]  # signer first
    leaf = ca.issue(generate_key().public_key(), SpiffeId("cluster.local", "n", "s"),
                    dt.timedelta(minutes=1))
    leaf.verify_directly_issued_by(ca.root_cert)
    # A restarted control plane signs with the new root too.
    again = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    assert fingerprint(again.root_cert) == new

    serving_before = creds._material.cert_pem
    view = trust.retire(old[:16])
    assert [r["fingerprint"] for r in view["roots"]] == [new]
    assert view["rotation"]["phase"] == "idle" and view["serving_root"] == new
    assert creds._material.cert_pem != serving_before  # re-issued from the new root
    assert fingerprint(load_chain((tmp_path / "ca" / "root-cert.pem").read_bytes())[0]) == new
    restarted = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    assert fingerprint(restarted.root_cert) == new


# -- a renewing sidecar's reconnect does not drop its endpoints ------------------------------


async def test_reconnect_within_grace_keeps_the_endpoint() -> None:
    import asyncio

    from hyphal.control.translate.source import MeshSnapshotSource
    from hyphal.control.xds.snapshot import NodeInfo

    src = MeshSnapshotSource((), reconnect_grace=0.2)
    node = NodeInfo(
        id="api-0.demo",
        cluster="api",
        metadata={"NAMESPACE": "demo", "SERVICE_ACCOUNT": "api", "PROXY_MODE": "sidecar"},
        namespace="demo",
        service_account="api",
        proxy_mode="sidecar",
        peer_identity="spiffe://cluster.local/ns/demo/sa/api",  # came over mTLS
    )
    src.node_connected(node)
    src.node_disconnected(node)  # the old stream closes ...
    src.node_connected(node)  # ... the new one opens: never removed
    await asyncio.sleep(0.3)
    assert "api-0.demo" in src.registry.view().nodes
    src.node_disconnected(node)
    assert "api-0.demo" in src.registry.view().nodes  # still within the grace period
    await asyncio.sleep(0.3)
    assert "api-0.demo" not in src.registry.view().nodes
