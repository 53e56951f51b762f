"""Config errors that point at a file, a document and a field: `file#doc: path: reason`."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "ConfigErrors", "format_path", "from_validation_error"]


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in the user's config. `str()` is `shop/vs.yaml#2: spec.hosts[0]: reason`."""

    source: str
    document: int
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}#{self.document}" if self.document else self.source
        return f"{where}: {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"


class ConfigErrors(Exception):
    """Every problem found, not only the first; `errors` keeps them in file order."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors: list[ConfigError] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def format_path(loc: Sequence[int | str]) -> str:
    """`("spec", "http", 0, "route")` -> `spec.http[0].route`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


# Istio fields that hyphal knows about but does not implement, with what to do instead.
_UNSUPPORTED_HINTS: dict[str, str] = {
    "tls": "TLS/SNI routing; route the port with tcp[] instead",
    "requestPrincipals": "needs RequestAuthentication, which hyphal does not support",
    "notRequestPrincipals": "needs RequestAuthentication, which hyphal does not support",
    "remoteIpBlocks": "use ipBlocks",
    "notRemoteIpBlocks": "use notIpBlocks",
    "directResponse": "route to a service that answers instead",
    "delegate": "write the routes in one VirtualService",
    "localityLbSetting": "hyphal has no localities",
    "workloadSelector": "a DestinationRule applies to every client of its host",
    "targetRef": "use selector",
    "targetRefs": "use selector",
    "provider": "CUSTOM authorization is not supported",
    "valueFrom": "write value",
    "consecutiveErrors": "use consecutive5xxErrors",
}

_TYPE_REASONS: dict[str, str] = {
    "missing": "required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            out.extend(_models_in(arg))
    return out


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that holds the field at `loc` (walking aliases, lists and dicts)."""
    current: list[type[BaseModel]] = [root]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for model in current:
            by_alias = {(f.alias or n): f for n, f in model.model_fields.items()}
            field = by_alias.get(part)
            if field is not None:
                nxt.extend(_models_in(field.annotation))
        if not nxt:
            # A dict key (e.g. a header name): stay on the value models found so far.
            continue
        current = nxt
    return current[0] if current else None


def _unsupported(root: type[BaseModel] | None, loc: Sequence[int | str]) -> str:
    name = str(loc[-1]) if loc else ""
    reason = "not supported by hyphal"
    if name in _UNSUPPORTED_HINTS:
        return f"{reason} ({_UNSUPPORTED_HINTS[name]})"
    model = _model_at(root, loc) if root is not None else None
    if model is not None:
        fields = [(f.alias or n) for n, f in model.model_fields.items()]
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.75)
        if close:
            return f"{reason} (did you mean {close[0]}?)"
    return reason


def from_validation_error(
    exc: ValidationError,
    source: str,
    document: int,
    *,
    prefix: Sequence[int | str] = (),
    model: type[BaseModel] | None = None,
) -> list[ConfigError]:
    """Turn pydantic's errors into ConfigErrors with camelCase paths and plain reasons."""
    raw = exc.errors(include_url=False, include_input=False)
    locs = [tuple(e["loc"]) for e in raw]
    out: list[ConfigError] = []
    for err, loc in zip(raw, locs, strict=True):
        kind = err["type"]
        if kind == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
            continue  # an item inside failed; pydantic then also says the list is "too short"
        if kind == "extra_forbidden":
            reason = _unsupported(model, loc)
        elif kind == "literal_error":
            expected = str(err.get("ctx", {}).get("expected", ""))
            reason = "must be true" if expected == "True" else f"must be {expected}"
        elif kind in _TYPE_REASONS:
            reason = _TYPE_REASONS[kind]
        else:
            reason = str(err["msg"]).removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
            reason = f"key {reason}"
        path = format_path([*prefix, *loc])
        e = ConfigError(source, document, path, reason)
        if e not in out:
            out.append(e)
    return out
