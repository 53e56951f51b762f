"""The control plane's config store: config-dir + API-applied resources, versioned, all-or-nothing."""

from hyphal.control.store.changes import (
    ChangeResult,
    Outcome,
    ResourceRef,
    parse_refs,
    refs_from_yaml,
)
from hyphal.control.store.store import Store, StoreLoadError, StoreState

__all__ = [
    "ChangeResult",
    "Outcome",
    "ResourceRef",
    "Store",
    "StoreLoadError",
    "StoreState",
    "parse_refs",
    "refs_from_yaml",
]
