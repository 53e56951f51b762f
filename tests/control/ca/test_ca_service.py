"""The CA's gRPC service on a real TLS server on 127.0.0.1, driven by real grpc clients."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from hyphal.control.ca.authority import CertificateAuthority
from hyphal.control.ca.proto import ca_pb2, ca_pb2_grpc
from hyphal.control.ca.service import add_ca_service
from hyphal.control.ca.tokens import TokenIssuer
from hyphal.identity.certs import load_chain, spiffe_id_of, verify_chain
from hyphal.identity.client import CertificateRequestError, request_certificate
from hyphal.identity.keys import generate_key, make_csr
from hyphal.identity.spiffe import SpiffeId

TD = "cluster.local"
SHOP = SpiffeId(TD, "shop", "product")
CART = SpiffeId(TD, "shop", "cart")
MINUTE = dt.timedelta(minutes=1)
DEFAULT_TTL = dt.timedelta(seconds=30)
MAX_TTL = dt.timedelta(seconds=120)


@dataclass(frozen=True)
class Ca:
    ca: CertificateAuthority
    tokens: TokenIssuer
    tls: str  # server-side TLS, token-authenticated
    mtls: str  # client certificate required
    plain: str  # plaintext (must be refused)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Ca]:
    ca = CertificateAuthority.load_or_create(tmp_path / "state", TD)
    tokens = TokenIssuer.load_or_create(tmp_path / "state", TD)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    try:
        add_ca_service(server, ca, tokens, DEFAULT_TTL, MAX_TTL)
        creds = ca.server_credentials()
        tls = server.add_secure_port("127.0.0.1:0", creds.grpc_credentials())
        mtls = server.add_secure_port("127.0.0.1:0", creds.grpc_credentials(True))
        plain = server.add_insecure_port("127.0.0.1:0")
        server.start()
        yield Ca(ca, tokens, f"127.0.0.1:{tls}", f"127.0.0.1:{mtls}", f"127.0.0.1:{plain}")
    finally:
        server.stop(grace=None)


def call(
    target: str,
    csr: str,
    *,
    token: str | None,
    root: bytes | None,
    ttl: int = 0,
) -> ca_pb2.IstioCertificateResponse:
    if root is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root))
    with channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        request = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=ttl)
        response: ca_pb2.IstioCertificateResponse = stub.CreateCertificate(
            request, metadata=metadata, timeout=10
        )
        return response


def refused(fn: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value


def good_call(s: Ca) -> SpiffeId:
    """A well-behaved client; used after each refusal to show the server still serves."""
    response = call(
        s.tls,
        make_csr(generate_key(), SHOP).decode(),
        token=s.tokens.mint("shop", "product", MINUTE),
        root=s.ca.root_cert_pem,
    )
    certs = load_chain("".join(response.cert_chain).encode())
    return verify_chain(certs[0], [], s.ca.roots)


def test_issues_a_certificate_for_the_token_identity(served: Ca) -> None:
    response = call(
        served.tls,
        make_csr(generate_key(), SHOP).decode(),
        token=served.tokens.mint("shop", "product", MINUTE),
        root=served.ca.root_cert_pem,
    )
    chain = [c.encode() for c in response.cert_chain]
    assert len(chain) == 2 and chain[-1] == served.ca.root_cert_pem
    leaf = load_chain(chain[0])[0]
    assert verify_chain(leaf, [], served.ca.roots) == SHOP
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == DEFAULT_TTL + dt.timedelta(seconds=60)  # default TTL + skew backdate


def test_requested_ttl_is_honoured_and_capped(served: Ca) -> None:
    token = served.tokens.mint("shop", "product", MINUTE)
    root = served.ca.root_cert_pem
    for asked, expected in [(10, 10), (100_000, int(MAX_TTL.total_seconds()))]:
        csr = make_csr(generate_key(), SHOP).decode()
        response = call(served.tls, csr, token=token, root=root, ttl=asked)
        leaf = load_chain(response.cert_chain[0].encode())[0]
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert lifetime == dt.timedelta(seconds=expected + 60)
    err = refused(call, served.tls, make_csr(generate_key(), SHOP).decode(), token=token,
                  root=root, ttl=-5)  # fmt: skip
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_tokens_are_unauthenticated_and_server_keeps_serving(
    served: Ca, tmp_path: Path
) -> None:
    csr = make_csr(generate_key(), SHOP).decode()
    root = served.ca.root_cert_pem
    foreign = TokenIssuer.load_or_create(tmp_path / "elsewhere").mint("shop", "product", MINUTE)
    expired = served.tokens.mint("shop", "product", dt.timedelta(seconds=5), now=0)
    cases = [
        (None, "no credential"),
        ("not-a-jwt", "bad format"),
        (foreign, "bad signature"),
        (expired, "expired"),
    ]
    for token, reason in cases:
        err = refused(call, served.tls, csr, token=token, root=root)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, reason
        assert reason in (err.details() or ""), err.details()
        assert good_call(served) == SHOP


def test_csr_for_another_identity_is_permission_denied(served: Ca) -> None:
    err = refused(
        call,
        served.tls,
        make_csr(generate_key(), CART).decode(),
        token=served.tokens.mint("shop", "product", MINUTE),
        root=served.ca.root_cert_pem,
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert CART.uri in (err.details() or "") and SHOP.uri in (err.details() or "")
    assert good_call(served) == SHOP


@pytest.mark.parametrize("garbage", ["", "garbage", "-----BEGIN CERTIFICATE REQUEST-----\nx\n"])
def test_garbage_csr_is_invalid_argument(served: Ca, garbage: str) -> None:
    err = refused(
        call,
        served.tls,
        garbage,
        token=served.tokens.mint("shop", "product", MINUTE),
        root=served.ca.root_cert_pem,
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CSR" in (err.details() or "") or "csr" in (err.details() or "")
    assert good_call(served) == SHOP


def test_plaintext_calls_are_refused(served: Ca) -> None:
    err = refused(
        call,
        served.plain,
        make_csr(generate_key(), SHOP).decode(),
        token=served.tokens.mint("shop", "product", MINUTE),
        root=None,
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "CA calls require TLS"
    assert good_call(served) == SHOP


def test_issuance_is_logged_without_key_or_token(
    served: Ca, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hyphal.ca")
    token = served.tokens.mint("shop", "product", MINUTE)
    response = call(
        served.tls, make_csr(generate_key(), SHOP).decode(), token=token,
        root=served.ca.root_cert_pem,
    )  # fmt: skip
    serial = load_chain(response.cert_chain[0].encode())[0].serial_number
    issued = [r.getMessage() for r in caplog.records if "issued certificate" in r.getMessage()]
    assert len(issued) == 1
    assert SHOP.uri in issued[0] and f"{serial:x}" in issued[0]
    assert token not in caplog.text and token.split(".")[2] not in caplog.text
    assert "PRIVATE KEY" not in caplog.text


async def test_client_request_certificate(served: Ca, tmp_path: Path) -> None:
    key = generate_key()
    bundle = await request_certificate(
        served.tls,
        served.ca.root_cert_pem,
        served.tokens.mint("shop", "product", MINUTE),
        key,
        SHOP,
        dt.timedelta(seconds=20),
    )
    assert bundle.spiffe_id == SHOP
    assert dt.timedelta(seconds=19) <= bundle.lifetime <= dt.timedelta(seconds=21)
    leaf = load_chain(bundle.chain_pem)[0]
    assert spiffe_id_of(leaf) == SHOP and len(load_chain(bundle.chain_pem)) == 1
    assert bundle.roots_pem == served.ca.root_cert_pem
    assert "key_pem" not in repr(bundle)
    bundle.write(tmp_path / "certs")
    assert (tmp_path / "certs" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "certs" / "cert-chain.pem").read_bytes() == bundle.chain_pem


async def test_client_reports_refusals_clearly(served: Ca) -> None:
    with pytest.raises(CertificateRequestError) as info:
        await request_certificate(
            served.tls,
            served.ca.root_cert_pem,
            served.tokens.mint("shop", "cart", MINUTE),
            generate_key(),
            SHOP,
            None,
        )
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert served.tls in str(info.value) and CART.uri in str(info.value)


async def test_client_refuses_a_ca_with_an_unknown_root(served: Ca, tmp_path: Path) -> None:
    stranger = CertificateAuthority.load_or_create(tmp_path / "stranger", TD)
    with pytest.raises(CertificateRequestError) as info:
        await request_certificate(
            served.tls,
            stranger.root_cert_pem,
            served.tokens.mint("shop", "product", MINUTE),
            generate_key(),
            SHOP,
            None,
            timeout=3,
        )
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_renewal_over_mtls_with_the_current_certificate(served: Ca) -> None:
    token = served.tokens.mint("shop", "product", MINUTE)
    first = await request_certificate(served.tls, served.ca.root_cert_pem, token, generate_key(),
                                      SHOP, None)  # fmt: skip
    renewed = await request_certificate(
        served.mtls, served.ca.root_cert_pem, None, generate_key(), SHOP, None,
        client_bundle=first,
    )  # fmt: skip
    assert renewed.spiffe_id == SHOP and renewed.chain_pem != first.chain_pem
    # The current certificate proves only its own identity.
    with pytest.raises(CertificateRequestError) as info:
        await request_certificate(
            served.mtls, served.ca.root_cert_pem, None, generate_key(), CART, None,
            client_bundle=first,
        )  # fmt: skip
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def aio_served(tmp_path: Path) -> AsyncIterator[Ca]:
    ca = CertificateAuthority.load_or_create(tmp_path / "state", TD)
    tokens = TokenIssuer.load_or_create(tmp_path / "state", TD)
    server = grpc.aio.server()
    try:
        add_ca_service(server, ca, tokens, DEFAULT_TTL, MAX_TTL)
        tls = server.add_secure_port("127.0.0.1:0", ca.server_credentials().grpc_credentials())
        plain = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        yield Ca(ca, tokens, f"127.0.0.1:{tls}", "", f"127.0.0.1:{plain}")
    finally:
        await server.stop(grace=None)


async def test_asyncio_server_issues_and_refuses(aio_served: Ca) -> None:
    s = aio_served
    token = s.tokens.mint("shop", "product", MINUTE)
    bundle = await request_certificate(s.tls, s.ca.root_cert_pem, token, generate_key(), SHOP)
    assert bundle.spiffe_id == SHOP
    with pytest.raises(CertificateRequestError) as info:
        await request_certificate(s.tls, s.ca.root_cert_pem, token, generate_key(), CART)
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    async with grpc.aio.insecure_channel(s.plain) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateCertificate(
                ca_pb2.IstioCertificateRequest(csr=make_csr(generate_key(), SHOP).decode()),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=5,
            )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "CA calls require TLS"
    again = await request_certificate(s.tls, s.ca.root_cert_pem, token, generate_key(), SHOP)
    assert again.spiffe_id == SHOP
