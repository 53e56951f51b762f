"""The control plane's gRPC server with credentials that follow the trust bundle at runtime.

grpc's `dynamic_ssl_server_credentials` asks a fetcher for the certificate configuration at
every new TLS handshake (from a gRPC core thread), so a new root in the bundle is trusted
for client certificates on the xDS mTLS port, and a re-issued serving certificate is
presented, from the next connection on. Connections already open keep the material they
were set up with. `build_rotating_server` is `hyphal.control.xds.serve.build_server_with`
(same ports, flags and errors) given these credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from hyphal.control.xds.serve import DEFAULT_OPTIONS, BuiltServer, build_server_with
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
    """`serve.build_server` with `creds` (following rotations) on the xDS and CA ports."""
    return build_server_with(
        ads,
        mtls=creds.mtls(),
        server_tls=creds.server_tls(),
        xds_port=xds_port,
        plaintext_port=plaintext_port,
        ca_port=ca_port,
        host=host,
        services=services,
        options=options,
    )
