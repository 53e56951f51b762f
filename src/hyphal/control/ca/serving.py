"""The control plane's gRPC server with credentials that follow the trust bundle at runtime.

grpc's `dynamic_ssl_server_credentials` asks a fetcher for the certificate configuration at
every new TLS handshake (from a gRPC core thread), so a new root in the bundle is trusted
for client certificates on the xDS mTLS port, and a re-issued serving certificate is
presented, from the next connection on. Connections already open keep the material they
were set up with. `build_rotating_server` mirrors `hyphal.control.xds.serve.build_server`
(same ports, flags and errors); only the credentials differ.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from hyphal.control.xds.serve import DEFAULT_OPTIONS, BuiltServer
from hyphal.control.xds.server import AdsServer

__all__ = ["RotatingCredentials", "build_rotating_server"]


@dataclass(frozen=True, slots=True)
class _Material:
    cert_pem: bytes
    key_pem: bytes
    trust_bundle_pem: bytes


class RotatingCredentials:
    """Serving certificate and client-trust roots that can change while the server runs."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, trust_bundle_pem: bytes) -> None:
        self._lock = threading.Lock()
        self._material = _Material(cert_pem, key_pem, trust_bundle_pem)
        self._mtls = self._config(self._material, client_auth=True)
        self._tls = self._config(self._material, client_auth=False)
        self.fetches = 0  # handshakes that asked for material (for tests)

    def __repr__(self) -> str:
        return "RotatingCredentials(...)"

    @staticmethod
    def _config(m: _Material, *, client_auth: bool) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(m.key_pem, m.cert_pem)], root_certificates=m.trust_bundle_pem if client_auth else None
        )

    def update(
        self,
        *,
        trust_bundle_pem: bytes | None = None,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
    ) -> None:
        """New roots and/or a new serving certificate, for handshakes from now on."""
        with self._lock:
            m = self._material
            m = _Material(
                cert_pem if cert_pem is not None else m.cert_pem,
                key_pem if key_pem is not None else m.key_pem,
                trust_bundle_pem if trust_bundle_pem is not None else m.trust_bundle_pem,
            )
            self._material = m
            self._mtls = self._config(m, client_auth=True)
            self._tls = self._config(m, client_auth=False)

    @property
    def trust_bundle_pem(self) -> bytes:
        return self._material.trust_bundle_pem

    def _fetch_mtls(self) -> grpc.ServerCertificateConfiguration:
        self.fetches += 1
        return self._mtls

    def _fetch_tls(self) -> grpc.ServerCertificateConfiguration:
        self.fetches += 1
        return self._tls

    def mtls(self) -> grpc.ServerCredentials:
        """For the xDS port: client certificate required, verified against the bundle."""
        return grpc.dynamic_ssl_server_credentials(
            self._mtls, self._fetch_mtls, require_client_authentication=True
        )

    def server_tls(self) -> grpc.ServerCredentials:
        """For the CA port: server-side TLS only (CSRs carry a token)."""
        return grpc.dynamic_ssl_server_credentials(
            self._tls, self._fetch_tls, require_client_authentication=False
        )


def build_rotating_server(
    ads: AdsServer,
    creds: RotatingCredentials,
    *,
    xds_port: int = 15012,
    plaintext_port: int | None = 15010,
    ca_port: int | None = None,
    host: str = "127.0.0.1",
    services: Sequence[Callable[[grpc.aio.Server], None]] = (),
    options: Sequence[tuple[str, int]] = DEFAULT_OPTIONS,
) -> BuiltServer:
    """Like `serve.build_server`, with `creds` on the xDS and CA ports."""
    server = grpc.aio.server(options=list(options))
    ads.add_to_server(server)
    for add in services:
        add(server)
    bound_xds = _bind(server, host, xds_port, creds.mtls(), "--xds-port")
    bound_plain = None
    if plaintext_port is not None:
        bound_plain = _bind(server, "127.0.0.1", plaintext_port, None, "--xds-plaintext-port")
    bound_ca = None
    if ca_port is not None:
        bound_ca = _bind(server, host, ca_port, creds.server_tls(), "--ca-port")
    return BuiltServer(server, bound_xds, bound_plain, bound_ca)


def _bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    creds: grpc.ServerCredentials | None,
    flag: str,
) -> int:
    address = f"{host}:{port}"
    try:
        bound = (
            server.add_insecure_port(address)
            if creds is None
            else server.add_secure_port(address, creds)
        )
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(
            f"cannot listen on {address} ({flag}): the port is in use or not allowed; "
            f"stop what holds it or pick another {flag}"
        )
    return int(bound)
