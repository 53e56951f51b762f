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


def parse_files(root: Path, files: Sequence[Path]) -> list[Resource]:
    """Every resource in `files` (under `root`); errors name files relative to `root`.

    All errors of all files are collected, including a resource defined in two places.
    """
    resources: list[Resource] = []
    errors: list[config.ConfigError] = []
    for path in files:
        name = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(config.ConfigError(name, 0, "", f"cannot read: {exc}"))
            continue
        found, problems = config.parse_text(text, name)
        resources.extend(found)
        errors.extend(problems)
    first: dict[Key, Resource] = {}
    for res in resources:
        prev = first.setdefault(key_of(res), res)
        if prev is not res:
            src = res.source
            errors.append(config.ConfigError(
                src.file if src else "<unknown>", src.document if src else 0, "metadata.name",
                f"duplicate {res.kind} {res.namespace}/{res.name}: "
                f"also defined at {source_of(prev)}",
            ))
    if errors:
        raise ParseFailed([str(e) for e in errors])
    return resources


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
