"""The control plane's Kubernetes mode: registry and config from the API, the CA's token
reviewer and the injection webhook, started and stopped as one part of `hyphal control`.

Wiring only (server.py calls it when `--config-source kubernetes`): the resources that
translation sees are the last good set of KubeConfigSource, which merges the custom
resources, the mesh Services from KubeServiceSource, and what was applied through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyphal.kube.client import KubeClient, KubeConfig
from hyphal.kube.config_source import KubeConfigSource
from hyphal.kube.informer import start_informers
from hyphal.kube.inject import InjectConfig
from hyphal.kube.registry import KubeRegistry, KubeServiceSource
from hyphal.kube.tokenreview import TokenReviewAuthenticator

log = logging.getLogger("hyphal.kube")

CONTROL_NAMESPACE = "hyphal-system"
CONTROL_SERVICE = "hyphal-control"
WEBHOOK_TTL = dt.timedelta(days=365)


def webhook_dns_names(namespace: str = CONTROL_NAMESPACE) -> list[str]:
    base = f"{CONTROL_SERVICE}.{namespace}"
    return [CONTROL_SERVICE, base, f"{base}.svc", f"{base}.svc.cluster.local", "localhost"]


@dataclass(slots=True)
class KubeControl:
    """Everything Kubernetes mode adds to the control plane; `stop()` undoes `start()`."""

    config: KubeConfig
    trust_domain: str = "cluster.local"
    registry: KubeRegistry = field(init=False)
    client: KubeClient = field(init=False)
    config_source: KubeConfigSource | None = None
    service_source: KubeServiceSource | None = None
    webhook: Any = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registry = KubeRegistry(self.trust_domain)
        self.client = KubeClient(self.config)

    @classmethod
    def from_flags(cls, kube_api: str | None, trust_domain: str) -> KubeControl:
        """`--kube-api http://...` (plaintext, tests and `kubectl proxy`) or in-cluster."""
        config = KubeConfig.plaintext(kube_api) if kube_api else KubeConfig.in_cluster()
        return cls(config, trust_domain)

    def authenticators(self) -> list[TokenReviewAuthenticator]:
        return [TokenReviewAuthenticator(self.config, self.trust_domain)]

    async def start(self, snapshot_source: Any, store: Any, timeout: float = 30.0) -> None:
        """Wire the sources to the snapshot source and the store; wait for the first lists."""
        cfg = self.config_source = KubeConfigSource(
            self.client, snapshot_source.update_resources, trust_domain=self.trust_domain)
        svc = self.service_source = KubeServiceSource(
            self.client, self.registry, cfg.set_services, self.trust_domain)
        cfg.set_extra(store.resources)
        store.subscribe(lambda state: cfg.set_extra(state.resources))
        self._tasks = await start_informers([*svc.informers, *cfg.informers], timeout)
        log.info("kubernetes: %d mesh services, %d resources from %s",
                 len(svc.services), len(cfg.current), self.config.base_url)

    def start_webhook(self, ca: Any, state_dir: Path, image: str, port: int,
                      host: str = "0.0.0.0") -> int:
        """Serve the injection webhook with a CA-issued certificate for the Service names."""
        from hyphal.identity.files import write_private
        from hyphal.identity.keys import generate_key, key_to_pem
        from hyphal.identity.spiffe import SpiffeId
        from hyphal.kube.webhook import WebhookServer

        key = generate_key()
        leaf = ca.issue(key.public_key(), SpiffeId(self.trust_domain, CONTROL_NAMESPACE,
                                                   CONTROL_SERVICE),
                        WEBHOOK_TTL, dns_names=webhook_dns_names(), ip_addresses=["127.0.0.1"])
        from cryptography.hazmat.primitives.serialization import Encoding

        cert_file = state_dir / "ca" / "webhook-cert.pem"
        key_file = state_dir / "ca" / "webhook-key.pem"
        write_private(key_file, key_to_pem(key), durable=False)
        write_private(cert_file, leaf.public_bytes(Encoding.PEM) + ca.root_cert_pem,
                      durable=False)
        inject = InjectConfig(image=image, trust_domain=self.trust_domain,
                              root_cert_pem=ca.trust_bundle_pem.decode())
        self.webhook = WebhookServer(inject, cert_file, key_file, host, port)
        self.webhook.start()
        return int(self.webhook.port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.webhook is not None:
            await self.webhook.stop()
            self.webhook = None
        await self.client.aclose()
