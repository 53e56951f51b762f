"""The control plane's config store: config-dir + API-applied resources, versioned, all-or-nothing.

Names are loaded lazily, so that the CLI can use `kinds` and `watch` without paying for the
pydantic models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hyphal.control.store.changes import (
        ChangeResult as ChangeResult,
    )
    from hyphal.control.store.changes import (
        Outcome as Outcome,
    )
    from hyphal.control.store.changes import (
        ResourceRef as ResourceRef,
    )
    from hyphal.control.store.changes import (
        parse_refs as parse_refs,
    )
    from hyphal.control.store.changes import (
        refs_from_yaml as refs_from_yaml,
    )
    from hyphal.control.store.store import Store as Store
    from hyphal.control.store.store import StoreLoadError as StoreLoadError
    from hyphal.control.store.store import StoreState as StoreState

_WHERE = {
    "ChangeResult": "changes",
    "Outcome": "changes",
    "ResourceRef": "changes",
    "parse_refs": "changes",
    "refs_from_yaml": "changes",
    "Store": "store",
    "StoreLoadError": "store",
    "StoreState": "store",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
