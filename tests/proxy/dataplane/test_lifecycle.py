"""Listener lifecycle across applies, certificate rotation, drain and close."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest
from cryptography import x509

from hyphal.proxy.runtime.tables import VirtualHost

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
from .test_mtls import _client_ctx

pytestmark = pytest.mark.e2e


def _routes(name: str):
    return {"outbound_http": table("outbound_http", VirtualHost(
        "product", ("product",), (route_to("r", (name, 1)),)))}


async def _serial(port: int, ctx: ssl.SSLContext) -> int:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_apply_adds_keeps_and_removes_listeners(echo, dataplane):
    app = echo("app")
    first, second = free_port(), free_port()
    c = cluster("app", ("127.0.0.1", app.port))
    plane = await dataplane(config("1", (outbound_listener(first),), _routes("app"), (c,)))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first}") as client:
        assert (await client.get("/", headers={"host": "product"})).status_code == 200
        extra = outbound_listener(second)
        extra = type(extra)(name="outbound|9090||other", host="127.0.0.1", port=second,
                            kind=extra.kind, route_config="outbound_http")
        await plane.apply(config("2", (outbound_listener(first), extra), _routes("app"), (c,)))
        # the kept listener's keep-alive connection still works; the new one answers too
        assert (await client.get("/", headers={"host": "product"})).status_code == 200
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{second}") as client:
        assert (await client.get("/", headers={"host": "product"})).status_code == 200
    await plane.apply(config("3", (extra,), _routes("app"), (c,)))
    assert plane.listener_names == ("outbound|9090||other",)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first}") as client:
            await client.get("/", headers={"host": "product"})


async def test_bind_failure_changes_nothing(echo, dataplane):
    app = echo("app")
    port = free_port()
    c = cluster("app", ("127.0.0.1", app.port))
    plane = await dataplane(config("1", (outbound_listener(port),), _routes("app"), (c,)))
    from hyphal.proxy.dataplane import ListenerBindError

    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    taken = blocker.sockets[0].getsockname()[1]
    busy = type(outbound_listener(0))(name="busy", host="127.0.0.1", port=taken,
                                      kind=outbound_listener(0).kind, route_config="outbound_http")
    with pytest.raises(ListenerBindError, match="busy"):
        await plane.apply(config("2", (outbound_listener(port), busy), _routes("app"), (c,)))
    blocker.close()
    assert plane.holder.current.version == "1"


async def test_certificate_rotation_reaches_bound_listeners(pki, echo, dataplane):
    app = echo("app")
    port = free_port()
    material = pki.material("shop", "product")
    await dataplane(config("1", (inbound_listener(port, "inbound|8080||"),), {},
                           (cluster("inbound|8080||", ("127.0.0.1", app.port)),),
                           identity=spiffe("shop", "product")), tls=material)
    ctx = _client_ctx(pki, pki.ca.leaf(spiffe("shop", "frontend")))
    before = await _serial(port, ctx)
    chain, key = pki.ca.leaf(spiffe("shop", "product"))
    material.update(chain, key, pki.ca.pem)
    after = await _serial(port, ctx)
    assert before != after
    assert after == x509.load_pem_x509_certificate(chain).serial_number


async def test_drain_lets_in_flight_requests_finish(echo, dataplane):
    app = echo("app")
    port = free_port()
    plane = await dataplane(config("1", (outbound_listener(port),), _routes("app"),
                                   (cluster("app", ("127.0.0.1", app.port)),)))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        slow = asyncio.ensure_future(client.get("/sleep/300", headers={"host": "product"}))
        await asyncio.sleep(0.1)
        await plane.drain(2.0)
        response = await slow
    assert response.status_code == 200 and response.headers["connection"] == "close"


async def test_idle_keep_alive_connection_is_closed(echo, dataplane):
    from hyphal.proxy.http.context import Timeouts

    app = echo("app")
    port = free_port()
    await dataplane(config("1", (outbound_listener(port),), _routes("app"),
                           (cluster("app", ("127.0.0.1", app.port)),)),
                    timeouts=Timeouts(header_s=5.0, idle_s=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: product\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 200")
    started = asyncio.get_running_loop().time()
    rest = await asyncio.wait_for(reader.read(), 3)  # the body, then EOF when idle expires
    assert b'"server": "app"' in rest
    assert 0.2 <= asyncio.get_running_loop().time() - started < 2.0
    writer.close()


def test_tls_material_rejects_bad_input_and_keeps_serving(pki):
    from hyphal.proxy.transport.tls import TlsConfigError, TlsMaterial

    chain, key = pki.ca.leaf(spiffe("shop", "product"))
    material = TlsMaterial(chain, key, pki.ca.pem)
    assert material.identity == spiffe("shop", "product")
    before = material.client_context
    other_chain, _ = pki.ca.leaf(spiffe("shop", "other"))
    with pytest.raises(TlsConfigError, match="key matches"):
        material.update(other_chain, key, pki.ca.pem)
    with pytest.raises(TlsConfigError, match="trust bundle"):
        material.update(chain, key, b"not a pem")
    assert material.client_context is before and material.identity == spiffe("shop", "product")
