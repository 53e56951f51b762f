"""Upstream keep-alive over mTLS: sequential requests through two sidecars share one
connection (one TLS handshake), and the fast path serves them."""

from __future__ import annotations

import httpx
import pytest

from .test_mtls import chain

pytestmark = pytest.mark.e2e

PRODUCT = "outbound|8080||product.shop.svc.cluster.local"


async def test_sequential_requests_reuse_one_mtls_connection(pki, echo, dataplane):
    out_port, in_port, frontend, product = await chain(pki, echo, dataplane)
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{out_port}") as client:
        for i in range(20):
            response = await client.get(f"http://product:8080/r/{i}")
            assert response.status_code == 200, response.text
    # One upstream connection from the frontend sidecar, so one handshake at the product
    # sidecar's inbound listener; and one plaintext connection from there to the app.
    assert frontend.stats.counter("hyphal_upstream_cx_total", PRODUCT) == 1
    assert product.stats.counter("hyphal_downstream_cx_total", f"inbound|{in_port}") == 1
    assert product.stats.counter("hyphal_upstream_cx_total", "inbound|8080||") == 1
    assert frontend.stats.requests_total(200, "source") == 20
    assert product.stats.requests_total(200, "destination") == 20
