"""hyphal.config: user-facing resources — models, loading, validation."""

from __future__ import annotations

from hyphal.config.duration import DurationError, format_duration, parse_duration, to_seconds
from hyphal.config.models import (
    KINDS,
    AuthorizationPolicy,
    DestinationRule,
    Metadata,
    PeerAuthentication,
    Resource,
    ResourceModel,
    Service,
    ServiceEntry,
    Source,
    VirtualService,
    Workload,
)

__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "DestinationRule",
    "DurationError",
    "Metadata",
    "PeerAuthentication",
    "Resource",
    "ResourceModel",
    "Service",
    "ServiceEntry",
    "Source",
    "VirtualService",
    "Workload",
    "format_duration",
    "parse_duration",
    "to_seconds",
]
