"""What a store change produces: per-resource outcomes, errors, and references for delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import yaml

from hyphal.control.store import kinds

Action = Literal["created", "configured", "unchanged", "deleted"]


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A resource named by kind, namespace and name (kind already canonical)."""

    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @classmethod
    def make(cls, kind: str, name: str, namespace: str | None = None) -> ResourceRef:
        """Resolves kind aliases (`vs`, `virtualservices`); ValueError on an unknown kind."""
        if not name:
            raise ValueError(f"a {kind} reference needs a name")
        return cls(kinds.resolve(kind), namespace or "default", name)


def parse_refs(raw: Any) -> list[ResourceRef]:
    """`[{"kind", "name", "namespace"?}, ...]` (JSON) to references; ValueError if malformed."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("'resources' must be a non-empty list of {kind, name, namespace}")
    out: list[ResourceRef] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"resources[{i}] must be an object with kind, name, namespace")
        kind, name, ns = item.get("kind"), item.get("name"), item.get("namespace")
        if not isinstance(kind, str) or not isinstance(name, str):
            raise ValueError(f"resources[{i}]: 'kind' and 'name' are required strings")
        if ns is not None and not isinstance(ns, str):
            raise ValueError(f"resources[{i}]: 'namespace' must be a string")
        out.append(ResourceRef.make(kind, name, ns))
    return out


def refs_from_yaml(text: str, source: str) -> list[ResourceRef]:
    """The kind/namespace/name of each YAML document; only those fields need to be valid,
    so that a resource can be deleted with a file that no longer passes validation."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    out: list[ResourceRef] = []
    for i, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{source}#{i}"
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: a document must be a mapping with kind and metadata")
        kind = doc.get("kind")
        meta = doc.get("metadata")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"{where}: kind: required")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise ValueError(f"{where}: metadata.name: required")
        ns = meta.get("namespace")
        try:
            out.append(ResourceRef.make(kind, meta["name"], ns if isinstance(ns, str) else None))
        except ValueError as exc:
            raise ValueError(f"{where}: kind: {exc}") from None
    if not out:
        raise ValueError(f"{source}: no resources in the document(s)")
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    namespace: str
    name: str
    action: Action
    api_version: str = ""
    note: str = ""

    def to_json(self) -> dict[str, str]:
        out = {
            "kind": self.kind,
            "apiVersion": self.api_version,
            "namespace": self.namespace,
            "name": self.name,
            "action": self.action,
        }
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The answer to one change set: all of it happened (ok), or none of it did."""

    ok: bool
    generation: int
    outcomes: tuple[Outcome, ...] = ()
    errors: tuple[str, ...] = ()
    status: int = 0  # for refusals, the HTTP status that fits: 400, 404, 409 or 422

    @property
    def changed(self) -> bool:
        return self.ok and any(o.action != "unchanged" for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        if not self.ok:
            return {"errors": list(self.errors)}
        return {
            "generation": self.generation,
            "results": [o.to_json() for o in self.outcomes],
        }

    @classmethod
    def refused(
        cls, generation: int, status: int, errors: list[str] | tuple[str, ...]
    ) -> ChangeResult:
        return cls(ok=False, generation=generation, errors=tuple(errors), status=status)
