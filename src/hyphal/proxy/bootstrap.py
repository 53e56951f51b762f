"""The sidecar's bootstrap file: load, validate (pydantic) and freeze it.

The file's shape is fixed by docs/xds-conventions.md ("`hyphal proxy --bootstrap FILE`").
Validation errors name the file and the field, so a person can fix the file without reading
this code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from hyphal.telemetry.tracing import TracingSettings

__all__ = [
    "Bootstrap",
    "BootstrapError",
    "NodeInfo",
    "PortInfo",
    "load_bootstrap",
    "parse_bootstrap",
]


class BootstrapError(Exception):
    """The bootstrap file is missing, unreadable or invalid; the message says what to fix."""


# --- pydantic models: the user-facing edge -------------------------------------------------


class _Port(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    port: int = Field(ge=1, le=65535)
    protocol: str = "HTTP"
    app_port: int = Field(ge=1, le=65535)
    inbound_port: int = Field(ge=0, le=65535)

    @field_validator("protocol")
    @classmethod
    def _upper(cls, v: str) -> str:
        v = v.upper()
        if v not in {"HTTP", "HTTP2", "GRPC", "TCP", "TLS", "HTTPS"}:
            raise ValueError(f"unknown protocol {v!r} (use HTTP, HTTP2, GRPC or TCP)")
        return v


class _Metadata(BaseModel):
    # Unknown keys are passed through to the control plane as-is (it may know them).
    model_config = ConfigDict(extra="allow")

    NAMESPACE: str = Field(min_length=1)
    SERVICE_ACCOUNT: str = Field(min_length=1)
    WORKLOAD_NAME: str = ""
    LABELS: dict[str, str] = Field(default_factory=dict)
    INSTANCE_IP: str = "127.0.0.1"
    PROXY_MODE: Literal["sidecar", "grpc"] = "sidecar"
    OUTBOUND_HTTP_PORT: int = Field(default=0, ge=0, le=65535)
    PORTS: list[_Port] = Field(default_factory=list)
    UPSTREAM_PORTS: dict[str, int] = Field(default_factory=dict)


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    cluster: str = ""
    metadata: _Metadata


class _Tracing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sampling: float = Field(default=0.01, ge=0.0, le=1.0)
    otlp_file: str | None = None
    otlp_http: str | None = None


class _Bootstrap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: _Node
    xds_address: str
    ca_address: str
    root_cert_file: str
    token_file: str
    trust_domain: str = "cluster.local"
    admin_port: int = Field(default=0, ge=0, le=65535)
    access_log: str = "-"
    cert_ttl_seconds: int = Field(default=86400, ge=1)
    tracing: _Tracing | None = None

    @field_validator("xds_address", "ca_address")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{v!r} is not HOST:PORT (for example 127.0.0.1:15012)")
        return v


# --- frozen runtime structures --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One workload port: declared number, where the app listens, where the sidecar's inbound is."""

    name: str
    port: int
    protocol: str
    app_port: int
    inbound_port: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The xDS node this sidecar announces (`DiscoveryRequest.node`)."""

    id: str
    cluster: str
    namespace: str
    service_account: str
    workload_name: str
    labels: tuple[tuple[str, str], ...]
    instance_ip: str
    proxy_mode: str
    outbound_http_port: int
    ports: tuple[PortInfo, ...]
    upstream_ports: tuple[tuple[str, int], ...]
    # The metadata exactly as written in the file (JSON-compatible), sent as the node Struct.
    metadata_json: str

    def metadata(self) -> dict[str, Any]:
        """A fresh copy of the node metadata as plain JSON values."""
        value: dict[str, Any] = json.loads(self.metadata_json)
        return value


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Everything a sidecar needs to start, validated."""

    node: NodeInfo
    xds_address: str
    ca_address: str
    root_cert_file: Path
    token_file: Path
    trust_domain: str
    admin_port: int
    access_log: str
    cert_ttl_seconds: int
    source: str = "<bootstrap>"
    # The `tracing` block as written (sampling, otlp_file, otlp_http); see telemetry/tracing.py.
    tracing: tuple[tuple[str, Any], ...] = ()

    @property
    def spiffe_id(self) -> str:
        """The identity this sidecar asks the CA for."""
        n = self.node
        return f"spiffe://{self.trust_domain}/ns/{n.namespace}/sa/{n.service_account}"

    def read_token(self) -> str:
        """The bearer token for the CA, re-read each time (the file may be rotated)."""
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise BootstrapError(
                f"{self.source}: token_file {str(self.token_file)!r} cannot be read: "
                f"{exc.strerror or exc}; create it with `hyphal token create`"
            ) from exc
        if not token:
            raise BootstrapError(f"{self.source}: token_file {str(self.token_file)!r} is empty")
        return token

    def read_root_pem(self) -> bytes:
        """The PEM roots that verify the control plane (CA and ADS endpoints)."""
        try:
            data = self.root_cert_file.read_bytes()
        except OSError as exc:
            raise BootstrapError(
                f"{self.source}: root_cert_file {str(self.root_cert_file)!r} cannot be read: "
                f"{exc.strerror or exc}"
            ) from exc
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise BootstrapError(
                f"{self.source}: root_cert_file {str(self.root_cert_file)!r} holds no PEM "
                "certificate"
            )
        return data


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "not supported (unknown field)"
        lines.append(f"{source}: {path}: {msg}")
    return "invalid bootstrap:\n  " + "\n  ".join(lines)


def parse_bootstrap(
    data: Any, source: str = "<bootstrap>", base_dir: Path | None = None
) -> Bootstrap:
    """Validate already-parsed JSON; relative file paths are resolved against `base_dir`."""
    try:
        m = _Bootstrap.model_validate(data)
    except ValidationError as exc:
        raise BootstrapError(_format_errors(source, exc)) from None
    md = m.node.metadata
    if md.PROXY_MODE != "sidecar":
        raise BootstrapError(
            f"{source}: node.metadata.PROXY_MODE: must be 'sidecar' for `hyphal proxy`"
        )
    base = base_dir or Path.cwd()
    ports = tuple(
        PortInfo(p.name or str(p.port), p.port, p.protocol, p.app_port, p.inbound_port)
        for p in md.PORTS
    )
    node = NodeInfo(
        id=m.node.id,
        cluster=m.node.cluster or md.WORKLOAD_NAME,
        namespace=md.NAMESPACE,
        service_account=md.SERVICE_ACCOUNT,
        workload_name=md.WORKLOAD_NAME,
        labels=tuple(sorted(md.LABELS.items())),
        instance_ip=md.INSTANCE_IP,
        proxy_mode=md.PROXY_MODE,
        outbound_http_port=md.OUTBOUND_HTTP_PORT,
        ports=ports,
        upstream_ports=tuple(sorted(md.UPSTREAM_PORTS.items())),
        metadata_json=json.dumps(md.model_dump(mode="json"), sort_keys=True),
    )
    return Bootstrap(
        node=node,
        xds_address=m.xds_address,
        ca_address=m.ca_address,
        root_cert_file=base / m.root_cert_file,
        token_file=base / m.token_file,
        trust_domain=m.trust_domain,
        admin_port=m.admin_port,
        access_log=m.access_log,
        cert_ttl_seconds=m.cert_ttl_seconds,
        source=source,
        tracing=tuple(sorted(m.tracing.model_dump().items())) if m.tracing else (),
    )


def load_bootstrap(path: str | Path) -> Bootstrap:
    """Read and validate a bootstrap JSON file; raises BootstrapError with a readable message."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BootstrapError(
            f"bootstrap file {str(p)!r} cannot be read: {exc.strerror or exc}"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BootstrapError(
            f"{p}: line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    bootstrap = parse_bootstrap(data, source=str(p), base_dir=p.parent.resolve())
    tracing_settings(bootstrap)  # a bad tracing block is a bootstrap error, reported at load
    return bootstrap


def tracing_settings(bootstrap: Bootstrap) -> TracingSettings:
    """The `tracing` block with HYPHAL_TRACE_* variables applied; BootstrapError if invalid."""
    from hyphal.telemetry.tracing import settings_from

    try:
        return settings_from(dict(bootstrap.tracing), source=f"{bootstrap.source}: tracing")
    except ValueError as exc:
        raise BootstrapError(str(exc)) from None


def install_tracer(bootstrap: Bootstrap) -> None:
    """Install the process tracer the data plane reads per request (telemetry/tracing.py)."""
    from hyphal.telemetry.otlp import start_tracer
    from hyphal.telemetry.tracing import install

    settings = tracing_settings(bootstrap)
    n = bootstrap.node
    install(start_tracer(settings, (
        ("service.name", n.workload_name or n.cluster),
        ("service.namespace", n.namespace),
        ("service.instance.id", n.id),
        ("hyphal.identity", bootstrap.spiffe_id),
    )))
