"""The informer against the fake API server: list, watch events, resume, 410 -> relist."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fake_api import FakeApi

from hyphal.kube.client import KubeClient, KubeConfig, KubeError
from hyphal.kube.informer import SERVICES, Cache, Expired, Informer, start_informers


def svc(name: str, ns: str = "shop", port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": port}]}}


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(inf: Informer) -> AsyncIterator[Informer]:
    [task] = await start_informers([inf], timeout=5)
    try:
        yield inf
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def ports(inf: Informer) -> dict[str, int]:
    return {k[1]: o["spec"]["ports"][0]["port"] for k, o in inf.items().items()}


async def test_list_then_added_modified_deleted(api: FakeApi, client: KubeClient) -> None:
    api.put(svc("a"))
    changes: list[int] = []
    inf = Informer(client, SERVICES, lambda: changes.append(1))
    async with running(inf):
        assert ports(inf) == {"a": 80}
        assert inf.cache.resource_version == str(api.rv)
        await until(lambda: api.watching >= 1)
        api.put(svc("b"))
        await until(lambda: "b" in ports(inf))
        api.put(svc("a", port=81))
        await until(lambda: ports(inf).get("a") == 81)
        api.delete("v1", "Service", "shop", "b")
        await until(lambda: "b" not in ports(inf))
        assert ports(inf) == {"a": 81}
        assert inf.lists == 1
        assert len(changes) == 4  # the list, then one per event


async def test_dropped_watch_resumes_from_resource_version(
    api: FakeApi, client: KubeClient
) -> None:
    api.put(svc("a"))
    inf = Informer(client, SERVICES, backoff=(0.05, 0.1))
    async with running(inf):
        await until(lambda: api.watching >= 1)
        api.drop_watches()
        api.put(svc("b"))  # happens while no watch is open
        await until(lambda: "b" in ports(inf))
        assert inf.lists == 1, "a dropped watch must resume, not relist"
        assert inf.watches >= 2
        resumed = [r for r in api.requests if "watch=1" in r][-1]
        assert "resourceVersion=" in resumed


async def test_bookmark_moves_resource_version(api: FakeApi, client: KubeClient) -> None:
    api.put(svc("a"))
    inf = Informer(client, SERVICES)
    async with running(inf):
        await until(lambda: api.watching >= 1)
        api.bookmark("v1", "Service")
        await until(lambda: inf.cache.resource_version == str(api.rv))
        assert ports(inf) == {"a": 80}


async def test_gone_relists(api: FakeApi, client: KubeClient) -> None:
    api.put(svc("a"))
    api.put(svc("gone-soon"))
    inf = Informer(client, SERVICES, backoff=(0.05, 0.1))
    async with running(inf):
        await until(lambda: api.watching >= 1)
        # While the informer is cut off, history is compacted: its resourceVersion is too old.
        api.drop_watches()
        api.delete("v1", "Service", "shop", "gone-soon")
        api.put(svc("c"))
        api.compact()
        await until(lambda: inf.lists == 2)
        await until(lambda: set(ports(inf)) == {"a", "c"})


def test_cache_core_events() -> None:
    cache = Cache()
    assert cache.replace([svc("a")], "5")
    assert not cache.replace([svc("a")], "6")
    assert cache.apply({"type": "MODIFIED", "object": svc("a", port=1)})
    assert not cache.apply({"type": "DELETED", "object": svc("zzz")})
    with pytest.raises(Expired):
        cache.apply({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
    with pytest.raises(KubeError):
        cache.apply({"type": "ERROR", "object": {"kind": "Status", "code": 500}})


async def test_unreachable_api_names_what_did_not_list() -> None:
    async with KubeClient(KubeConfig.plaintext("http://127.0.0.1:9"), timeout=1) as c:
        inf = Informer(c, SERVICES, backoff=(0.05, 0.1))
        with pytest.raises(KubeError, match="could not list services"):
            await start_informers([inf], timeout=0.5)


def test_in_cluster_config(tmp_path: Any) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "namespace").write_text("hyphal-system")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    cfg = KubeConfig.in_cluster(tmp_path, env)
    assert cfg.base_url == "https://10.0.0.1:443"
    assert cfg.token() == "tok"
    with pytest.raises(KubeError, match="KUBERNETES_SERVICE_HOST"):
        KubeConfig.in_cluster(tmp_path, {})
