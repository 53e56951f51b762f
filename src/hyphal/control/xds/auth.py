"""Who is at the other end of an ADS stream: the transport's proof checked against the node's claim.

- TLS with a verified client certificate (the mTLS port, client auth required, mesh roots):
  the certificate's SPIFFE id must equal the node's `NAMESPACE`/`SERVICE_ACCOUNT` metadata
  (and the trust domain, when the server is given one).
- TLS without a client certificate (e.g. the CA's server-TLS port, which serves the same
  gRPC services): refused; ADS needs a workload certificate.
- Plaintext: only the loopback-only port for proxyless gRPC clients is plaintext, so anything
  that can reach it already runs on this host; the node is trusted as it claims itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from cryptography import x509

from hyphal.identity.certs import CertificateError, spiffe_id_of
from hyphal.identity.spiffe import SpiffeId, spiffe_uri


class StreamRefused(Exception):
    """A stream that must be refused; `code` is the gRPC status to abort with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Peer:
    """What the transport proves about the client: TLS or not, and its SPIFFE id if any."""

    tls: bool
    identity: SpiffeId | None


def _first(auth: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    for value in auth.get(key, ()):
        return value
    return None


def peer_of(auth_context: Mapping[str, Iterable[bytes]]) -> Peer:
    """Read the transport's proof from a gRPC auth context; StreamRefused if TLS has no cert."""
    security = _first(auth_context, "transport_security_type")
    if security != b"ssl":
        return Peer(tls=False, identity=None)
    pem = _first(auth_context, "x509_pem_cert")
    if not pem:
        raise StreamRefused(
            grpc.StatusCode.PERMISSION_DENIED,
            "ADS requires a workload certificate: connect to the mTLS xDS port with the "
            "sidecar's certificate, or use the loopback plaintext port for proxyless gRPC",
        )
    try:
        cert = x509.load_pem_x509_certificate(pem)
        identity = spiffe_id_of(cert)
    except (ValueError, CertificateError) as exc:
        raise StreamRefused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"ADS client certificate carries no usable SPIFFE id: {exc}",
        ) from None
    return Peer(tls=True, identity=identity)


def check_claim(
    peer: Peer,
    node_id: str,
    namespace: str,
    service_account: str,
    trust_domain: str | None = None,
) -> None:
    """Raise StreamRefused (PERMISSION_DENIED) unless the node's claimed identity is proven."""
    if peer.identity is None:
        return
    proven = peer.identity
    claimed_ns = namespace or "<missing NAMESPACE>"
    claimed_sa = service_account or "<missing SERVICE_ACCOUNT>"
    td_ok = trust_domain is None or proven.trust_domain == trust_domain
    if td_ok and proven.namespace == namespace and proven.service_account == service_account:
        return
    td = trust_domain or proven.trust_domain
    raise StreamRefused(
        grpc.StatusCode.PERMISSION_DENIED,
        f"node {node_id!r} claims {spiffe_uri(td, claimed_ns, claimed_sa)} "
        f"(metadata NAMESPACE/SERVICE_ACCOUNT) but its client certificate is {proven.uri}; "
        "fix the node metadata or present this workload's own certificate",
    )
