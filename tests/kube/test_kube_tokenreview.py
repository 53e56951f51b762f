"""The CA accepts a projected ServiceAccount token verified with the TokenReview API."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from fake_api import FakeApi

from hyphal.control.ca.authority import CertificateAuthority
from hyphal.control.ca.proto import ca_pb2, ca_pb2_grpc
from hyphal.control.ca.service import add_ca_service
from hyphal.control.ca.tokens import TokenError, TokenIssuer
from hyphal.identity.certs import load_chain, spiffe_id_of
from hyphal.identity.keys import generate_key, make_csr
from hyphal.identity.spiffe import SpiffeId
from hyphal.kube.client import KubeConfig
from hyphal.kube.tokenreview import TokenReviewAuthenticator, identity_of

TD = "cluster.local"
PRODUCT = SpiffeId(TD, "shop", "product")
TTL = dt.timedelta(seconds=30)


@pytest.fixture
async def ca_port(tmp_path: Path, api: FakeApi) -> AsyncIterator[tuple[int, bytes]]:
    ca = CertificateAuthority.load_or_create(tmp_path / "state", TD)
    tokens = TokenIssuer.load_or_create(tmp_path / "state", TD)
    server = grpc.aio.server()
    auth = TokenReviewAuthenticator(KubeConfig.plaintext(api.url), TD)
    add_ca_service(server, ca, tokens, TTL, TTL, authenticators=[auth])
    port = server.add_secure_port("127.0.0.1:0", ca.server_credentials().grpc_credentials())
    await server.start()
    try:
        yield port, ca.root_cert_pem
    finally:
        await server.stop(None)


async def create(port: int, root: bytes, token: str, identity: SpiffeId) -> list[str]:
    csr = make_csr(generate_key(), identity).decode()
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}",
                                       grpc.ssl_channel_credentials(root)) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        response = await stub.CreateCertificate(
            ca_pb2.IstioCertificateRequest(csr=csr),
            metadata=[("authorization", f"Bearer {token}")], timeout=10)
        return list(response.cert_chain)


async def test_service_account_token_gets_its_identity(api: FakeApi,
                                                       ca_port: tuple[int, bytes]) -> None:
    api.tokens["k8s-token-product"] = ("system:serviceaccount:shop:product", ["hyphal-ca"])
    port, root = ca_port
    chain = await create(port, root, "k8s-token-product", PRODUCT)
    leaf = load_chain("".join(chain).encode())[0]
    assert spiffe_id_of(leaf) == PRODUCT
    [review] = api.token_reviews
    assert review["spec"] == {"token": "k8s-token-product", "audiences": ["hyphal-ca"]}


async def test_token_for_another_identity_or_audience_is_refused(
    api: FakeApi, ca_port: tuple[int, bytes]
) -> None:
    api.tokens["cart-token"] = ("system:serviceaccount:shop:cart", ["hyphal-ca"])
    api.tokens["wrong-audience"] = ("system:serviceaccount:shop:product", ["https://kubernetes"])
    port, root = ca_port
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await create(port, root, "cart-token", PRODUCT)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as audience:
        await create(port, root, "wrong-audience", PRODUCT)
    assert audience.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "kubernetes token refused: the API server refused the token" in str(
        audience.value.details())


def test_username_mapping() -> None:
    assert identity_of("system:serviceaccount:shop:product", TD) == PRODUCT
    with pytest.raises(TokenError, match="not a ServiceAccount"):
        identity_of("alice", TD)


def test_reviews_are_cached(api: FakeApi) -> None:
    api.tokens["t"] = ("system:serviceaccount:shop:product", ["hyphal-ca"])
    auth = TokenReviewAuthenticator(KubeConfig.plaintext(api.url), TD)
    assert auth.verify("t") == auth.verify("t") == PRODUCT
    assert len(api.token_reviews) == 1
