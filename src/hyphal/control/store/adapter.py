"""The store's one seam onto `hyphal.config`: parse, validate, build sets, dump resources.

Everything the store needs from the config package goes through these few functions, so
that a change in that package's API is absorbed here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hyphal import config

Key = tuple[str, str, str]  # (kind, namespace, name)
Resource = Any  # a hyphal.config ResourceModel (pydantic, frozen)


class ParseFailed(Exception):
    """Config text or files that did not load; `errors` are `file#doc: path: reason` lines."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


def _lines(exc: config.ConfigErrors) -> list[str]:
    return [str(e) for e in exc.errors] or [str(exc)]


def resources_of(rs: Iterable[Resource]) -> list[Resource]:
    """Every resource in a ResourceSet (or any iterable of resources)."""
    return list(rs)


def key_of(resource: Resource) -> Key:
    return (str(resource.kind), str(resource.metadata.namespace), str(resource.metadata.name))


def source_of(resource: Resource) -> str:
    src = getattr(resource, "source", None)
    return "" if src is None else str(src)


def source_file_of(resource: Resource) -> str:
    src = getattr(resource, "source", None)
    return "" if src is None else str(src.file)


def parse_text(text: str, source: str) -> list[Resource]:
    try:
        return list(config.load_text(text, source))
    except config.ConfigErrors as exc:
        raise ParseFailed(_lines(exc)) from None


def parse_dir(root: Path) -> list[Resource]:
    """Every resource under `root`; errors name files relative to it."""
    try:
        return list(config.load_paths([root]))
    except config.ConfigErrors as exc:
        raise ParseFailed(_lines(exc)) from None


def build_set(resources: Iterable[Resource]) -> config.ResourceSet:
    """A ResourceSet holding exactly `resources` (later ones win on a key collision)."""
    return config.ResourceSet(resources)


def validate_set(rs: config.ResourceSet, trust_domain: str = "cluster.local") -> list[str]:
    """Cross-resource errors of a would-be set ([] when it is good)."""
    return [str(e) for e in config.validate(rs, trust_domain)]


def to_json(resource: Resource) -> dict[str, Any]:
    """The resource as the user wrote it (camelCase, only the fields that were set)."""
    return config.to_dict(resource)


def same(a: Resource, b: Resource) -> bool:
    """Equal content, wherever each was loaded from."""
    return to_json(a) == to_json(b)


def dump_one(resource: Resource) -> str:
    return config.to_yaml(resource)
