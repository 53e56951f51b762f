"""The store's one seam onto `hyphal.config`: parse, validate, build sets, dump resources.

Everything the store needs from the config package goes through these few functions, so
that a change in that package's API is absorbed here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from hyphal import config

Key = tuple[str, str, str]  # (kind, namespace, name)
Resource = Any  # a hyphal.config ResourceModel (pydantic, frozen)


class ParseFailed(Exception):
    """Config text or files that did not load; `errors` are `file#doc: path: reason` lines."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


def _error_lines(exc: BaseException) -> list[str]:
    errs = getattr(exc, "errors", None)
    if callable(errs):
        errs = errs()
    if isinstance(errs, (list, tuple)) and errs:
        return [str(e) for e in errs]
    return [str(exc)]


def _config_error_types() -> tuple[type[BaseException], ...]:
    names = ("ConfigErrors", "ConfigError")
    return tuple(t for n in names if isinstance(t := getattr(config, n, None), type))


def resources_of(rs: Any) -> list[Resource]:
    """Every resource in a ResourceSet (or any iterable of resources)."""
    if hasattr(rs, "resources"):
        items = rs.resources
        items = items() if callable(items) else items
    else:
        items = rs
    if isinstance(items, dict):
        items = items.values()
    return list(items)


def key_of(resource: Resource) -> Key:
    return (str(resource.kind), str(resource.metadata.namespace), str(resource.metadata.name))


def source_of(resource: Resource) -> str:
    src = getattr(resource, "source", None)
    return "" if src is None else str(src)


def source_file_of(resource: Resource) -> str:
    src = getattr(resource, "source", None)
    return "" if src is None else str(getattr(src, "file", src))


def parse_text(text: str, source: str) -> list[Resource]:
    try:
        rs = config.load_text(text, source)
    except _config_error_types() as exc:
        raise ParseFailed(_error_lines(exc)) from None
    return resources_of(rs)


def parse_paths(paths: Sequence[Path]) -> list[Resource]:
    if not paths:
        return []
    try:
        rs = config.load_paths(list(paths))
    except _config_error_types() as exc:
        raise ParseFailed(_error_lines(exc)) from None
    return resources_of(rs)


def build_set(resources: Iterable[Resource]) -> Any:
    """A ResourceSet holding exactly `resources` (keys are unique by construction)."""
    return config.ResourceSet(list(resources))


def validate_set(rs: Any) -> list[str]:
    """Cross-resource errors of a would-be set ([] when it is good)."""
    try:
        result = config.validate(rs)
    except _config_error_types() as exc:
        return _error_lines(exc)
    if result is None:
        return []
    return [str(e) for e in resources_of(result)] if not isinstance(result, list) else [
        str(e) for e in result
    ]


def to_json(resource: Resource) -> dict[str, Any]:
    data = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert isinstance(data, dict)
    return data


def same(a: Resource, b: Resource) -> bool:
    """Equal content, wherever each was loaded from."""
    return to_json(a) == to_json(b)


def dump_one(resource: Resource) -> str:
    return yaml.safe_dump(to_json(resource), sort_keys=False, default_flow_style=False)
