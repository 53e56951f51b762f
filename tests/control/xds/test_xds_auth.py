"""ADS stream authentication over the ports `build_server` binds (mTLS, server TLS, plaintext)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from envoy.service.discovery.v3 import discovery_pb2
from xds_helpers import ADS_METHOD, AdsClient, cluster, names_of, request, snap

from hyphal.control.xds.auth import StreamRefused, check_claim, peer_of
from hyphal.control.xds.serve import BuiltServer, build_server
from hyphal.control.xds.server import AdsServer
from hyphal.control.xds.snapshot import CLUSTER, StaticSource

pytestmark = pytest.mark.timeout(30)

TD = "cluster.local"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


class ThrowawayCa:
    """A test-only root CA issuing leaf certificates with given SANs."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = _pem(self.cert)

    def issue(self, sans: list[x509.GeneralName], server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        eku = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(minutes=10))
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(_pem(cert), _key_pem(key))

    def workload(self, ns: str, sa: str) -> Issued:
        return self.issue([x509.UniformResourceIdentifier(f"spiffe://{TD}/ns/{ns}/sa/{sa}")])


@dataclass
class TlsEnv:
    ca: ThrowawayCa
    ads: AdsServer
    built: BuiltServer
    channels: list[grpc.aio.Channel]

    def open(self, port: int, creds: grpc.ChannelCredentials | None) -> AdsClient:
        target = f"127.0.0.1:{port}"
        if creds is None:
            ch = grpc.aio.insecure_channel(target)
        else:
            # The server certificate is for "localhost"; we dial the IP, so pin the name.
            ch = grpc.aio.secure_channel(
                target, creds, options=[("grpc.ssl_target_name_override", "localhost")]
            )
        self.channels.append(ch)
        call = ch.stream_stream(
            ADS_METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )()
        client = AdsClient(call)
        client.start()
        return client

    def mtls(self, issued: Issued) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca.pem, issued.key_pem, issued.cert_pem)


@pytest.fixture
async def tls_env() -> AsyncIterator[TlsEnv]:
    ca = ThrowawayCa()
    server_cert = ca.issue(
        [
            x509.UniformResourceIdentifier(f"spiffe://{TD}/ns/hyphal-system/sa/hyphal-control"),
            x509.DNSName("localhost"),
        ],
        server=True,
    )
    ads = AdsServer(StaticSource(snap(cluster("c1"))), trust_domain=TD, debounce=0.02)
    built = build_server(
        ads,
        cert_pem=server_cert.cert_pem,
        key_pem=server_cert.key_pem,
        trust_bundle_pem=ca.pem,
        xds_port=0,
        plaintext_port=0,
        ca_port=0,
    )
    await built.start()
    env = TlsEnv(ca, ads, built, [])
    try:
        yield env
    finally:
        for ch in env.channels:
            await ch.close()
        await built.stop(None)
        await ads.stop()


SIDECAR = {"NAMESPACE": "shop", "SERVICE_ACCOUNT": "product", "PROXY_MODE": "sidecar"}


async def test_mtls_stream_with_matching_identity_is_served(tls_env: TlsEnv) -> None:
    c = tls_env.open(tls_env.built.xds_port, tls_env.mtls(tls_env.ca.workload("shop", "product")))
    await c.send(request(CLUSTER, node_id="product-v1-0.shop", **SIDECAR))
    assert names_of(await c.recv()) == ["c1"]
    [conn] = tls_env.ads.connections()
    assert conn.peer_identity == f"spiffe://{TD}/ns/shop/sa/product"
    assert conn.node.peer_identity == conn.peer_identity


async def test_mtls_stream_claiming_another_identity_is_denied(tls_env: TlsEnv) -> None:
    good = tls_env.open(
        tls_env.built.xds_port, tls_env.mtls(tls_env.ca.workload("shop", "product"))
    )
    await good.send(request(CLUSTER, node_id="product-v1-0.shop", **SIDECAR))
    await good.recv()
    thief = tls_env.open(tls_env.built.xds_port, tls_env.mtls(tls_env.ca.workload("web", "front")))
    await thief.send(request(CLUSTER, node_id="product-v1-0.shop", **SIDECAR))
    code, details = await thief.status()
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"spiffe://{TD}/ns/shop/sa/product" in details  # what it claimed
    assert f"spiffe://{TD}/ns/web/sa/front" in details  # what its certificate says
    assert [c.node_id for c in tls_env.ads.connections()] == ["product-v1-0.shop"]
    # The refused stream did not disturb the good one.
    tls_env.ads.push_all()
    await good.expect_nothing(0.1)


async def test_tls_without_client_certificate_is_denied(tls_env: TlsEnv) -> None:
    assert tls_env.built.ca_port is not None
    c = tls_env.open(tls_env.built.ca_port, grpc.ssl_channel_credentials(tls_env.ca.pem))
    await c.send(request(CLUSTER, node_id="anon", **SIDECAR))
    code, details = await c.status()
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "ADS requires a workload certificate" in details
    assert tls_env.ads.connections() == []


async def test_mtls_port_refuses_a_client_without_certificate(tls_env: TlsEnv) -> None:
    c = tls_env.open(tls_env.built.xds_port, grpc.ssl_channel_credentials(tls_env.ca.pem))
    with contextlib.suppress(grpc.aio.AioRpcError):
        await c.send(request(CLUSTER, node_id="anon"))
    code, _ = await c.status(5)
    assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake itself fails


async def test_plaintext_port_trusts_the_node_as_claimed(tls_env: TlsEnv) -> None:
    port = tls_env.built.plaintext_port
    assert port is not None
    c = tls_env.open(port, None)
    await c.send(request(CLUSTER, node_id="greeter-client"))
    assert names_of(await c.recv()) == ["c1"]
    [conn] = tls_env.ads.connections()
    assert conn.peer_identity is None and conn.node.proxy_mode == "grpc"


def test_check_claim_and_peer_of_units() -> None:
    ca = ThrowawayCa()
    pem = ca.workload("shop", "product").cert_pem
    peer = peer_of({"transport_security_type": [b"ssl"], "x509_pem_cert": [pem]})
    assert peer.tls and peer.identity is not None and peer.identity.namespace == "shop"
    check_claim(peer, "n", "shop", "product", TD)
    with pytest.raises(StreamRefused, match=r"other\.domain"):
        check_claim(peer, "n", "shop", "product", "other.domain")
    with pytest.raises(StreamRefused, match="missing SERVICE_ACCOUNT"):
        check_claim(peer, "n", "shop", "", TD)
    plain = peer_of({"transport_security_type": [b"insecure"]})
    assert not plain.tls and plain.identity is None
    check_claim(plain, "n", "", "")  # plaintext: trusted as claimed
    no_spiffe = ca.issue([x509.DNSName("example.com")]).cert_pem
    with pytest.raises(StreamRefused, match="no usable SPIFFE id"):
        peer_of({"transport_security_type": [b"ssl"], "x509_pem_cert": [no_spiffe]})


def test_build_server_reports_a_taken_port() -> None:
    async def go() -> None:
        ca = ThrowawayCa()
        leaf = ca.issue([x509.DNSName("localhost")], server=True)
        ads = AdsServer(StaticSource())
        first = build_server(
            ads,
            cert_pem=leaf.cert_pem,
            key_pem=leaf.key_pem,
            trust_bundle_pem=ca.pem,
            xds_port=0,
            plaintext_port=None,
        )
        await first.start()
        try:
            with pytest.raises(OSError, match="--xds-port"):
                build_server(
                    AdsServer(StaticSource()),
                    cert_pem=leaf.cert_pem,
                    key_pem=leaf.key_pem,
                    trust_bundle_pem=ca.pem,
                    xds_port=first.xds_port,
                    plaintext_port=None,
                )
        finally:
            await first.stop(None)

    asyncio.run(go())
