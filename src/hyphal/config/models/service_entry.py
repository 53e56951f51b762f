"""`networking.istio.io` ServiceEntry: hosts outside the registry (external APIs, databases)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PlainValidator, field_validator, model_validator

from hyphal.config.models.base import (
    ExportTo,
    Labels,
    Model,
    PortNumber,
    Protocol,
    ResourceModel,
    choice,
    fail,
    int_range,
)
from hyphal.config.models.virtual_service import NETWORKING_API_VERSIONS

__all__ = ["ServiceEntry", "ServiceEntryPort", "ServiceEntrySpec", "WorkloadEntry"]


class ServiceEntryPort(Model):
    number: PortNumber
    protocol: Protocol = "TCP"
    name: str | None = None
    target_port: PortNumber | None = None


class WorkloadEntry(Model):
    address: str = Field(min_length=1)
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    weight: Annotated[int, PlainValidator(int_range(1, 2**32 - 1))] | None = None
    service_account: str | None = None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ServiceEntrySpec(Model):
    hosts: tuple[str, ...] = Field(min_length=1)
    addresses: tuple[str, ...] = ()
    ports: tuple[ServiceEntryPort, ...] = Field(min_length=1)
    location: Annotated[
        Literal["MESH_EXTERNAL", "MESH_INTERNAL"], choice(("MESH_EXTERNAL", "MESH_INTERNAL"))
    ] = "MESH_EXTERNAL"
    resolution: Annotated[
        Literal["NONE", "STATIC", "DNS"],
        choice(("NONE", "STATIC", "DNS"), ("DNS_ROUND_ROBIN",)),
    ] = "NONE"
    endpoints: tuple[WorkloadEntry, ...] = ()
    export_to: ExportTo = ()

    @field_validator("ports")
    @classmethod
    def _unique(cls, ports: tuple[ServiceEntryPort, ...]) -> tuple[ServiceEntryPort, ...]:
        seen: set[int] = set()
        for p in ports:
            if p.number in seen:
                raise fail(f"port {p.number} is listed twice")
            seen.add(p.number)
        return ports

    @model_validator(mode="after")
    def _endpoints(self) -> ServiceEntrySpec:
        if self.resolution == "STATIC":
            if not self.endpoints:
                raise fail("resolution STATIC needs endpoints")
            bad = [e.address for e in self.endpoints if not _is_ip(e.address)]
            if bad:
                raise fail(f"resolution STATIC needs IP addresses in endpoints (got {bad[0]!r})")
        names = {p.name for p in self.ports if p.name}
        for e in self.endpoints:
            for n in e.ports:
                if n not in names:
                    raise fail(f"endpoint {e.address} names port {n!r}, which is not in ports")
        return self


class ServiceEntry(ResourceModel):
    KIND: ClassVar[str] = "ServiceEntry"
    API_VERSIONS: ClassVar[tuple[str, ...]] = NETWORKING_API_VERSIONS
    kind: Literal["ServiceEntry"] = "ServiceEntry"
    spec: ServiceEntrySpec
