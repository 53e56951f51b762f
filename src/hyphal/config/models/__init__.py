"""User-facing resource models (pydantic, camelCase aliases, unknown fields refused, frozen)."""

from __future__ import annotations

from hyphal.config.models.base import Metadata, ResourceModel, Source

# The star imports re-export each model module's __all__ (the nested spec types).
from hyphal.config.models.destination_rule import *  # noqa: F403
from hyphal.config.models.destination_rule import DestinationRule
from hyphal.config.models.gateway_api import *  # noqa: F403
from hyphal.config.models.gateway_api import GatewayGRPCRoute, GatewayHTTPRoute
from hyphal.config.models.hyphal import *  # noqa: F403
from hyphal.config.models.hyphal import Service, Workload
from hyphal.config.models.ratelimit import *  # noqa: F403
from hyphal.config.models.ratelimit import RateLimitPolicy
from hyphal.config.models.security import *  # noqa: F403
from hyphal.config.models.security import (
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
)
from hyphal.config.models.service_entry import *  # noqa: F403
from hyphal.config.models.service_entry import ServiceEntry
from hyphal.config.models.virtual_service import *  # noqa: F403
from hyphal.config.models.virtual_service import VirtualService

Resource = (
    Service
    | Workload
    | VirtualService
    | DestinationRule
    | ServiceEntry
    | AuthorizationPolicy
    | PeerAuthentication
    | RequestAuthentication
    | RateLimitPolicy
    | GatewayHTTPRoute
    | GatewayGRPCRoute
)
"""Any user resource (all are `ResourceModel` subclasses)."""

KINDS: dict[str, type[ResourceModel]] = {
    m.KIND: m
    for m in (
        Service,
        Workload,
        VirtualService,
        DestinationRule,
        ServiceEntry,
        AuthorizationPolicy,
        PeerAuthentication,
        RequestAuthentication,
        RateLimitPolicy,
        GatewayHTTPRoute,
        GatewayGRPCRoute,
    )
}
"""kind -> model class (each class lists its accepted apiVersions in API_VERSIONS)."""

__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "DestinationRule",
    "GatewayGRPCRoute",
    "GatewayHTTPRoute",
    "Metadata",
    "PeerAuthentication",
    "RateLimitPolicy",
    "RequestAuthentication",
    "Resource",
    "ResourceModel",
    "Service",
    "ServiceEntry",
    "Source",
    "VirtualService",
    "Workload",
]
