"""`hyphal proxy` wiring: certificates → data plane → xDS client → admin; drain on signal.

Only wiring lives here; every part does its own work. Start order matters: the workload
certificate first (no mTLS without it, and a refusing CA is a fatal start error), then the
data plane (it serves whatever config the holder has), then the ADS stream that fills the
holder, then the admin listener that reports readiness.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3.base_pb2 import Node

from hyphal.identity.client import CertBundle, CertificateRequestError
from hyphal.proxy.admin import AdminServer, AdminSources, config_dump
from hyphal.proxy.bootstrap import Bootstrap, install_tracer
from hyphal.proxy.certs import CertManager
from hyphal.proxy.compile import Compiler, NodeContext, Snapshot
from hyphal.proxy.dataplane import DataPlane, ListenerBindError
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.proxy.xds_client import XdsClient, build_node
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

__all__ = ["ProxyStartError", "Sidecar", "run_proxy"]

log = logging.getLogger("hyphal.proxy")

CERT_ROOT = "CERT_ROOT"  # node metadata key (docs/xds-conventions.md)


class ProxyStartError(Exception):
    """The sidecar cannot start (CA refused, admin port taken, …); the message says why."""


@dataclass(slots=True)
class _Parts:
    certs: CertManager
    tls: TlsMaterial
    holder: ConfigHolder
    stats: Stats
    access_log: AccessLog
    xds: XdsClient[Snapshot]
    admin: AdminServer
    data_plane: DataPlane


def _make_data_plane(
    holder: ConfigHolder, tls: TlsMaterial, stats: Stats, access_log: AccessLog
) -> DataPlane:
    return DataPlane(holder, tls, access_log, stats)


class Sidecar:
    """One running sidecar; `await start()`, then `await wait()` until a stop is asked."""

    def __init__(
        self, bootstrap: Bootstrap, *, drain_seconds: float = 5.0, warming_timeout: float = 10.0
    ) -> None:
        self.bootstrap = bootstrap
        self._drain_seconds = drain_seconds
        self._warming_timeout = warming_timeout
        self._stop = asyncio.Event()
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshot: Snapshot | None = None
        self.parts: _Parts | None = None
        self.apply_error = ""

    # -- lifecycle

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        b = self.bootstrap
        install_tracer(b)
        certs = CertManager(b)
        try:
            bundle = await certs.issue()
        except CertificateRequestError as exc:
            raise ProxyStartError(f"cannot get a workload certificate: {exc}") from None
        tls = TlsMaterial(bundle.chain_pem, bundle.key_pem, certs.trust_bundle)
        holder = ConfigHolder()
        stats = Stats()
        access_log = AccessLog(b.access_log or None)
        ctx = NodeContext(
            identity=b.spiffe_id,
            workload=b.node.workload_name or b.node.cluster,
            namespace=b.node.namespace,
            app_ports=tuple((p.port, p.app_port) for p in b.node.ports),
            instance_ip=b.node.instance_ip,
        )
        node = build_node(b.node)
        # Which root our certificate chains to, re-sent on every (re)connect: the control
        # plane reads it to know when a root may be retired (docs/xds-conventions.md).
        node.metadata[CERT_ROOT] = certs.root_fingerprint
        xds: XdsClient[Snapshot] = XdsClient(
            b.xds_address,
            node,
            Compiler(ctx),
            self._apply,
            credentials=certs.tls_credentials,
            warming_timeout=self._warming_timeout,
        )
        admin = AdminServer(self._admin_sources(), port=b.admin_port)
        data_plane = _make_data_plane(holder, tls, stats, access_log)
        self.parts = _Parts(certs, tls, holder, stats, access_log, xds, admin, data_plane)
        certs.on_rotate(self._rotated_handler(tls, xds, node))
        self._tasks.append(asyncio.create_task(xds.run(), name="xds"))
        self._tasks.append(asyncio.create_task(certs.run(self._stop), name="certs"))
        try:
            await admin.start()
        except OSError as exc:
            await self.close()
            raise ProxyStartError(str(exc)) from None
        log.info("sidecar %s (%s) started; control plane %s", b.node.id, b.spiffe_id, b.xds_address)

    def _rotated_handler(
        self, tls: TlsMaterial, xds: XdsClient[Snapshot], node: Node
    ) -> Callable[[CertBundle, bytes], None]:
        last_chain = [b""]

        def on_rotate(bundle: CertBundle, roots: bytes) -> None:
            tls.update(bundle.chain_pem, bundle.key_pem, roots)
            if bundle.chain_pem != last_chain[0]:
                if last_chain[0]:
                    assert self.parts is not None
                    node.metadata[CERT_ROOT] = self.parts.certs.root_fingerprint
                    xds.reconnect()  # the ADS channel picks up the new client cert
                last_chain[0] = bundle.chain_pem

        last_chain[0] = self.parts.certs.bundle.chain_pem if self.parts else b""
        return on_rotate

    async def _apply(self, snapshot: Snapshot) -> None:
        assert self.parts is not None
        if snapshot.trust_bundle_pem:
            self.parts.certs.set_trust_bundle(snapshot.trust_bundle_pem)  # roots before users
        try:
            # Binds new listeners first, then swaps the holder (make-before-break).
            await self.parts.data_plane.apply(snapshot.config)
        except ListenerBindError as exc:
            self.apply_error = f"config {snapshot.config.version} not applied: {exc}"
            log.error("%s", self.apply_error)
            return
        except Exception as exc:  # keep the ADS stream alive; the last good config serves
            self.apply_error = f"config {snapshot.config.version} not applied: {exc!r}"
            log.exception("applying config %s failed", snapshot.config.version)
            return
        self.apply_error = ""
        self._snapshot = snapshot
        log.info(
            "applied config %s (%d listeners, %d clusters)",
            snapshot.config.version,
            len(snapshot.config.listeners),
            len(snapshot.config.clusters),
        )

    async def wait(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        """Drain: not ready, let in-flight requests finish, then stop everything."""
        self._draining = True
        self._stop.set()
        p = self.parts
        if p is None:
            return
        try:
            await asyncio.wait_for(p.data_plane.drain(self._drain_seconds), self._drain_seconds + 1)
        except TimeoutError:
            log.warning("drain did not finish in %.1fs", self._drain_seconds)
        await p.data_plane.close()
        p.xds.stop()
        for t in self._tasks:
            try:
                await asyncio.wait_for(t, 3)
            except (TimeoutError, asyncio.CancelledError):
                t.cancel()
            except Exception:
                log.exception("task %s failed", t.get_name())
        await p.admin.close()
        p.access_log.flush()
        log.info("sidecar stopped")

    # -- admin views

    def _ready(self) -> tuple[bool, str]:
        p = self.parts
        if self._draining:
            return False, "draining"
        if p is None or not p.certs.ready:
            return False, "no workload certificate yet"
        if self._snapshot is None:
            missing = p.xds.status().warming
            why = "no config from the control plane yet"
            return False, why + (f" (waiting for {', '.join(missing)})" if missing else "")
        return True, "ready"

    def _dump(self) -> dict[str, Any]:
        p = self.parts
        assert p is not None
        snap = self._snapshot
        roots = p.certs.trust_bundle.count(b"-----BEGIN CERTIFICATE-----")
        doc = config_dump(p.xds.status(), snap.config if snap else None, p.certs.info(), roots)
        doc["node"] = {"id": self.bootstrap.node.id, "identity": self.bootstrap.spiffe_id}
        doc["xds"]["last_error"] = p.xds.last_error
        doc["apply_error"] = self.apply_error
        return doc

    def _stats(self) -> str:
        p = self.parts
        return p.stats.render() if p is not None else ""

    def _admin_sources(self) -> AdminSources:
        return AdminSources(
            ready=self._ready, config_dump=self._dump, stats=self._stats, quit=self.request_stop
        )


async def run_proxy(bootstrap: Bootstrap) -> int:
    """Run until SIGTERM/SIGINT or POST /quitquitquit; 0 on a clean stop."""
    sidecar = Sidecar(bootstrap)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sidecar.request_stop)
    try:
        await sidecar.start()
        await sidecar.wait()
        log.info("stop requested: draining")
    finally:
        await sidecar.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
