"""Building blocks shared by every user-facing model: base class, metadata, field types."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from hyphal.config.duration import DurationError, format_duration, parse_duration

__all__ = [
    "PROTOCOLS",
    "Duration",
    "ExportTo",
    "Labels",
    "Metadata",
    "Model",
    "Percent",
    "PortNumber",
    "Protocol",
    "ResourceModel",
    "Source",
    "Weight",
    "choice",
    "exactly_one",
    "fail",
    "int_range",
]


def fail(reason: str) -> PydanticCustomError:
    """An error whose text reaches the user as is (after `file#doc: path:`)."""
    # No context is passed, so pydantic leaves braces in `reason` as they are.
    return PydanticCustomError("hyphal", reason)


class Model(BaseModel):
    """Base of every user-facing model: camelCase aliases, unknown fields refused, frozen."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=False,
        hide_input_in_errors=True,
    )


def exactly_one(model: BaseModel, names: tuple[str, ...], *, at_most: bool = False) -> None:
    """Raise unless exactly one (or, with at_most, at most one) of the named fields is set."""
    fields = type(model).model_fields
    aliases = [fields[n].alias or n for n in names]
    set_ = [fields[n].alias or n for n in names if getattr(model, n) is not None]
    if len(set_) > 1:
        raise fail(f"set only one of {', '.join(aliases)} (got {', '.join(set_)})")
    if not set_ and not at_most:
        raise fail(f"set one of {', '.join(aliases)}")


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise fail(str(exc)) from None


Duration = Annotated[
    timedelta,
    PlainValidator(_duration, json_schema_input_type=str),
    PlainSerializer(format_duration, return_type=str),
]
"""A duration written as "1.5s", "100ms", "2m" (parsed to `datetime.timedelta`)."""


def int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise fail(f"must be an integer {lo}..{hi}")
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise fail(f"must be an integer {lo}..{hi}")
        if not lo <= value <= hi:
            raise fail(f"must be {lo}..{hi}")
        return value

    return check


def _percent(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail("must be a number 0..100")
    if not 0 <= value <= 100:
        raise fail("must be 0..100")
    return float(value)


PortNumber = Annotated[int, PlainValidator(int_range(1, 65535), json_schema_input_type=int)]
Weight = Annotated[int, PlainValidator(int_range(0, 100), json_schema_input_type=int)]
Percent = Annotated[float, PlainValidator(_percent, json_schema_input_type=float)]


def choice(
    supported: tuple[str, ...],
    unsupported: tuple[str, ...] = (),
    *,
    upper: bool = False,
    hint: str = "",
) -> BeforeValidator:
    """A validator for an enum field: a clear error for Istio values hyphal does not support."""

    def check(value: Any) -> Any:
        if isinstance(value, str):
            v = value.upper() if upper else value
            if v in supported:
                return v
            if v in unsupported:
                extra = f"; {hint}" if hint else ""
                raise fail(
                    f"{v} is not supported by hyphal (supported: {', '.join(supported)}){extra}"
                )
        raise fail(f"must be one of {', '.join(supported)} (got {value!r})")

    return BeforeValidator(check)


def _export_to(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        for v in value:
            if v != "*":
                raise fail(
                    f"exportTo {v!r} is not supported by hyphal: every resource is visible "
                    'mesh-wide; write ["*"] or leave exportTo out'
                )
    return value


ExportTo = Annotated[tuple[str, ...], BeforeValidator(_export_to)]
"""exportTo: only "*" (hyphal resources are visible in every namespace)."""

PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "TCP")
Protocol = Annotated[
    str,
    choice(
        PROTOCOLS,
        ("HTTPS", "TLS", "MONGO", "REDIS", "MYSQL", "UDP"),
        upper=True,
        hint="use TCP for opaque traffic",
    ),
]
"""A port protocol: HTTP, HTTP2, GRPC or TCP (case-insensitive in input, upper-case after)."""

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail("must be a mapping of label names to values")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise fail(f"label name {k!r} must be a non-empty string")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise fail(f"label {k!r} must have a string value")
        sv = str(v)
        if not _LABEL_VALUE.match(sv):
            raise fail(f"label {k!r} has an invalid value {sv!r} (letters, digits, '-', '_', '.')")
        out[k] = sv
    return out


Labels = Annotated[dict[str, str], BeforeValidator(_labels)]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _DNS_SUBDOMAIN.match(value) or ".." in value:
        raise fail(
            f"{value!r} is not a valid name: use lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _namespace(value: Any) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise fail(
            f"{value!r} is not a valid namespace: use at most 63 lower-case letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return value


class Metadata(Model):
    """`metadata`: name (required), namespace (default "default"), labels, annotations."""

    name: Annotated[str, AfterValidator(_name)]
    namespace: Annotated[str, AfterValidator(_namespace)] = "default"
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Source(BaseModel):
    """Where a resource was read: file (relative to the loaded directory) and document (1-based)."""

    model_config = ConfigDict(frozen=True)
    file: str
    document: int

    def __str__(self) -> str:
        return f"{self.file}#{self.document}"


class ResourceModel(Model):
    """A top-level resource: apiVersion, kind, metadata, spec. Subclasses set KIND/API_VERSIONS."""

    KIND: ClassVar[str] = ""
    API_VERSIONS: ClassVar[tuple[str, ...]] = ()

    api_version: str
    kind: str
    metadata: Metadata
    _source: Source | None = PrivateAttr(default=None)

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, av: str) -> str:
        if av not in cls.API_VERSIONS:
            raise fail(
                f"{av!r} is not supported for {cls.KIND} (supported: {', '.join(cls.API_VERSIONS)})"
            )
        return av

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> tuple[str, str, str]:
        """`(kind, namespace, name)`: the resource's identity in a ResourceSet."""
        return (self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def source(self) -> Source | None:
        """Where this resource was loaded from (None when built in code)."""
        return self._source

    def to_yaml(self) -> str:
        """The resource as YAML, by alias, only the fields that were set (round-trips)."""
        from hyphal.config.resources import to_yaml  # late: resources imports the models

        return to_yaml(self)

    def with_source(self, source: Source | None) -> Self:
        """A copy that remembers `source`."""
        copy = self.model_copy()
        copy._source = source
        return copy
