"""The control plane's HTTP API, served for real on 127.0.0.1 over a real store."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hyphal.control.api import ApiHandlers, ApiServer, load_or_create_admin_token
from hyphal.control.ca.tokens import TokenIssuer
from hyphal.control.health import Readiness
from hyphal.control.store import Store

SERVICE = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  selector: {app: product}
  ports: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
    - route:
        - destination: {host: product, subset: v1}
          weight: 80
        - destination: {host: product, subset: SUBSET}
          weight: 20
"""


@dataclass
class Api:
    client: httpx.AsyncClient
    token: str
    store: Store
    readiness: Readiness
    issuer: TokenIssuer

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config_dir, state_dir = tmp_path / "config", tmp_path / "state"
    config_dir.mkdir()
    (config_dir / "base.yaml").write_text(SERVICE)
    store = Store(state_dir, config_dir)
    store.load()
    token = load_or_create_admin_token(state_dir)
    readiness = Readiness()
    issuer = TokenIssuer.load_or_create(state_dir)

    def mint(ns: str, sa: str, ttl: float | None) -> str:
        return issuer.mint(ns, sa, dt.timedelta(seconds=ttl or 60))

    handlers = ApiHandlers(store, token, readiness.waiting, lambda: {"hello": "status"}, mint)
    server = ApiServer(handlers, asyncio.get_running_loop())
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                     timeout=5) as client:
            yield Api(client, token, store, readiness, issuer)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, server.stop)


def test_admin_token_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create_admin_token(tmp_path / "s")
    assert len(first) >= 32
    path = tmp_path / "s" / "admin-token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_admin_token(tmp_path / "s") == first


async def test_health_is_open_and_ready_reports_what_is_missing(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await api.client.get("/ready")
    assert r.status_code == 503 and r.json()["waiting_for"] == ["store", "ca", "xds"]
    for part in ("store", "ca", "xds"):
        api.readiness.mark_ready(part)
    r = await api.client.get("/ready")
    assert r.status_code == 200 and r.json()["ready"] is True


async def test_api_needs_the_admin_token(api: Api) -> None:
    r = await api.client.get("/api/v1/resources")
    assert r.status_code == 401
    assert "admin-token" in r.json()["errors"][0]
    r = await api.client.get("/api/v1/status", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await api.client.get("/api/v1/status", headers=api.auth)
    assert r.status_code == 200 and r.json() == {"hello": "status"}


async def test_apply_yaml_reports_created_then_unchanged(api: Api) -> None:
    body = VS.replace("SUBSET", "v2")
    r = await api.client.post("/api/v1/apply", content=body, headers=api.auth)
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [{
        "kind": "VirtualService", "apiVersion": "networking.istio.io/v1",
        "namespace": "shop", "name": "product", "action": "created",
    }]
    r = await api.client.post("/api/v1/apply", content=body, headers=api.auth)
    assert r.json()["results"][0]["action"] == "unchanged"


async def test_apply_json_files_names_the_file_in_errors_and_changes_nothing(api: Api) -> None:
    files = [
        {"name": "good.yaml", "text": VS.replace("SUBSET", "v2").replace("name: product,",
                                                                          "name: other,")},
        {"name": "canary.yaml", "text": VS.replace("SUBSET", "v3")},
    ]
    r = await api.client.post("/api/v1/apply", json={"files": files}, headers=api.auth)
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert "canary.yaml#1: spec.http[0].route[1].destination.subset: subset 'v3' of " \
        "product.shop.svc.cluster.local is not defined by any DestinationRule" in errors
    assert api.store.generation == 1
    assert api.store.query(kind="vs") == []


async def test_apply_rejects_an_empty_or_undecodable_body(api: Api) -> None:
    r = await api.client.post("/api/v1/apply", content=b"", headers=api.auth)
    assert r.status_code == 400 and "empty request body" in r.json()["errors"][0]
    r = await api.client.post("/api/v1/apply", content=b"\xff\xfe", headers=api.auth)
    assert r.status_code == 400 and "UTF-8" in r.json()["errors"][0]


async def test_get_resources_filters_and_resolves_aliases(api: Api) -> None:
    await api.client.post("/api/v1/apply", content=VS.replace("SUBSET", "v2"), headers=api.auth)
    r = await api.client.get("/api/v1/resources", params={"kind": "vs", "namespace": "shop"},
                             headers=api.auth)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["resource"]["metadata"]["name"] for i in items] == ["product"]
    assert items[0]["source"] == "applied:virtualservice.shop.product.yaml"
    r = await api.client.get("/api/v1/resources", params={"kind": "dr"}, headers=api.auth)
    assert r.json()["items"][0]["source"] == "config-dir:base.yaml"
    r = await api.client.get("/api/v1/resources", params={"kind": "gizmo"}, headers=api.auth)
    assert r.status_code == 400 and "unknown resource kind 'gizmo'" in r.json()["errors"][0]


async def test_delete_by_reference_and_refusals(api: Api) -> None:
    await api.client.post("/api/v1/apply", content=VS.replace("SUBSET", "v2"), headers=api.auth)
    r = await api.client.post("/api/v1/delete", json={"resources": [
        {"kind": "dr", "name": "product", "namespace": "shop"}]}, headers=api.auth)
    assert r.status_code == 409 and "base.yaml" in r.json()["errors"][0]
    r = await api.client.post("/api/v1/delete", json={"resources": [
        {"kind": "vs", "name": "product", "namespace": "shop"}]}, headers=api.auth)
    assert r.status_code == 200 and r.json()["results"][0]["action"] == "deleted"
    r = await api.client.post("/api/v1/delete", content=VS, headers=api.auth)
    assert r.status_code == 404
    assert r.json()["errors"] == ["VirtualService shop/product not found"]
    r = await api.client.post("/api/v1/delete", json={"resources": []}, headers=api.auth)
    assert r.status_code == 400


async def test_tokens_are_minted_for_the_requested_identity(api: Api) -> None:
    r = await api.client.post("/api/v1/tokens", headers=api.auth, json={
        "namespace": "shop", "service_account": "product", "ttl_seconds": 30})
    assert r.status_code == 200
    sid = api.issuer.verify(r.json()["token"])
    assert sid.uri == "spiffe://cluster.local/ns/shop/sa/product"
    r = await api.client.post("/api/v1/tokens", headers=api.auth, json={"namespace": "shop"})
    assert r.status_code == 400 and "service_account" in r.json()["errors"][0]


async def test_unknown_paths_and_methods(api: Api) -> None:
    r = await api.client.get("/api/v1/apply", headers=api.auth)
    assert r.status_code == 405 and "use POST" in r.json()["errors"][0]
    r = await api.client.get("/api/v1/nothing", headers=api.auth)
    assert r.status_code == 404
