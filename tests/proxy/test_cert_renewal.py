"""A sidecar keeps renewing its certificate after its bootstrap token has expired.

Tokens are minted for a day; meshes run longer. Renewal then proves the identity with the
current certificate, which only a port that requires and verifies client certificates can
check: the control plane's mTLS xDS port (the CA service is served there too)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from hyphal.control.ca.tokens import TokenIssuer
from hyphal.control.server import ControlOptions, ControlPlane
from hyphal.proxy.bootstrap import parse_bootstrap
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
        token_file.write_text(issuer.mint("demo", "api", dt.timedelta(seconds=1)))
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
        await asyncio.sleep(1.5)  # the bootstrap token is now expired
        renewed = await certs._renew(first)
        assert renewed.spiffe_id == first.spiffe_id
        assert renewed.chain_pem != first.chain_pem
    finally:
        await plane.stop()
