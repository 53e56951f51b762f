"""Wiring only: one grpc.aio server with the control plane's ports (docs/xds-conventions.md).

- xDS port: mTLS, client certificate required and verified against the trust bundle;
- plaintext xDS port: bound to 127.0.0.1 only (proxyless gRPC on this host), optional;
- CA port: server-side TLS without client certificates (CSRs carry a token instead), optional.

gRPC serves every registered service on every port; the ADS server itself refuses streams
without a workload certificate, so ADS on the CA port is refused, not open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from hyphal.control.xds.server import AdsServer

# Keepalive and message limits fit for many long-lived ADS streams with large snapshots.
DEFAULT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 10_000),
    # Two control planes must not silently share a port (gRPC defaults to SO_REUSEPORT).
    ("grpc.so_reuseport", 0),
)


@dataclass(frozen=True, slots=True)
class BuiltServer:
    """A configured, not yet started server and the ports it actually bound."""

    server: grpc.aio.Server
    xds_port: int
    plaintext_port: int | None
    ca_port: int | None

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.server.stop(grace)


def build_server(
    ads: AdsServer,
    *,
    cert_pem: bytes,
    key_pem: bytes,
    trust_bundle_pem: bytes,
    xds_port: int = 15012,
    plaintext_port: int | None = 15010,
    ca_port: int | None = None,
    host: str = "127.0.0.1",
    services: Sequence[Callable[[grpc.aio.Server], None]] = (),
    options: Sequence[tuple[str, int]] = DEFAULT_OPTIONS,
) -> BuiltServer:
    """Build (not start) the server; call inside the event loop that will run it.

    Ports: a number binds it, 0 lets the kernel choose (see `BuiltServer` for the result),
    None leaves the port off. The CLI's `--xds-plaintext-port 0` means "off": pass None.
    `services` are `add_*_to_server`-style callbacks (e.g. the CA servicer).
    """
    mtls = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=trust_bundle_pem, require_client_auth=True
    )
    server_tls = grpc.ssl_server_credentials([(key_pem, cert_pem)])
    return build_server_with(
        ads,
        mtls=mtls,
        server_tls=server_tls,
        xds_port=xds_port,
        plaintext_port=plaintext_port,
        ca_port=ca_port,
        host=host,
        services=services,
        options=options,
    )


def build_server_with(
    ads: AdsServer,
    *,
    mtls: grpc.ServerCredentials,
    server_tls: grpc.ServerCredentials,
    xds_port: int = 15012,
    plaintext_port: int | None = 15010,
    ca_port: int | None = None,
    host: str = "127.0.0.1",
    services: Sequence[Callable[[grpc.aio.Server], None]] = (),
    options: Sequence[tuple[str, int]] = DEFAULT_OPTIONS,
) -> BuiltServer:
    """`build_server` with ready-made credentials: `mtls` (client certificate required) for
    the xDS port, `server_tls` for the CA port — e.g. dynamic ones that follow a rotation."""
    server = grpc.aio.server(options=list(options))
    ads.add_to_server(server)
    for add in services:
        add(server)
    bound_xds = _bind(server, host, xds_port, mtls, "--xds-port")
    bound_plain = None
    if plaintext_port is not None:
        bound_plain = _bind(server, "127.0.0.1", plaintext_port, None, "--xds-plaintext-port")
    bound_ca = None
    if ca_port is not None:
        bound_ca = _bind(server, host, ca_port, server_tls, "--ca-port")
    return BuiltServer(server, bound_xds, bound_plain, bound_ca)


def _bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    creds: grpc.ServerCredentials | None,
    flag: str,
) -> int:
    address = f"{host}:{port}"
    bound: int
    try:
        if creds is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, creds)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(
            f"cannot listen on {address} ({flag}): the port is in use or not allowed; "
            f"stop what holds it or pick another {flag}"
        )
    return bound
