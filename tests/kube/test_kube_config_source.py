"""Custom resources from the API: validated by hyphal.config, bad objects refused, rest applied."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fake_api import FakeApi

from hyphal.config import ConfigErrors, ResourceSet, load_text
from hyphal.kube.client import KubeClient
from hyphal.kube.config_source import KubeConfigSource
from hyphal.kube.informer import start_informers
from hyphal.kube.registry import service_resource


def vs(name: str, host: str = "product", **route_extra: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                         "managedFields": [{"manager": "kubectl"}], "generation": 1},
            "spec": {"hosts": [host],
                     "http": [{"route": [{"destination": {"host": host}}], **route_extra}]},
            "status": {"conditions": []}}


def dr(name: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"host": "product", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}}


PRODUCT = service_resource({
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "product", "namespace": "shop"},
    "spec": {"selector": {"app": "product"}, "ports": [{"name": "http", "port": 80}]}})


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@contextlib.asynccontextmanager
async def source(client: KubeClient) -> AsyncIterator[tuple[KubeConfigSource, list[ResourceSet]]]:
    published: list[ResourceSet] = []
    src = KubeConfigSource(client, published.append)
    src.set_services([PRODUCT])
    tasks = await start_informers(src.informers, timeout=5)
    try:
        yield src, published
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


def names(rs: ResourceSet) -> set[str]:
    return {f"{r.kind}/{r.name}" for r in rs}


async def test_unsupported_field_refused_with_config_error_text_rest_applied(
    api: FakeApi, client: KubeClient
) -> None:
    api.put(vs("good"))
    api.put(vs("bad", mirrorPercent=5, bogusField=1))
    api.put(dr("product"))
    async with source(client) as (src, published):
        assert names(published[-1]) == {"Service/product", "VirtualService/good",
                                        "DestinationRule/product"}
        # The same text hyphal.config gives for a file, with the object as the source.
        bad = vs("bad", mirrorPercent=5, bogusField=1)
        with pytest.raises(ConfigErrors) as file_errors:
            load_text(json.dumps({k: v for k, v in bad.items() if k != "status"} | {
                "metadata": {"name": "bad", "namespace": "shop"}}), "file.yaml")
        expected = [str(e).replace("file.yaml#1", "VirtualService shop/bad")
                    for e in file_errors.value.errors]
        assert src.errors[("VirtualService", "shop", "bad")] == expected
        assert any("spec.http[0].bogusField: not supported by hyphal" in e for e in expected)
        # ... and reported as a Kubernetes Event on the object.
        await until(lambda: bool(api.events))
        [event] = api.events
        assert event["involvedObject"] == {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "name": "bad",
            "namespace": "shop", "uid": "uid-bad", "resourceVersion": event["involvedObject"][
                "resourceVersion"]}
        assert event["type"] == "Warning" and "bogusField" in event["message"]


async def test_bad_update_keeps_last_good_version(api: FakeApi, client: KubeClient) -> None:
    api.put(vs("good"))
    async with source(client) as (src, published):
        first = published[-1].get("VirtualService", "shop", "good")
        assert first is not None
        api.put(vs("good", timeout="not-a-duration"))
        await until(lambda: ("VirtualService", "shop", "good") in src.errors)
        kept = src.current.get("VirtualService", "shop", "good")
        assert kept == first
        assert "spec.http[0].timeout" in src.errors[("VirtualService", "shop", "good")][0]
        api.put(vs("good", timeout="2s"))
        await until(lambda: not src.errors)
        fixed = src.current.get("VirtualService", "shop", "good")
        assert fixed is not None and fixed.spec.http[0].timeout is not None


async def test_cross_resource_error_blames_the_object(api: FakeApi, client: KubeClient) -> None:
    api.put(vs("good"))
    api.put(vs("nowhere", host="missing"))
    async with source(client) as (src, published):
        assert names(published[-1]) == {"Service/product", "VirtualService/good"}
        errs = src.errors[("VirtualService", "shop", "nowhere")]
        assert errs[0] == ("VirtualService shop/nowhere: spec.hosts[0]: host 'missing' "
                           "(missing.shop.svc.cluster.local) is not a Service or ServiceEntry host")
        api.delete("networking.istio.io/v1", "VirtualService", "shop", "good")
        await until(lambda: "VirtualService/good" not in names(src.current))
