"""hyphal.config: user-facing resources — models, loading, validation.

rs = load_paths([Path("examples/shop")])   # raises ConfigErrors listing every problem
errors = validate(rs)                       # cross-resource problems, [] when consistent
for vs in rs.virtual_services: ...
"""

from __future__ import annotations

from hyphal.config.duration import DurationError, format_duration, parse_duration, to_seconds
from hyphal.config.errors import ConfigError, ConfigErrors
from hyphal.config.loader import load_paths, load_text, parse_text
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
from hyphal.config.resources import Key, ResourceSet, to_dict, to_yaml
from hyphal.config.validate import resolve_host, validate

__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "ConfigError",
    "ConfigErrors",
    "DestinationRule",
    "DurationError",
    "Key",
    "Metadata",
    "PeerAuthentication",
    "Resource",
    "ResourceModel",
    "ResourceSet",
    "Service",
    "ServiceEntry",
    "Source",
    "VirtualService",
    "Workload",
    "format_duration",
    "load_paths",
    "load_text",
    "parse_duration",
    "parse_text",
    "resolve_host",
    "to_dict",
    "to_seconds",
    "to_yaml",
    "validate",
]
