"""Test kit for the data plane: a tiny PKI, a threaded echo upstream, config builders, raw I/O."""

from __future__ import annotations

import asyncio
import datetime
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hyphal.local.ports import PortAllocator
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    DownstreamTls,
    EndpointSpec,
    ListenerKind,
    ListenerSpec,
    ProxyConfig,
    Route,
    RouteMatch,
    RouteTable,
    UpstreamTls,
    VirtualHost,
    WeightedCluster,
)

_PORTS = PortAllocator()  # one per test process: never the same port twice

TD = "spiffe://cluster.local"


# ---------------------------------------------------------------- PKI

@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def make(cls, name: str = "hyphal test root") -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                             False, False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def leaf(self, spiffe: str) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) for a workload with URI SAN `spiffe`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(spiffe)]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        chain = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return chain, key_pem


def spiffe(ns: str, sa: str) -> str:
    return f"{TD}/ns/{ns}/sa/{sa}"


# ---------------------------------------------------------------- upstream app

ECHO_APP = Path(__file__).with_name("echo_app.py")


@dataclass
class EchoServer:
    """A plain HTTP/1.1 app in its own process (stdlib http.server: an independent
    implementation; a process of its own so it does not share our GIL)."""

    name: str
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EchoServer:
        self._proc = subprocess.Popen([sys.executable, str(ECHO_APP), self.name],
                                      stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"echo app {self.name} did not start")
        self.port = int(line)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None


def free_port() -> int:
    """Below the kernel's ephemeral range (hyphal.local.ports): a port taken from it can be
    grabbed by any outbound connection before the test binds it ("address already in use")."""
    return _PORTS.allocate()


# ---------------------------------------------------------------- config builders

def cluster(name: str, *servers: tuple[str, int], tls: UpstreamTls | None = None,
            **kw: Any) -> ClusterSpec:
    return ClusterSpec(name=name, endpoints=tuple(EndpointSpec(h, p) for h, p in servers),
                       tls=tls, **kw)


def route_to(name: str, *weighted: tuple[str, int], match: RouteMatch | None = None,
             **kw: Any) -> Route:
    return Route(name=name, match=match or RouteMatch(),
                 action=ClusterAction(tuple(WeightedCluster(c, w) for c, w in weighted)), **kw)


def table(name: str, *vhosts: VirtualHost) -> RouteTable:
    return RouteTable.build(name, vhosts)


def outbound_listener(port: int, routes: str = "outbound_http") -> ListenerSpec:
    return ListenerSpec(name="outbound_http", host="127.0.0.1", port=port,
                        kind=ListenerKind.OUTBOUND_HTTP, route_config=routes)


def inbound_listener(port: int, app_cluster: str, tls: bool = True, **kw: Any) -> ListenerSpec:
    routes = table("inbound", VirtualHost("inbound", ("*",), (route_to("default", (app_cluster, 1)),)))
    return ListenerSpec(name=f"inbound|{port}", host="127.0.0.1", port=port,
                        kind=ListenerKind.INBOUND_HTTP,
                        tls=DownstreamTls() if tls else None, inline_routes=routes, **kw)


def config(version: str, listeners: tuple[ListenerSpec, ...], routes: dict[str, RouteTable],
           clusters: tuple[ClusterSpec, ...], **kw: Any) -> ProxyConfig:
    return ProxyConfig(version=version, listeners=listeners, routes=routes,
                       clusters={c.name: c for c in clusters}, **kw)


# ---------------------------------------------------------------- raw client

async def raw_exchange(port: int, data: bytes | list[bytes], *, wait: float = 2.0,
                       pause: float = 0.0) -> bytes:
    """Send bytes (a list = separate writes with `pause` between), read until close or
    `wait` seconds of silence; return everything read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in data if isinstance(data, list) else [data]:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        out = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        writer.close()


def statuses(raw: bytes) -> list[int]:
    """Every final status line in a raw response stream (skips 100 Continue). Status lines
    are found anywhere: a pipelined response starts right after the previous body."""
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw) if m != b"100"]


class KeepAliveClient:
    """A minimal keep-alive HTTP/1.1 client for load loops (httpx costs ~5 ms a request here).
    Only Content-Length responses (the echo app's) are understood."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, path: str = "/", host: str = "product",
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        parsed = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                parsed[k.strip().lower()] = v.strip()
        body = await self._reader.readexactly(int(parsed.get("content-length", "0")))
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return status, parsed, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
