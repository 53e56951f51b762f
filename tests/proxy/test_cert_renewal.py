"""A sidecar keeps renewing its certificate after its bootstrap token has expired.

Tokens are minted for a day; meshes run longer. Renewal then proves the identity with the
current certificate, which only a port that requires and verifies client certificates can
check: the control plane's mTLS xDS port (the CA service is served there too)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from hyphal.control.ca.tokens import TokenIssuer
from hyphal.control.server import ControlOptions, ControlPlane
from hyphal.identity.client import CertificateRequestError
from hyphal.proxy.bootstrap import Bootstrap, parse_bootstrap
from hyphal.proxy.certs import CertManager


async def test_renewal_after_the_token_expired_uses_the_current_certificate(
    tmp_path: Path,
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    state = tmp_path / "state"
    plane = ControlPlane(ControlOptions(
        config_dir=config_dir, state_dir=state, xds_port=0, xds_plaintext_port=None,
        ca_port=0, api_port=0))
    try:
        ports = await plane.start()
        token_file = tmp_path / "token"
        issuer = TokenIssuer.load_or_create(state, "cluster.local")
        # Long enough for the first issuance, which runs in a child process
        # (hyphal.proxy.cert_worker: ~0.3 s CPU, more on a loaded machine).
        lifetime = 3.0
        expiry = asyncio.get_running_loop().time() + lifetime
        token_file.write_text(issuer.mint("demo", "api", dt.timedelta(seconds=lifetime)))
        boot = parse_bootstrap({
            "node": {"id": "api-0.demo", "cluster": "api", "metadata": {
                "NAMESPACE": "demo", "SERVICE_ACCOUNT": "api", "WORKLOAD_NAME": "api",
                "LABELS": {"app": "api"}, "INSTANCE_IP": "127.0.0.1", "PROXY_MODE": "sidecar",
                "OUTBOUND_HTTP_PORT": 20001, "PORTS": []}},
            "xds_address": f"127.0.0.1:{ports['xds']}",
            "ca_address": f"127.0.0.1:{ports['ca']}",
            "root_cert_file": str(state / "ca" / "root-cert.pem"),
            "token_file": str(token_file), "trust_domain": "cluster.local",
            "admin_port": 20002, "cert_ttl_seconds": 3600,
        }, source="test-bootstrap", base_dir=tmp_path)
        certs = CertManager(boot)
        first = await certs.issue()
        # Then the bootstrap token expires.
        await asyncio.sleep(expiry - asyncio.get_running_loop().time() + 0.5)
        renewed = await certs._renew(first)
        assert renewed.spiffe_id == first.spiffe_id
        assert renewed.chain_pem != first.chain_pem
    finally:
        await plane.stop()


@contextlib.asynccontextmanager
async def _control_plane(tmp_path: Path, token: str | None) -> AsyncIterator[Bootstrap]:
    """A control plane (CA on its ports) and a sidecar bootstrap for demo/api; `token` is
    written as the bootstrap token (None: a valid one for an hour)."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    state = tmp_path / "state"
    plane = ControlPlane(ControlOptions(
        config_dir=config_dir, state_dir=state, xds_port=0, xds_plaintext_port=None,
        ca_port=0, api_port=0))
    try:
        ports = await plane.start()
        if token is None:
            issuer = TokenIssuer.load_or_create(state, "cluster.local")
            token = issuer.mint("demo", "api", dt.timedelta(hours=1))
        token_file = tmp_path / "token"
        token_file.write_text(token)
        yield parse_bootstrap({
            "node": {"id": "api-0.demo", "cluster": "api", "metadata": {
                "NAMESPACE": "demo", "SERVICE_ACCOUNT": "api", "WORKLOAD_NAME": "api",
                "LABELS": {"app": "api"}, "INSTANCE_IP": "127.0.0.1", "PROXY_MODE": "sidecar",
                "OUTBOUND_HTTP_PORT": 20001, "PORTS": []}},
            "xds_address": f"127.0.0.1:{ports['xds']}",
            "ca_address": f"127.0.0.1:{ports['ca']}",
            "root_cert_file": str(state / "ca" / "root-cert.pem"),
            "token_file": str(token_file), "trust_domain": "cluster.local",
            "admin_port": 20002, "cert_ttl_seconds": 3600,
        }, source="test-bootstrap", base_dir=tmp_path)
    finally:
        await plane.stop()


async def test_a_refused_request_is_reported_with_the_cas_status(tmp_path: Path) -> None:
    """The request runs in hyphal.proxy.cert_worker's child: the CA's refusal comes back as a
    CertificateRequestError with its gRPC status, and nothing is issued."""
    async with _control_plane(tmp_path, "not.a.token") as boot:
        certs = CertManager(boot)
        with pytest.raises(CertificateRequestError, match="refused") as refused:
            await certs.issue()
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert not certs.ready and certs.info() is None


async def test_without_a_worker_process_the_certificate_is_requested_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no process can be started (a sandbox), the sidecar still gets its certificate,
    and reports the same facts about it."""
    from hyphal.proxy import cert_worker

    def no_processes(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cert_worker.subprocess, "Popen", no_processes)
    async with _control_plane(tmp_path, None) as boot:
        certs = CertManager(boot)
        bundle = await certs.issue()
        info = certs.info()
        assert bundle.spiffe_id.uri == boot.spiffe_id and info is not None
        assert info.spiffe_id == boot.spiffe_id and info.root_fingerprint
        assert info.root_fingerprint == certs.root_fingerprint
