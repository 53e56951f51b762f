"""Istio and Gateway API custom resources read from the Kubernetes API, validated like files.

Each object is parsed by `hyphal.config` exactly as a file's document would be, named
`<Kind> <namespace>/<name>` in its errors. Theory of operation: every change of any input
(CRD objects, the mesh Services from the registry source, resources applied through the API)
builds a candidate set: each object's newest version if it parses, else its last good one.
The candidate is validated whole; an object that validation blames goes back to its last good
version (or out, if it never had one) and the set is validated again. What survives becomes
the last good set and is published; every refused object is logged and reported once per
resourceVersion as a Kubernetes Event on that object, so `kubectl describe` shows why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hyphal.config import ConfigError, ResourceSet, validate
from hyphal.config.loader import parse_document
from hyphal.kube.client import JsonObject, KubeClient, KubeError
from hyphal.kube.informer import Informer, ResourceType

log = logging.getLogger("hyphal.kube.config")

CRD_TYPES: tuple[ResourceType, ...] = (
    ResourceType("networking.istio.io", "v1", "virtualservices", "VirtualService"),
    ResourceType("networking.istio.io", "v1", "destinationrules", "DestinationRule"),
    ResourceType("networking.istio.io", "v1", "serviceentries", "ServiceEntry"),
    ResourceType("security.istio.io", "v1", "authorizationpolicies", "AuthorizationPolicy"),
    ResourceType("security.istio.io", "v1", "peerauthentications", "PeerAuthentication"),
    ResourceType("security.istio.io", "v1", "requestauthentications", "RequestAuthentication"),
    ResourceType("hyphal.dev", "v1alpha1", "ratelimitpolicies", "RateLimitPolicy"),
    ResourceType("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
    ResourceType("gateway.networking.k8s.io", "v1", "grpcroutes", "GRPCRoute"),
)

Key = tuple[str, str, str]  # (kind, namespace, name)
MAX_ROUNDS = 8


def object_name(kind: str, namespace: str, name: str) -> str:
    """How errors name an API object: `VirtualService shop/reviews`."""
    return f"{kind} {namespace}/{name}"


def document_of(obj: Mapping[str, Any], resource: ResourceType) -> dict[str, Any]:
    """The object as a config document: apiVersion, kind, metadata (name, namespace, labels)
    and spec; server-managed fields (uid, resourceVersion, managedFields, status) left out."""
    meta = obj.get("metadata") or {}
    doc: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion") or resource.api_version,
        "kind": obj.get("kind") or resource.kind,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace") or "default"},
    }
    if meta.get("labels"):
        doc["metadata"]["labels"] = meta["labels"]
    if "spec" in obj:
        doc["spec"] = obj["spec"]
    return doc


def parse_object(obj: Mapping[str, Any], resource: ResourceType) -> tuple[Any, list[ConfigError]]:
    """(resource model or None, errors) for one API object."""
    doc = document_of(obj, resource)
    meta = doc["metadata"]
    source = object_name(str(doc["kind"]), str(meta["namespace"]), str(meta["name"]))
    found, errors = parse_document(doc, source, 0)
    return (found[0] if found and not errors else None), errors


def _key(r: Any) -> Key:
    return (str(r.kind), str(r.namespace), str(r.name))


class KubeConfigSource:
    """Informers on the supported custom resources; publishes the last good ResourceSet."""

    def __init__(
        self,
        client: KubeClient,
        publish: Callable[[ResourceSet], None],
        *,
        trust_domain: str = "cluster.local",
        component: str = "hyphal-control",
        types: Iterable[ResourceType] = CRD_TYPES,
    ) -> None:
        self.client = client
        self._publish = publish
        self._trust_domain = trust_domain
        self._component = component
        self.informers = [Informer(client, t, self._changed) for t in types]
        self._services: tuple[Any, ...] = ()
        self._extra: tuple[Any, ...] = ()
        self._parsed: dict[tuple[Key, str], tuple[Any, list[ConfigError]]] = {}
        self._good: dict[Key, Any] = {}
        self.current = ResourceSet()
        self.errors: dict[Key, list[str]] = {}  # why each refused object was refused
        self._reported: set[tuple[Key, str, str]] = set()
        self._raw: dict[Key, JsonObject] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- inputs ----

    def set_services(self, services: Iterable[Any]) -> None:
        """Mesh Services from the Kubernetes registry source (hyphal Service models)."""
        self._services = tuple(services)
        self._changed()

    def set_extra(self, resources: Iterable[Any]) -> None:
        """Resources from elsewhere (applied through the control plane's API)."""
        self._extra = tuple(resources)
        self._changed()

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    # ---- the rebuild ----

    def _changed(self) -> None:
        if not self.synced:
            return
        newest: dict[Key, Any] = {}
        errors: dict[Key, list[str]] = {}
        raw: dict[Key, JsonObject] = {}
        for inf in self.informers:
            for (ns, name), obj in inf.items().items():
                key = (inf.resource.kind, ns or "default", name)
                raw[key] = obj
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                parsed = self._parsed.get((key, rv))
                if parsed is None:
                    parsed = self._parsed[(key, rv)] = parse_object(obj, inf.resource)
                model, errs = parsed
                if model is not None:
                    newest[key] = model
                else:
                    errors[key] = [str(e) for e in errs]
        self._raw = raw
        self._parsed = {k: v for k, v in self._parsed.items() if k[0] in raw}
        candidate: dict[Key, Any] = {}
        for key in raw:
            chosen = newest.get(key, self._good.get(key))
            if chosen is not None:
                candidate[key] = chosen
        base = {_key(r): r for r in (*self._services, *self._extra)}
        for _ in range(MAX_ROUNDS):
            problems = validate(ResourceSet([*base.values(), *candidate.values()]),
                                self._trust_domain)
            if not problems:
                break
            blamed = self._blame(problems, candidate, base, errors)
            if not blamed:
                log.error("config from Kubernetes not applied, the last good set stays:\n  %s",
                          "\n  ".join(str(p) for p in problems))
                self._report(errors)
                return
        else:
            log.error("config from Kubernetes did not settle; the last good set stays")
            self._report(errors)
            return
        self._good = dict(candidate)
        self.errors = errors
        self._report(errors)
        new = ResourceSet([*base.values(), *candidate.values()])
        if new != self.current:
            self.current = new
            self._publish(new)

    def _blame(self, problems: list[ConfigError], candidate: dict[Key, Any],
               base: dict[Key, Any], errors: dict[Key, list[str]]) -> bool:
        """Revert or drop every object a problem names; False when none could be."""
        names = {object_name(*k): k for k in (*candidate, *base)}
        moved = False
        for p in problems:
            key = names.get(p.source)
            if key is None:
                continue
            errors.setdefault(key, []).append(str(p))
            if key in base:
                base.pop(key)
                moved = True
            elif key in candidate:
                good = self._good.get(key)
                if good is not None and candidate[key] is not good:
                    candidate[key] = good
                else:
                    candidate.pop(key)
                moved = True
        return moved

    # ---- reporting ----

    def _report(self, errors: Mapping[Key, list[str]]) -> None:
        for key, lines in sorted(errors.items()):
            obj = self._raw.get(key)
            rv = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
            message = "; ".join(lines)
            marker = (key, rv, message)
            if marker in self._reported:
                continue
            self._reported.add(marker)
            kept = "its last good version is kept" if key in self._good else "it is not applied"
            log.warning("%s refused (%s):\n  %s", object_name(*key), kept, "\n  ".join(lines))
            if obj is not None:
                self._post_event(key, obj, f"refused by hyphal ({kept}): {message}")

    def _post_event(self, key: Key, obj: JsonObject, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._send_event(key, obj, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_event(self, key: Key, obj: JsonObject, message: str) -> None:
        kind, ns, name = key
        meta = obj.get("metadata") or {}
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": kind, "name": name,
                               "namespace": ns, "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": "InvalidConfig", "type": "Warning", "message": message[:1000],
            "source": {"component": self._component},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.client.create(f"/api/v1/namespaces/{ns}/events", event)
        except KubeError as exc:
            log.info("could not record an Event for %s: %s", object_name(*key), exc)
