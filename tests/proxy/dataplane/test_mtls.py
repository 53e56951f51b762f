"""Two data planes chained over real mTLS: identity, XFCC, refusal of strangers, RBAC, TCP."""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile

import httpx
import pytest

from hyphal.proxy.runtime.tables import (
    AnyRule,
    ListenerKind,
    ListenerSpec,
    MethodRule,
    OrRule,
    PathRule,
    PrincipalRule,
    RbacEngine,
    RbacPolicy,
    StringKind,
    StringMatch,
    UpstreamTls,
    VirtualHost,
    DownstreamTls,
)

from .mesh import (
    cluster,
    config,
    free_port,
    inbound_listener,
    outbound_listener,
    route_to,
    spiffe,
    table,
)

pytestmark = pytest.mark.e2e

PRODUCT = "outbound|8080||product.shop.svc.cluster.local"
FRONTEND_ID = spiffe("shop", "frontend")
PRODUCT_ID = spiffe("shop", "product")


def frontend_config(out_port: int, inbound_port: int, expected: str = PRODUCT_ID,
                    tcp_port: int | None = None, tcp_target: int | None = None):
    routes = table("outbound_http", VirtualHost(
        "product.shop.svc.cluster.local:8080", ("product", "product:8080"),
        (route_to("product", (PRODUCT, 1)),)))
    listeners = [outbound_listener(out_port)]
    clusters = [cluster(PRODUCT, ("127.0.0.1", inbound_port),
                        tls=UpstreamTls(sni=PRODUCT, expected_sans=frozenset({expected})),
                        service="product.shop.svc.cluster.local")]
    if tcp_port is not None and tcp_target is not None:
        listeners.append(ListenerSpec(name="outbound|5432||db.shop.svc.cluster.local",
                                      host="127.0.0.1", port=tcp_port,
                                      kind=ListenerKind.OUTBOUND_TCP, tcp_cluster="db"))
        clusters.append(cluster("db", ("127.0.0.1", tcp_target),
                                tls=UpstreamTls(sni="db", expected_sans=frozenset({PRODUCT_ID}))))
    return config("1", tuple(listeners), {"outbound_http": routes}, tuple(clusters),
                  identity=FRONTEND_ID, workload="frontend", namespace="shop")


def product_config(inbound_port: int, app_port: int, rbac: RbacEngine | None = None,
                   tcp_port: int | None = None):
    listeners = [inbound_listener(inbound_port, "inbound|8080||", rbac=rbac)]
    if tcp_port is not None:
        listeners.append(ListenerSpec(name=f"inbound|{tcp_port}", host="127.0.0.1", port=tcp_port,
                                      kind=ListenerKind.INBOUND_TCP, tls=DownstreamTls(),
                                      tcp_cluster="inbound|5432||", rbac=rbac))
    return config("1", tuple(listeners), {},
                  (cluster("inbound|8080||", ("127.0.0.1", app_port)),
                   cluster("inbound|5432||", ("127.0.0.1", app_port))),
                  identity=PRODUCT_ID, workload="product", namespace="shop")


async def chain(pki, echo, dataplane, rbac=None, expected=PRODUCT_ID):
    app = echo("product-app")
    out_port, in_port = free_port(), free_port()
    product = await dataplane(product_config(in_port, app.port, rbac),
                              tls=pki.material("shop", "product"))
    frontend = await dataplane(frontend_config(out_port, in_port, expected),
                               tls=pki.material("shop", "frontend"))
    return out_port, in_port, frontend, product


async def test_app_sees_xfcc_through_two_sidecars(pki, echo, dataplane):
    out_port, _, frontend, product = await chain(pki, echo, dataplane)
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{out_port}") as client:
        response = await client.get("http://product:8080/hello",
                                    headers={"x-forwarded-client-cert": "By=forged;URI=forged"})
    assert response.status_code == 200, response.text
    headers = response.json()["headers"]
    assert headers["x-forwarded-client-cert"] == f"By={PRODUCT_ID};URI={FRONTEND_ID}"
    assert headers["x-forwarded-proto"] == "https"
    assert frontend.stats.requests_total(200, "source") == 1
    assert product.stats.requests_total(200, "destination") == 1
    text = product.stats.render()
    assert f'source_principal="{FRONTEND_ID}"' in text
    assert 'connection_security_policy="mutual_tls"' in text


async def test_wrong_upstream_identity_is_refused(pki, echo, dataplane):
    out_port, *_ = await chain(pki, echo, dataplane, expected=spiffe("shop", "payments"))
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{out_port}") as client:
        response = await client.get("http://product:8080/")
    assert response.status_code == 503
    assert response.headers["x-hyphal-reason"] == "upstream_identity_mismatch"


def _client_ctx(pki, chain_key: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=pki.ca.pem.decode())
    if chain_key is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
            open(cert, "wb").write(chain_key[0])
            open(key, "wb").write(chain_key[1])
            ctx.load_cert_chain(cert, key)
    return ctx


async def _try(port: int, ctx: ssl.SSLContext | None) -> bytes:
    """Send one request; returns the bytes answered (b"" when refused)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx), 3)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(65536), 3)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


async def test_inbound_refuses_plaintext_and_strangers(pki, echo, dataplane):
    _, in_port, *_ = await chain(pki, echo, dataplane)
    # the mesh's own identity gets through (control)
    ok = await _try(in_port, _client_ctx(pki, pki.ca.leaf(FRONTEND_ID)))
    assert ok.startswith(b"HTTP/1.1 200")
    assert await _try(in_port, None) == b""  # plaintext
    assert await _try(in_port, _client_ctx(pki, None)) == b""  # TLS without a client cert
    assert await _try(in_port, _client_ctx(pki, pki.other_ca.leaf(FRONTEND_ID))) == b""  # other CA


async def test_rbac_denies_with_403(pki, echo, dataplane):
    rbac = RbacEngine(allow=(RbacPolicy(
        "frontend-reads",
        permissions=OrRule((MethodRule(frozenset({"GET"})),)),
        principals=OrRule((PrincipalRule(StringMatch(StringKind.EXACT, FRONTEND_ID)),))),),
        deny=(RbacPolicy("no-admin", permissions=PathRule(StringMatch(StringKind.PREFIX, "/admin")),
                         principals=AnyRule()),))
    out_port, *_ = await chain(pki, echo, dataplane, rbac=rbac)
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{out_port}") as client:
        assert (await client.get("http://product:8080/items")).status_code == 200
        denied = await client.post("http://product:8080/items", content=b"x")
        assert (denied.status_code, denied.headers["x-hyphal-reason"]) == (403, "rbac_denied")
        denied = await client.get("http://product:8080/admin/x")
        assert (denied.status_code, denied.headers["x-hyphal-reason"]) == (403, "rbac_denied")


async def test_tcp_over_mtls(pki, echo, dataplane):
    app = echo("db-app")
    tcp_out, tcp_in, in_port, out_port = free_port(), free_port(), free_port(), free_port()
    await dataplane(product_config(in_port, app.port, tcp_port=tcp_in),
                    tls=pki.material("shop", "product"))
    await dataplane(frontend_config(out_port, in_port, tcp_port=tcp_out, tcp_target=tcp_in),
                    tls=pki.material("shop", "frontend"))
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_out)
    writer.write(b"GET /tcp HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200") and b'"path": "/tcp"' in data
    # a plaintext client cannot use the inbound TCP listener
    assert await _try(tcp_in, None) == b""


async def test_tcp_rbac_denies(pki, echo, dataplane):
    app = echo("db-app")
    tcp_out, tcp_in, in_port, out_port = free_port(), free_port(), free_port(), free_port()
    rbac = RbacEngine(allow=(RbacPolicy("only-payments", permissions=AnyRule(),
                                        principals=PrincipalRule(StringMatch(
                                            StringKind.EXACT, spiffe("shop", "payments")))),))
    await dataplane(product_config(in_port, app.port, rbac=rbac, tcp_port=tcp_in),
                    tls=pki.material("shop", "product"))
    await dataplane(frontend_config(out_port, in_port, tcp_port=tcp_out, tcp_target=tcp_in),
                    tls=pki.material("shop", "frontend"))
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_out)
    writer.write(b"GET /tcp HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data == b""
