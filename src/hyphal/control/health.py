"""Readiness of the control plane's parts, and the `/api/v1/status` report built from them."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from cryptography import x509

from hyphal.control.registry.model import RegistryView
from hyphal.control.store import Store
from hyphal.control.xds.server import ConnectionInfo

COMPONENTS = ("store", "ca", "xds")


class Readiness:
    """Which parts are ready; the control plane is ready when none is missing."""

    def __init__(self, components: Iterable[str] = COMPONENTS) -> None:
        self._lock = threading.Lock()
        self._waiting = dict.fromkeys(components, True)

    def mark_ready(self, component: str) -> None:
        with self._lock:
            self._waiting[component] = False

    def mark_not_ready(self, component: str) -> None:
        with self._lock:
            self._waiting[component] = True

    def waiting(self) -> list[str]:
        with self._lock:
            return [name for name, waiting in self._waiting.items() if waiting]


class _HasConnections(Protocol):
    def connections(self) -> list[ConnectionInfo]: ...


def _iso(ts: float | dt.datetime) -> str:
    if isinstance(ts, dt.datetime):
        return ts.astimezone(dt.UTC).isoformat(timespec="seconds")
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def connection_status(conn: ConnectionInfo) -> dict[str, Any]:
    node = conn.node
    return {
        "node_id": node.id,
        "cluster": node.cluster,
        "namespace": node.namespace,
        "service_account": node.service_account,
        "proxy_mode": node.proxy_mode,
        "identity": conn.peer_identity,
        "peer": conn.peer,
        "connected_since": _iso(conn.connected_since),
        "types": [
            {
                "type": t.short,
                "subscribed": None if t.subscribed is None else list(t.subscribed),
                "sent_version": t.sent_version,
                "acked_version": t.acked_version,
                "last_nack": t.last_nack,
            }
            for t in conn.types
        ],
    }


def registry_status(view: RegistryView) -> dict[str, Any]:
    services = []
    for (host, port), endpoints in sorted(view.endpoints.items()):
        services.append({
            "service": f"{host}:{port}",
            "endpoints": [
                {
                    "address": f"{e.address}:{e.port}",
                    "labels": dict(e.labels),
                    "identity": e.identity,
                    "health": e.health.name,
                    "tls": e.tls,
                    "source": e.source,
                }
                for e in endpoints
            ],
        })
    return {"version": view.version, "nodes": sorted(view.nodes), "services": services}


def ca_status(trust_domain: str, roots: Sequence[x509.Certificate]) -> dict[str, Any]:
    info = [
        {
            "subject": r.subject.rfc4514_string(),
            "not_after": _iso(r.not_valid_after_utc),
            "serial": f"{r.serial_number:x}",
        }
        for r in roots
    ]
    soonest = min((r.not_valid_after_utc for r in roots), default=None)
    return {
        "trust_domain": trust_domain,
        "roots": info,
        "root_expires": _iso(soonest) if soonest else None,
    }


def build_status(
    store: Store,
    ads: _HasConnections | None,
    registry: RegistryView | None,
    ca: Mapping[str, Any] | None,
    ports: Mapping[str, int | None],
    readiness: Readiness,
) -> dict[str, Any]:
    """Everything `/api/v1/status` reports, as plain JSON values."""
    conns = ads.connections() if ads is not None else []
    return {
        "ready": not readiness.waiting(),
        "waiting_for": readiness.waiting(),
        "ports": dict(ports),
        "store": {
            "generation": store.generation,
            "resources": len(store.resources),
            "config_dir": str(store.config_dir) if store.config_dir else None,
            "config_dir_errors": list(store.dir_errors),
        },
        "xds": {"connections": [connection_status(c) for c in conns]},
        "registry": registry_status(registry) if registry is not None else None,
        "ca": dict(ca) if ca is not None else None,
    }
