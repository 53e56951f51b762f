"""The sidecar's bootstrap file: load, validate and freeze it.

The file's shape is fixed by docs/xds-conventions.md ("`hyphal proxy --bootstrap FILE`").
Validation errors name the file and the field, so a person can fix the file without reading
this code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# --- validation: the user-facing edge -------------------------------------------------------
# A small hand-written checker rather than pydantic models: the sidecar imports nothing else
# of pydantic, and pydantic (its Rust core, model building, plugin discovery) cost ~10 MB of
# every sidecar's RSS. Errors keep the same `path: message` shape.

_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "TCP", "TLS", "HTTPS"})
_Fields = dict[str, tuple[Any, Any]]  # name -> (checker, default or _REQUIRED)
_REQUIRED = object()


class _Errors:
    """Collects every `path: message` found in one pass, as pydantic did."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, msg: str) -> None:
        self.lines.append(f"{path or '<root>'}: {msg}")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _str(min_length: int = 0) -> Any:
    def check(v: Any, path: str, errs: _Errors) -> Any:
        if not isinstance(v, str):
            errs.add(path, "Input should be a valid string")
        elif len(v) < min_length:
            errs.add(path, f"String should have at least {min_length} character")
        return v
    return check


def _int(lo: int, hi: int | None = None) -> Any:
    def check(v: Any, path: str, errs: _Errors) -> Any:
        numeric_str = isinstance(v, str) and v.strip().lstrip("-").isdigit()
        if numeric_str or (isinstance(v, float) and v.is_integer()):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            errs.add(path, "Input should be a valid integer")
        elif v < lo:
            errs.add(path, f"Input should be greater than or equal to {lo}")
        elif hi is not None and v > hi:
            errs.add(path, f"Input should be less than or equal to {hi}")
        return v
    return check


def _float(lo: float, hi: float) -> Any:
    def check(v: Any, path: str, errs: _Errors) -> Any:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errs.add(path, "Input should be a valid number")
        elif not lo <= v <= hi:
            errs.add(path, f"Input should be between {lo} and {hi}")
        else:
            v = float(v)
        return v
    return check


def _optional_str(v: Any, path: str, errs: _Errors) -> Any:
    return v if v is None else _str()(v, path, errs)


def _protocol(v: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(v, str):
        errs.add(path, "Input should be a valid string")
        return v
    v = v.upper()
    if v not in _PROTOCOLS:
        errs.add(path, f"Value error, unknown protocol {v!r} (use HTTP, HTTP2, GRPC or TCP)")
    return v


def _proxy_mode(v: Any, path: str, errs: _Errors) -> Any:
    if v not in ("sidecar", "grpc"):
        errs.add(path, "Input should be 'sidecar' or 'grpc'")
    return v


def _host_port(v: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(v, str):
        errs.add(path, "Input should be a valid string")
        return v
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        errs.add(path, f"Value error, {v!r} is not HOST:PORT (for example 127.0.0.1:15012)")
    return v


def _dict_of(value_check: Any) -> Any:
    def check(v: Any, path: str, errs: _Errors) -> Any:
        if not isinstance(v, dict):
            errs.add(path, "Input should be a valid dictionary")
            return v
        out = {}
        for key, item in v.items():
            out[key] = value_check(item, _join(path, key), errs)
        return out
    return check


def _list_of(item_check: Any) -> Any:
    def check(v: Any, path: str, errs: _Errors) -> Any:
        if not isinstance(v, list):
            errs.add(path, "Input should be a valid list")
            return v
        return [item_check(item, _join(path, i), errs) for i, item in enumerate(v)]
    return check


def _object(fields: _Fields, extra: bool = False) -> Any:
    """A JSON object with these fields; unknown keys are errors unless `extra` (kept as-is)."""

    def check(v: Any, path: str, errs: _Errors) -> Any:
        if not isinstance(v, dict):
            errs.add(path, "Input should be a valid dictionary or instance of a model")
            return v
        out: dict[str, Any] = {}
        for name, (field_check, default) in fields.items():
            if name in v:
                out[name] = field_check(v[name], _join(path, name), errs)
            elif default is _REQUIRED:
                errs.add(_join(path, name), "Field required")
            else:
                out[name] = default() if callable(default) else default
        for name, item in v.items():
            if name not in fields:
                if extra:
                    out[name] = item
                else:
                    errs.add(_join(path, name), "not supported (unknown field)")
        return out

    return check


_PORT = _object({
    "name": (_str(), ""),
    "port": (_int(1, 65535), _REQUIRED),
    "protocol": (_protocol, "HTTP"),
    "app_port": (_int(1, 65535), _REQUIRED),
    "inbound_port": (_int(0, 65535), _REQUIRED),
})
# Unknown metadata keys are passed through to the control plane as-is (it may know them).
_METADATA = _object({
    "NAMESPACE": (_str(1), _REQUIRED),
    "SERVICE_ACCOUNT": (_str(1), _REQUIRED),
    "WORKLOAD_NAME": (_str(), ""),
    "LABELS": (_dict_of(_str()), dict),
    "INSTANCE_IP": (_str(), "127.0.0.1"),
    "PROXY_MODE": (_proxy_mode, "sidecar"),
    "OUTBOUND_HTTP_PORT": (_int(0, 65535), 0),
    "PORTS": (_list_of(_PORT), list),
    "UPSTREAM_PORTS": (_dict_of(_int(-(2**63))), dict),
}, extra=True)
_TRACING = _object({
    "sampling": (_float(0.0, 1.0), 0.01),
    "otlp_file": (_optional_str, None),
    "otlp_http": (_optional_str, None),
})
_BOOTSTRAP = _object({
    "node": (_object({
        "id": (_str(1), _REQUIRED),
        "cluster": (_str(), ""),
        "metadata": (_METADATA, _REQUIRED),
    }), _REQUIRED),
    "xds_address": (_host_port, _REQUIRED),
    "ca_address": (_host_port, _REQUIRED),
    "root_cert_file": (_str(), _REQUIRED),
    "token_file": (_str(), _REQUIRED),
    "trust_domain": (_str(), "cluster.local"),
    "admin_port": (_int(0, 65535), 0),
    "access_log": (_str(), "-"),
    "cert_ttl_seconds": (_int(1), 86400),
    "tracing": (lambda v, p, e: v if v is None else _TRACING(v, p, e), None),
})


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


def parse_bootstrap(
    data: Any, source: str = "<bootstrap>", base_dir: Path | None = None
) -> Bootstrap:
    """Validate already-parsed JSON; relative file paths are resolved against `base_dir`."""
    errs = _Errors()
    m = _BOOTSTRAP(data, "", errs)
    if errs.lines:
        raise BootstrapError(
            "invalid bootstrap:\n  " + "\n  ".join(f"{source}: {line}" for line in errs.lines)
        )
    node_m = m["node"]
    md = node_m["metadata"]
    if md["PROXY_MODE"] != "sidecar":
        raise BootstrapError(
            f"{source}: node.metadata.PROXY_MODE: must be 'sidecar' for `hyphal proxy`"
        )
    base = base_dir or Path.cwd()
    ports = tuple(
        PortInfo(p["name"] or str(p["port"]), p["port"], p["protocol"], p["app_port"],
                 p["inbound_port"])
        for p in md["PORTS"]
    )
    node = NodeInfo(
        id=node_m["id"],
        cluster=node_m["cluster"] or md["WORKLOAD_NAME"],
        namespace=md["NAMESPACE"],
        service_account=md["SERVICE_ACCOUNT"],
        workload_name=md["WORKLOAD_NAME"],
        labels=tuple(sorted(md["LABELS"].items())),
        instance_ip=md["INSTANCE_IP"],
        proxy_mode=md["PROXY_MODE"],
        outbound_http_port=md["OUTBOUND_HTTP_PORT"],
        ports=ports,
        upstream_ports=tuple(sorted(md["UPSTREAM_PORTS"].items())),
        metadata_json=json.dumps(md, sort_keys=True),
    )
    tracing = m["tracing"]
    return Bootstrap(
        node=node,
        xds_address=m["xds_address"],
        ca_address=m["ca_address"],
        root_cert_file=base / m["root_cert_file"],
        token_file=base / m["token_file"],
        trust_domain=m["trust_domain"],
        admin_port=m["admin_port"],
        access_log=m["access_log"],
        cert_ttl_seconds=m["cert_ttl_seconds"],
        source=source,
        tracing=tuple(sorted(tracing.items())) if tracing else (),
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
