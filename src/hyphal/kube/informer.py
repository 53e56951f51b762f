"""List + watch informer: a local cache of one resource type kept current from the API server.

Theory of operation. `list` returns every object and the collection's resourceVersion (rv);
`watch` from that rv streams ADDED / MODIFIED / DELETED events, and BOOKMARK events that only
move the rv forward. When a watch ends (server timeout, dropped connection) the informer
watches again from the last rv it saw, so no event is lost or repeated. When the server says
the rv is too old (HTTP 410, or an ERROR event with code 410 "Expired") the informer lists
again and replaces its cache whole. `Cache` is the sans-I/O core (events in, changes out);
`Informer` is the loop that feeds it from a `KubeClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from hyphal.kube.client import Gone, JsonObject, KubeClient, KubeError

log = logging.getLogger("hyphal.kube.informer")

ObjectKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One API collection, e.g. ("discovery.k8s.io", "v1", "endpointslices")."""

    group: str
    version: str
    plural: str
    kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None) -> str:
        """The collection's URL path, across all namespaces unless one is named."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


SERVICES = ResourceType("", "v1", "services", "Service")
PODS = ResourceType("", "v1", "pods", "Pod")
ENDPOINT_SLICES = ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class Expired(Exception):
    """The watch said 410: the cache must be rebuilt from a fresh list."""


class Cache:
    """The objects of one collection by (namespace, name), and the last resourceVersion seen."""

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, JsonObject] = {}
        self.resource_version = ""

    def items(self) -> Mapping[ObjectKey, JsonObject]:
        return MappingProxyType(dict(self._objects))

    def replace(self, items: Iterable[JsonObject], resource_version: str) -> bool:
        """A fresh list; True when the content differs from what was cached."""
        new = {object_key(o): o for o in items}
        changed = new != self._objects
        self._objects = new
        self.resource_version = resource_version
        return changed

    def apply(self, event: Mapping[str, Any]) -> bool:
        """One watch event; True when the cache changed. Raises Expired on a 410 ERROR."""
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event {kind!r} without an object")
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Expired(str(obj.get("message") or "resource version too old"))
            raise KubeError(f"watch error: {obj.get('code')}: {obj.get('message')}",
                            int(obj.get("code") or 0))
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return False
        key = object_key(obj)
        if kind in ("ADDED", "MODIFIED"):
            if self._objects.get(key) == obj:
                return False
            self._objects[key] = obj
            return True
        if kind == "DELETED":
            return self._objects.pop(key, None) is not None
        raise ValueError(f"unknown watch event type {kind!r}")


class Informer:
    """Keeps a Cache of `resource` current; calls `on_change()` after each change.

    `run()` loops until cancelled; `synced` is set after the first successful list.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: ResourceType,
        on_change: Callable[[], None] | None = None,
        *,
        namespace: str | None = None,
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.client = client
        self.resource = resource
        self.cache = Cache()
        self.synced = asyncio.Event()
        self._on_change = on_change
        self._path = resource.path(namespace)
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self.lists = 0  # how many lists ran (1 + one per 410), for status and tests
        self.watches = 0

    def items(self) -> Mapping[ObjectKey, JsonObject]:
        return self.cache.items()

    def _notify(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change()
        except Exception:
            log.exception("informer %s: change handler failed", self.resource.plural)

    async def list_once(self) -> None:
        body = await self.client.get(self._path)
        items = body.get("items") or []
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        self.lists += 1
        changed = self.cache.replace([i for i in items if isinstance(i, dict)], rv)
        first = not self.synced.is_set()
        self.synced.set()
        if changed or first:
            self._notify()

    async def run(self) -> None:
        delay = self._backoff[0]
        need_list = True
        while True:
            try:
                if need_list:
                    await self.list_once()
                    need_list = False
                self.watches += 1
                async for event in self.client.watch(
                    self._path, self.cache.resource_version, self._watch_timeout
                ):
                    if self.cache.apply(event):
                        self._notify()
                    delay = self._backoff[0]
                continue  # the server ended the watch: resume from the last rv at once
            except (Gone, Expired) as exc:
                log.info("informer %s: %s; listing again", self.resource.plural, exc)
                need_list = True
                continue
            except (KubeError, ValueError) as exc:
                log.warning("informer %s: %s; retrying in %.1fs", self.resource.plural, exc,
                            delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])


async def start_informers(informers: Iterable[Informer], timeout: float = 30.0) -> list[
    asyncio.Task[None]
]:
    """Run every informer in its own task and wait until all have listed once.

    Raises KubeError naming the collections that did not list within `timeout` (the tasks
    are cancelled first)."""
    infs = list(informers)
    tasks = [asyncio.create_task(i.run(), name=f"informer-{i.resource.plural}") for i in infs]
    try:
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in infs)), timeout)
    except TimeoutError:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        missing = ", ".join(i.resource.plural for i in infs if not i.synced.is_set())
        raise KubeError(
            f"could not list {missing} from the Kubernetes API within {timeout:.0f}s: check "
            "the API address and the ClusterRole (see the control plane's log)"
        ) from None
    return tasks
