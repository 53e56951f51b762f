"""Wiring only: CA, tokens, store, registry, snapshot source, ADS server and API on one loop.

Start order: state dir, admin token and the HTTP API first (so `/healthz` answers and
`/ready` says what is still missing), then the CA, the store (a config dir that does not
load stops the start with its errors), the snapshot source and the gRPC ports. The ports
actually bound are written to `<state-dir>/ports.json` for runners and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyphal.control import statelock
from hyphal.control.api import ApiHandlers, ApiServer, load_or_create_admin_token
from hyphal.control.health import Readiness, build_status, ca_status
from hyphal.control.store import Store
from hyphal.identity.files import write_private

log = logging.getLogger("hyphal.control")

PORTS_FILE = "ports.json"
# How long a sidecar whose ADS stream closed stays an endpoint (it reconnects after every
# certificate renewal; see MeshSnapshotSource).
RECONNECT_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class ControlOptions:
    """`hyphal control` flags. Ports: 0 = the kernel picks; plaintext None = off."""

    config_dir: Path | None
    state_dir: Path
    xds_port: int = 15012
    xds_plaintext_port: int | None = 15010
    ca_port: int = 15013
    api_port: int = 15014
    trust_domain: str = "cluster.local"
    cert_ttl: dt.timedelta = dt.timedelta(hours=24)
    debounce: float = 0.1
    poll_interval: float = 0.5
    host: str = "127.0.0.1"
    # Kubernetes mode (docs/kubernetes.md): registry and resources from the API server.
    config_source: str = "dir"  # "dir" | "kubernetes"
    kube_api: str | None = None  # plaintext http:// API (tests, kubectl proxy); None = in-cluster
    webhook_port: int | None = None  # injection webhook (HTTPS); None = off
    inject_image: str = "ghcr.io/hyphal/hyphal:0.1.0"


@dataclass(slots=True)
class ControlPlane:
    options: ControlOptions
    readiness: Readiness = field(default_factory=Readiness)
    ports: dict[str, int | None] = field(default_factory=dict)
    store: Store | None = None
    _stack: list[Any] = field(default_factory=list)  # things to stop, in start order
    _api: ApiServer | None = None
    _status: dict[str, Any] = field(default_factory=dict)
    _lock: int | None = None  # statelock descriptor: one control plane per state dir

    async def start(self) -> dict[str, int | None]:
        """Start every part; raises StoreLoadError / OSError with what to fix."""
        from hyphal.control.ca.authority import CertificateAuthority
        from hyphal.control.ca.bundle_watch import BundleWatcher
        from hyphal.control.ca.service import add_ca_service
        from hyphal.control.ca.serving import RotatingCredentials, build_rotating_server
        from hyphal.control.ca.tokens import TokenIssuer
        from hyphal.control.ca.trust import TrustManager
        from hyphal.control.translate.source import MeshSnapshotSource
        from hyphal.control.xds.server import AdsServer

        opts = self.options
        loop = asyncio.get_running_loop()
        opts.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(opts.state_dir, 0o700)
        self._lock = statelock.acquire(opts.state_dir)  # before anything is read or written
        admin_token = load_or_create_admin_token(opts.state_dir)
        store = self.store = Store(opts.state_dir, opts.config_dir, opts.trust_domain)

        ca = CertificateAuthority.load_or_create(opts.state_dir, opts.trust_domain)
        tokens = TokenIssuer.load_or_create(opts.state_dir, opts.trust_domain)

        def mint(namespace: str, service_account: str, ttl: float | None) -> str:
            lifetime = dt.timedelta(seconds=ttl) if ttl else dt.timedelta(hours=24)
            return tokens.mint(namespace, service_account, lifetime)

        from hyphal.control.telemetry import TelemetryAggregator, targets_from_connections

        conns: list[Any] = []  # filled once the ADS server exists
        telemetry = TelemetryAggregator(
            lambda: targets_from_connections(conns[0].connections()) if conns else [])
        handlers = ApiHandlers(store, admin_token, self.readiness.waiting, self.status, mint,
                               telemetry)
        self._api = ApiServer(handlers, loop, host=opts.host, port=opts.api_port)
        self._api.start()
        self.ports["api"] = self._api.port
        self._status["ca"] = ca_status(opts.trust_domain, ca.roots)
        self.readiness.mark_ready("ca")

        store.load()
        self.readiness.mark_ready("store")

        authenticators: list[Any] = []
        if opts.config_source == "kubernetes":
            from hyphal.kube.control import KubeControl

            kube = KubeControl.from_flags(opts.kube_api, opts.trust_domain)
            self._stack.append(kube)
            source = MeshSnapshotSource((), registry=kube.registry,
                                        ca_bundle=ca.trust_bundle_pem,
                                        trust_domain=opts.trust_domain)
            await kube.start(source, store)
            authenticators = kube.authenticators()
            if opts.webhook_port is not None:
                self.ports["webhook"] = kube.start_webhook(
                    ca, opts.state_dir, opts.inject_image, opts.webhook_port, opts.host)
        else:
            source = MeshSnapshotSource(
                store.resources, ca_bundle=ca.trust_bundle_pem, trust_domain=opts.trust_domain,
                reconnect_grace=RECONNECT_GRACE,
            )
            store.subscribe(lambda state: source.update_resources(state.resources))
        ads = AdsServer(
            source,
            debounce=opts.debounce,
            on_connect=source.node_connected,
            on_disconnect=source.node_disconnected,
            trust_domain=opts.trust_domain,
        )
        creds = ca.server_credentials()
        # Credentials that follow the trust bundle at runtime (root rotation, add-root).
        live_creds = RotatingCredentials(creds.chain_pem, creds.key_pem, creds.trust_bundle_pem)
        built = build_rotating_server(
            ads,
            live_creds,
            xds_port=opts.xds_port,
            plaintext_port=opts.xds_plaintext_port,
            ca_port=opts.ca_port,
            host=opts.host,
            services=[lambda s: add_ca_service(s, ca, tokens, opts.cert_ttl, opts.cert_ttl,
                                               authenticators)],
        )
        await built.start()
        self._stack.append(built)
        await ads.start()
        self._stack.append(ads)
        self._status.update(ads=ads, registry=source.registry)
        self.ports.update(xds=built.xds_port, xds_plaintext=built.plaintext_port,
                          ca=built.ca_port)
        self.readiness.mark_ready("xds")

        self._stack.append(asyncio.create_task(store.watch(opts.poll_interval)))
        trust = TrustManager(
            ca, opts.state_dir / "ca", source, live_creds, ads.connections,
            on_change=lambda c: self._status.update(ca=ca_status(opts.trust_domain, c.roots)),
        )
        handlers.ca_trust = trust
        watcher = BundleWatcher(opts.state_dir / "ca" / "trust-bundle.pem", trust.reload)
        self._stack.append(asyncio.create_task(watcher.run(), name="trust-bundle-watch"))
        conns.append(ads)
        self._stack.append(asyncio.create_task(telemetry.run(), name="telemetry"))
        write_ports(opts.state_dir, self.ports)
        log.info(
            "control plane ready: xds=%s xds-plaintext=%s ca=%s api=%s trust-domain=%s "
            "(state %s, config %s)",
            self.ports["xds"], self.ports["xds_plaintext"] or "off", self.ports["ca"],
            self.ports["api"], opts.trust_domain, opts.state_dir, opts.config_dir,
        )
        return dict(self.ports)

    def status(self) -> Mapping[str, Any]:
        assert self.store is not None
        registry = self._status.get("registry")
        return build_status(
            self.store,
            self._status.get("ads"),
            registry.view() if registry is not None else None,
            self._status.get("ca"),
            self.ports,
            self.readiness,
        )

    async def stop(self) -> None:
        """Stop in reverse start order; safe to call after a failed start."""
        for part in reversed(self._stack):
            if isinstance(part, asyncio.Task):
                part.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await part
            else:
                try:
                    await part.stop()
                except Exception:
                    log.exception("stopping %r failed", part)
        self._stack.clear()
        if self._api is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._api.stop)
            self._api = None
        if self._lock is not None:
            statelock.release(self._lock)
            self._lock = None


def write_ports(state_dir: Path, ports: Mapping[str, int | None]) -> None:
    """`<state-dir>/ports.json` (0600), replaced atomically."""
    data = json.dumps({**ports, "pid": os.getpid()}, indent=2) + "\n"
    write_private(state_dir / PORTS_FILE, data.encode(), durable=False)


async def serve(options: ControlOptions) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    plane = ControlPlane(options)
    try:
        await plane.start()
        await stopping.wait()
        log.info("control plane stopping")
    finally:
        await plane.stop()
    log.info("control plane stopped")
