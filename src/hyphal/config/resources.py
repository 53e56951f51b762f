"""ResourceSet: an immutable collection of user resources keyed by (kind, namespace, name)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar, cast

import yaml

from hyphal.config.models import (
    AuthorizationPolicy,
    DestinationRule,
    GatewayGRPCRoute,
    GatewayHTTPRoute,
    PeerAuthentication,
    RateLimitPolicy,
    RequestAuthentication,
    Resource,
    ResourceModel,
    Service,
    ServiceEntry,
    VirtualService,
    Workload,
)

__all__ = ["Key", "ResourceSet", "to_dict", "to_yaml"]

Key = tuple[str, str, str]
"""(kind, namespace, name)"""

R = TypeVar("R", bound=ResourceModel)


def to_dict(resource: ResourceModel) -> dict[str, Any]:
    """The resource as the user wrote it: camelCase, only the fields that were set."""
    body = resource.model_dump(mode="json", by_alias=True, exclude_unset=True)
    body.pop("apiVersion", None)
    body.pop("kind", None)
    body["metadata"] = resource.metadata.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return {"apiVersion": resource.api_version, "kind": resource.kind, **body}


def to_yaml(resource: ResourceModel) -> str:
    """YAML for one resource (for `hyphal get -o yaml` and for persisting applied resources)."""
    return str(yaml.safe_dump(to_dict(resource), sort_keys=False, default_flow_style=False))


class ResourceSet:
    """Immutable; operations return new sets. Iteration follows insertion (load) order."""

    __slots__ = ("_items",)

    def __init__(self, resources: Iterable[ResourceModel] = ()) -> None:
        items: dict[Key, ResourceModel] = {}
        for r in resources:
            items[r.key] = r
        self._items: Mapping[Key, ResourceModel] = MappingProxyType(items)

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        return cast("Resource | None", self._items.get((kind, namespace, name)))

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def keys(self) -> tuple[Key, ...]:
        return tuple(self._items)

    def of_kind(self, kind: str | type[R]) -> tuple[Any, ...]:
        """Resources of one kind (a kind name, or a model class for a typed result)."""
        name = kind if isinstance(kind, str) else kind.KIND
        return tuple(r for (k, _, _), r in self._items.items() if k == name)

    def _typed(self, cls: type[R]) -> tuple[R, ...]:
        return tuple(r for r in self._items.values() if isinstance(r, cls))

    @property
    def services(self) -> tuple[Service, ...]:
        return self._typed(Service)

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return self._typed(Workload)

    @property
    def virtual_services(self) -> tuple[VirtualService, ...]:
        return self._typed(VirtualService)

    @property
    def destination_rules(self) -> tuple[DestinationRule, ...]:
        return self._typed(DestinationRule)

    @property
    def service_entries(self) -> tuple[ServiceEntry, ...]:
        return self._typed(ServiceEntry)

    @property
    def authorization_policies(self) -> tuple[AuthorizationPolicy, ...]:
        return self._typed(AuthorizationPolicy)

    @property
    def peer_authentications(self) -> tuple[PeerAuthentication, ...]:
        return self._typed(PeerAuthentication)

    @property
    def request_authentications(self) -> tuple[RequestAuthentication, ...]:
        return self._typed(RequestAuthentication)

    @property
    def rate_limit_policies(self) -> tuple[RateLimitPolicy, ...]:
        return self._typed(RateLimitPolicy)

    @property
    def http_routes(self) -> tuple[GatewayHTTPRoute, ...]:
        """Gateway API HTTPRoutes (GAMMA: attached to Services)."""
        return self._typed(GatewayHTTPRoute)

    @property
    def grpc_routes(self) -> tuple[GatewayGRPCRoute, ...]:
        """Gateway API GRPCRoutes (GAMMA: attached to Services)."""
        return self._typed(GatewayGRPCRoute)

    def merge(self, other: ResourceSet | Iterable[ResourceModel]) -> ResourceSet:
        """A set with `other`'s resources added; on a key collision `other` wins."""
        return ResourceSet([*self._items.values(), *other])

    def without(self, keys: Iterable[Key]) -> ResourceSet:
        """A set without the given (kind, namespace, name) keys (missing keys are ignored)."""
        drop = set(keys)
        return ResourceSet(r for k, r in self._items.items() if k not in drop)

    def to_yaml(self) -> str:
        """Every resource, as a multi-document YAML stream."""
        docs = [to_dict(r) for r in self._items.values()]
        return str(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))

    def __iter__(self) -> Iterator[Resource]:
        return iter(cast("Iterable[Resource]", self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResourceSet):
            return NotImplemented
        return dict(self._items) == dict(other._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items))

    def __repr__(self) -> str:
        return f"ResourceSet({len(self)} resources)"
