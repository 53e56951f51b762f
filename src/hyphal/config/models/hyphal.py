"""`hyphal.dev/v1alpha1` Service and Workload: the registry outside Kubernetes."""

from __future__ import annotations

import shlex
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, PlainValidator, field_validator

from hyphal.config.models.base import (
    Labels,
    Model,
    PortNumber,
    Protocol,
    ResourceModel,
    choice,
    fail,
    int_range,
)

__all__ = [
    "HYPHAL_API_VERSIONS",
    "Service",
    "ServicePort",
    "ServiceSpec",
    "Workload",
    "WorkloadPort",
    "WorkloadSpec",
]

HYPHAL_API_VERSIONS = ("hyphal.dev/v1alpha1",)


def _target_port(value: Any) -> int | str:
    if isinstance(value, str) and not value.isdigit():
        if not value:
            raise fail("must be a port number or a port name")
        return value
    return int_range(1, 65535)(value)


class ServicePort(Model):
    """One port of a Service: `port` is what clients dial; `targetPort` a Workload port."""

    name: str | None = None
    port: PortNumber
    protocol: Protocol = "HTTP"
    target_port: Annotated[int | str, PlainValidator(_target_port)] | None = None

    @property
    def target(self) -> int | str:
        """targetPort, or port when unset."""
        return self.port if self.target_port is None else self.target_port


class ServiceSpec(Model):
    ports: tuple[ServicePort, ...] = Field(min_length=1)
    selector: Labels = Field(default_factory=dict)

    @field_validator("ports")
    @classmethod
    def _unique(cls, ports: tuple[ServicePort, ...]) -> tuple[ServicePort, ...]:
        seen_n: set[int] = set()
        seen_name: set[str] = set()
        for p in ports:
            if p.port in seen_n:
                raise fail(f"port {p.port} is listed twice")
            seen_n.add(p.port)
            if p.name is not None:
                if p.name in seen_name:
                    raise fail(f"port name {p.name!r} is used twice")
                seen_name.add(p.name)
        if len(ports) > 1 and any(p.name is None for p in ports):
            raise fail("every port needs a name when a Service has several ports")
        return ports


class Service(ResourceModel):
    """A named, load-balanced set of Workloads (like a Kubernetes Service)."""

    KIND: ClassVar[str] = "Service"
    API_VERSIONS: ClassVar[tuple[str, ...]] = HYPHAL_API_VERSIONS
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec


class WorkloadPort(Model):
    """A port the workload's app listens on (the declared number; local mode may remap it)."""

    name: str | None = None
    port: PortNumber
    protocol: Protocol = "HTTP"


def _command(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise fail(f"cannot split command {value!r}: {exc}") from None
        if not parts:
            raise fail("must not be empty")
        return tuple(parts)
    if isinstance(value, (list, tuple)) and value:
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise fail("must be a list of strings")
        return tuple(str(v) for v in value)
    raise fail("must be a non-empty list of strings or a command line string")


def _args(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise fail("must be a list of strings")
        return tuple(str(v) for v in value)
    raise fail("must be a list of strings")


def _env_value(name: str, v: Any) -> str:
    if v is None or isinstance(v, (dict, list, tuple)):
        raise fail(f"env {name!r} must have a string value")
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _env(value: Any) -> dict[str, str]:
    """`env` as a mapping or as Kubernetes' list of {name, value}; always a dict after."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): _env_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out: dict[str, str] = {}
        for i, item in enumerate(value):
            if not isinstance(item, dict) or "name" not in item or set(item) - {"name", "value"}:
                raise fail(
                    f"item [{i}] must be {{name: ..., value: ...}} (valueFrom is not supported)"
                )
            out[str(item["name"])] = _env_value(str(item["name"]), item.get("value", ""))
        return out
    raise fail("must be a mapping NAME: value or a list of {name, value}")


class WorkloadSpec(Model):
    labels: Labels = Field(default_factory=dict)
    service_account: str = "default"
    ports: tuple[WorkloadPort, ...] = ()
    replicas: Annotated[int, PlainValidator(int_range(0, 1000))] = 1
    command: Annotated[tuple[str, ...] | None, BeforeValidator(_command)] = None
    args: Annotated[tuple[str, ...], BeforeValidator(_args)] = ()
    env: Annotated[dict[str, str], BeforeValidator(_env)] = Field(default_factory=dict)
    restart_policy: Annotated[
        Literal["Always", "OnFailure", "Never"], choice(("Always", "OnFailure", "Never"))
    ] = "Always"
    working_dir: str | None = None

    @field_validator("ports")
    @classmethod
    def _unique(cls, ports: tuple[WorkloadPort, ...]) -> tuple[WorkloadPort, ...]:
        seen: set[int] = set()
        names: set[str] = set()
        for p in ports:
            if p.port in seen:
                raise fail(f"port {p.port} is listed twice")
            seen.add(p.port)
            if p.name is not None:
                if p.name in names:
                    raise fail(f"port name {p.name!r} is used twice")
                names.add(p.name)
        return ports

    @property
    def argv(self) -> tuple[str, ...]:
        """command + args: what local mode executes (empty when no command is set)."""
        return (self.command or ()) + self.args


class Workload(ResourceModel):
    """A deployable unit: labels, identity, ports, replicas and (local mode) how to start it."""

    KIND: ClassVar[str] = "Workload"
    API_VERSIONS: ClassVar[tuple[str, ...]] = HYPHAL_API_VERSIONS
    kind: Literal["Workload"] = "Workload"
    spec: WorkloadSpec
