"""The control plane's live trust: the bundle file, the signing root, ROOTCA and server creds.

`TrustManager` is the one place that changes what the mesh trusts at runtime. It re-reads
`ca/trust-bundle.pem` when the file changes (an operator edit, `hyphal ca add-root`),
refusing a malformed bundle with a log line and keeping the old one; it publishes the roots
to every sidecar (the `ROOTCA` secret, signing root first) and to the gRPC server's
credentials (client certificates from any trusted root are accepted on new connections);
and it runs the steps of a root rotation (`control/ca/rotation.py` decides whether a step
may run). State files, under `<state-dir>/ca/`:

    roots/<n>/root-cert.pem, root-key.pem   roots made by rotation (n >= 2; 1 = the first root)
    signing-root                            which of them signs workload certificates
    rotation.json                           the rotation's phase
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from hyphal.control.ca import files
from hyphal.control.ca.authority import (
    ROOT_CERT,
    ROOT_KEY,
    SERVER_CERT,
    SIGNING_ROOT,
    TRUST_BUNDLE,
    CertificateAuthority,
    make_root,
)
from hyphal.control.ca.bundle import (
    BundleError,
    describe_roots,
    fingerprint,
    issued_by,
    write_bundle,
)
from hyphal.control.ca.rotation import (
    RotationRefused,
    RotationState,
    SidecarTrust,
    check_prepare,
    check_retire,
    check_switch,
)
from hyphal.control.ca.serving import RotatingCredentials
from hyphal.identity.certs import chain_to_pem, load_chain
from hyphal.identity.keys import generate_key, key_to_pem

__all__ = ["CERT_ROOT_KEY", "SDS_TYPE", "TrustManager", "sidecar_trust"]

log = logging.getLogger("hyphal.ca.trust")

ROTATION_FILE = "rotation.json"
ROOTS_DIR = "roots"
CERT_ROOT_KEY = "CERT_ROOT"  # node metadata: fingerprint of the root the sidecar's cert chains to
SDS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


class _Source(Protocol):
    def update_ca_bundle(self, ca_bundle: bytes) -> None: ...
    def snapshot_for(self, node: Any) -> Any: ...


def sidecar_trust(connections: Iterable[Any], source: _Source) -> list[SidecarTrust]:
    """Every ADS stream authenticated by a workload certificate, as the rotation sees it."""
    out: list[SidecarTrust] = []
    for conn in connections:
        if conn.peer_identity is None:
            continue  # plaintext (proxyless gRPC on this host): no mesh certificate
        status = next((t for t in conn.types if t.type_url == SDS_TYPE), None)
        acked = False
        if status is not None:
            snap = source.snapshot_for(conn.node)
            wanted = None if status.subscribed is None else frozenset(status.subscribed)
            names = snap.select(SDS_TYPE, wanted)
            acked = status.acked_version == snap.version_for(SDS_TYPE, names)
        root = (conn.node.metadata or {}).get(CERT_ROOT_KEY)
        out.append(
            SidecarTrust(
                node_id=conn.node.id,
                identity=conn.peer_identity,
                subscribed=status is not None,
                rootca_acked=acked,
                cert_root=str(root) if root else None,
            )
        )
    return out


class TrustManager:
    """Owns runtime changes of trust; every method runs on the control plane's loop."""

    def __init__(
        self,
        ca: CertificateAuthority,
        ca_dir: Path,
        source: _Source,
        creds: RotatingCredentials,
        connections: Callable[[], Sequence[Any]] = list,
        on_change: Callable[[CertificateAuthority], None] = lambda _ca: None,
    ) -> None:
        self.ca = ca
        self.ca_dir = ca_dir
        self.source = source
        self.creds = creds
        self.connections = connections
        self.on_change = on_change
        self.last_error = ""
        self._published = ca.trust_bundle_pem

    # -- bundle reloads ----------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the bundle file; publish if the roots changed. False when refused."""
        try:
            changed = self.ca.reload_trust_bundle()
        except (BundleError, OSError, ValueError) as exc:
            self.last_error = f"{exc}; still trusting the previous {len(self.ca.roots)} root(s)"
            log.error("trust bundle not reloaded: %s", self.last_error)
            return False
        self.last_error = ""
        if changed:
            log.info("trust bundle reloaded: %d root(s)", len(self.ca.roots))
        self._publish()
        return True

    def _publish(self) -> None:
        pem = self.ca.trust_bundle_pem
        if pem == self._published:
            return
        self._published = pem
        self.creds.update(trust_bundle_pem=pem)
        self.source.update_ca_bundle(pem)
        self.on_change(self.ca)
        log.info(
            "published trust bundle to sidecars: %s (signing %s)",
            ", ".join(fingerprint(r)[:16] for r in self.ca.roots),
            fingerprint(self.ca.root_cert)[:16],
        )

    # -- views -------------------------------------------------------------------------

    def state(self) -> RotationState:
        path = self.ca_dir / ROTATION_FILE
        if not path.exists():
            return RotationState()
        import json

        return RotationState.from_json(json.loads(path.read_bytes()), str(path))

    def sidecars(self) -> list[SidecarTrust]:
        return sidecar_trust(self.connections(), self.source)

    def show(self) -> dict[str, Any]:
        serving = load_chain(self.creds_chain())[0]
        serving_root = next((r for r in self.ca.roots if issued_by(serving, r)), None)
        return {
            "trust_domain": self.ca.trust_domain,
            "signing_root": fingerprint(self.ca.root_cert),
            "serving_root": fingerprint(serving_root) if serving_root else None,
            "roots": [r.to_json() for r in describe_roots(self.ca.roots, self.ca.root_cert)],
            "rotation": self.state().to_json(),
            "sidecars": [s.to_json() for s in self.sidecars()],
            "last_error": self.last_error,
        }

    def creds_chain(self) -> bytes:
        return (self.ca_dir / SERVER_CERT).read_bytes()

    # -- rotation steps ------------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """Make a new root next to the old ones and trust it everywhere (not signing yet)."""
        signing = fingerprint(self.ca.root_cert)
        state = self.state()
        if state.phase != "idle":
            check_prepare(state, signing, "")  # raises with what to do
        self._archive_first_root()
        key = generate_key()
        root = make_root(key)
        new_fp = fingerprint(root)
        next_state = check_prepare(state, signing, new_fp)
        where = self.ca_dir / ROOTS_DIR / str(self._next_index())
        files.ensure_private_dir(where)
        files.write_new(where / ROOT_KEY, key_to_pem(key))
        files.write_new(where / ROOT_CERT, chain_to_pem([root]))
        bundle = self.ca_dir / TRUST_BUNDLE
        with files.locked(self.ca_dir):
            write_bundle(bundle, [*self.ca.roots, root])
        self._save(next_state)
        log.info("root rotation: made root %s in %s and added it to the bundle", new_fp[:16], where)
        if not self.reload():
            raise RotationRefused(f"the trust bundle could not be reloaded: {self.last_error}")
        return self.show()

    def switch(self) -> dict[str, Any]:
        """Sign workload certificates with the new root (every sidecar already trusts it)."""
        state = self.state()
        next_state = check_switch(state, self.sidecars())
        assert next_state.new_root is not None
        rel = self._find_root_dir(next_state.new_root)
        from hyphal.control.ca.authority import load_signing_root

        files.replace(self.ca_dir / SIGNING_ROOT, (rel + "\n").encode())
        cert, key = load_signing_root(self.ca_dir)
        self.ca.set_signer(cert, key)
        self._save(next_state)
        log.info("root rotation: workload certificates now signed by %s", next_state.new_root[:16])
        self._publish()  # the signing root goes first in ROOTCA: sidecars renew early
        return self.show()

    def retire(self, root: str) -> dict[str, Any]:
        """Stop trusting `root` (a fingerprint or a unique prefix of one)."""
        state = self.state()
        trusted = [fingerprint(r) for r in self.ca.roots]
        signing = fingerprint(self.ca.root_cert)
        next_state = check_retire(state, root, trusted, signing, self.sidecars())
        fp = next(t for t in trusted if t.startswith(root.lower()))
        keep = [r for r in self.ca.roots if fingerprint(r) != fp]
        with files.locked(self.ca_dir):
            write_bundle(self.ca_dir / TRUST_BUNDLE, keep)
        if not self.reload():
            raise RotationRefused(f"the trust bundle could not be reloaded: {self.last_error}")
        self._mirror_signing_root(fp)
        server = self.ca.server_credentials()  # re-issued if it chained to the retired root
        self.creds.update(cert_pem=server.chain_pem, key_pem=server.key_pem)
        self._save(next_state)
        log.info("root rotation: retired root %s", fp[:16])
        return self.show()

    # -- files -------------------------------------------------------------------------

    def _save(self, state: RotationState) -> None:
        files.replace(self.ca_dir / ROTATION_FILE, state.dumps())

    def _root_dirs(self) -> list[tuple[int, Path]]:
        base = self.ca_dir / ROOTS_DIR
        if not base.is_dir():
            return []
        return sorted((int(p.name), p) for p in base.iterdir() if p.name.isdigit())

    def _next_index(self) -> int:
        return max([1, *(n for n, _ in self._root_dirs())]) + 1

    def _find_root_dir(self, fp: str) -> str:
        for n, path in self._root_dirs():
            cert_file = path / ROOT_CERT
            if cert_file.exists() and fingerprint(load_chain(cert_file.read_bytes())[0]) == fp:
                return f"{ROOTS_DIR}/{n}"
        raise RotationRefused(
            f"root {fp[:16]} is in the rotation state but not under {self.ca_dir / ROOTS_DIR}; "
            "restore it from backup, or abandon the rotation with "
            f"`hyphal ca retire-root {fp[:16]}`"
        )

    def _archive_first_root(self) -> None:
        """Keep a copy of `ca/root-*.pem` as `roots/1/` before rotation ever replaces them."""
        first = self.ca_dir / ROOTS_DIR / "1"
        cert, key = self.ca_dir / ROOT_CERT, self.ca_dir / ROOT_KEY
        if first.exists() or not (cert.exists() and key.exists()):
            return
        files.ensure_private_dir(first)
        files.write_new(first / ROOT_KEY, files.read_private(key))
        files.write_new(first / ROOT_CERT, cert.read_bytes())

    def _mirror_signing_root(self, retired: str) -> None:
        """`ca/root-cert.pem` is what sidecars bootstrap with: once its root is retired it must
        name the signing root instead (both files are kept under `roots/<n>/`)."""
        cert_path = self.ca_dir / ROOT_CERT
        if not cert_path.exists():
            return
        current: x509.Certificate = load_chain(cert_path.read_bytes())[0]
        if fingerprint(current) != retired or not (self.ca_dir / SIGNING_ROOT).exists():
            return
        rel = (self.ca_dir / SIGNING_ROOT).read_text(encoding="utf-8").strip()
        src = self.ca_dir / rel
        files.replace(self.ca_dir / ROOT_KEY, files.read_private(src / ROOT_KEY))
        files.replace(cert_path, (src / ROOT_CERT).read_bytes())
        log.info("ca/root-cert.pem now holds signing root %s", fingerprint(self.ca.root_cert)[:16])
