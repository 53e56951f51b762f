"""Load resources from YAML/JSON files, directories and text, collecting every error."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from pydantic import ValidationError

from hyphal.config.errors import ConfigError, ConfigErrors, format_path, from_validation_error
from hyphal.config.models import KINDS, Resource, ResourceModel, Source
from hyphal.config.resources import Key, ResourceSet

__all__ = ["SUFFIXES", "load_paths", "load_text", "parse_document", "parse_text"]

SUFFIXES = (".yaml", ".yml", ".json")

# Kinds a user may reasonably write that hyphal does not implement (yet).
_KNOWN_UNSUPPORTED = {
    "Gateway",
    "Sidecar",
    "RequestAuthentication",
    "WorkloadEntry",
    "WorkloadGroup",
    "EnvoyFilter",
    "Telemetry",
    "ProxyConfig",
    "WasmPlugin",
    "HTTPRoute",
    "GRPCRoute",
    "TCPRoute",
    "TLSRoute",
}

if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader
else:  # the C loader when libyaml is there: same behaviour, several times faster
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """Safe loader that refuses duplicate mapping keys (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hashable = key in seen
            except TypeError:
                continue
            if hashable:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return cast("dict[Any, Any]", super().construct_mapping(node, deep=deep))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {text}"
    return f"invalid YAML: {text}"


def parse_document(
    doc: Any, source: str, document: int, prefix: Sequence[int | str] = ()
) -> tuple[list[Resource], list[ConfigError]]:
    """Validate one parsed YAML document (a resource or a `kind: List`)."""

    def err(path: Sequence[int | str], reason: str) -> ConfigError:
        return ConfigError(source, document, format_path([*prefix, *path]), reason)

    if not isinstance(doc, dict):
        return [], [err((), "a resource must be a mapping with apiVersion, kind, metadata, spec")]
    kind = doc.get("kind")
    if kind == "List":
        items = doc.get("items")
        if not isinstance(items, list):
            return [], [err(("items",), "a List needs items: a list of resources")]
        out: list[Resource] = []
        errs: list[ConfigError] = []
        for i, item in enumerate(items):
            rs, es = parse_document(item, source, document, [*prefix, "items", i])
            out.extend(rs)
            errs.extend(es)
        return out, errs
    missing = [f for f in ("apiVersion", "kind") if f not in doc]
    if missing:
        return [], [err((f,), "required") for f in missing]
    supported = ", ".join(KINDS)
    if not isinstance(kind, str) or kind not in KINDS:
        why = "not supported by hyphal" if kind in _KNOWN_UNSUPPORTED else "unknown kind"
        return [], [err(("kind",), f"{kind!r}: {why} (supported kinds: {supported})")]
    model = KINDS[kind]
    try:
        resource = model.model_validate(doc)
    except ValidationError as exc:
        return [], from_validation_error(exc, source, document, prefix=prefix, model=model)
    return [cast("Resource", resource.with_source(Source(file=source, document=document)))], []


def parse_text(text: str, source_name: str) -> tuple[list[Resource], list[ConfigError]]:
    """Every resource in a multi-document YAML (or JSON) text, and every error found."""
    resources: list[Resource] = []
    errors: list[ConfigError] = []
    document = 0
    try:
        for doc in yaml.load_all(text, Loader=_Loader):
            document += 1
            if doc is None:
                continue  # an empty document ("---" twice, or a comment-only file)
            rs, es = parse_document(doc, source_name, document)
            resources.extend(rs)
            errors.extend(es)
    except yaml.YAMLError as exc:
        errors.append(ConfigError(source_name, document + 1, "", _yaml_reason(exc)))
    return resources, errors


def load_text(text: str, source_name: str) -> list[Resource]:
    """Resources in `text`; raises ConfigErrors listing every problem."""
    resources, errors = parse_text(text, source_name)
    errors.extend(_duplicates(resources))
    if errors:
        raise ConfigErrors(errors)
    return resources


def _files(path: Path) -> list[tuple[Path, str]]:
    if path.is_dir():
        # Hidden files and folders (.hyphal run state, .git, editor swap files) are not config.
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        return [(p, p.relative_to(path).as_posix()) for p in found]
    return [(path, str(path))]


def _duplicates(resources: Iterable[ResourceModel]) -> list[ConfigError]:
    first: dict[Key, ResourceModel] = {}
    errors: list[ConfigError] = []
    for r in resources:
        prev = first.setdefault(r.key, r)
        if prev is r:
            continue
        src = r.source or Source(file="<unknown>", document=0)
        errors.append(
            ConfigError(
                src.file,
                src.document,
                "metadata.name",
                f"duplicate {r.kind} {r.namespace}/{r.name}: also defined at {prev.source}",
            )
        )
    return errors


def load_paths(paths: Iterable[Path | str] | Path | str) -> ResourceSet:
    """Load files and directories (recursively: *.yaml, *.yml, *.json, in sorted order).

    A file's errors name it as given; a directory's files are named relative to it.

    Raises ConfigErrors with every problem in every file, including resources defined twice.
    """
    resources: list[Resource] = []
    errors: list[ConfigError] = []
    for given in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(given)
        if not path.exists():
            errors.append(ConfigError(str(path), 0, "", "no such file or directory"))
            continue
        for file, name in _files(path):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(ConfigError(name, 0, "", f"cannot read: {exc}"))
                continue
            rs, es = parse_text(text, name)
            resources.extend(rs)
            errors.extend(es)
    errors.extend(_duplicates(resources))
    if errors:
        raise ConfigErrors(errors)
    return ResourceSet(resources)
