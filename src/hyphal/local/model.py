"""What the local runner needs to know about Workloads and Services, as frozen dataclasses.

`hyphal.config` owns the user-facing models; this module adapts its `ResourceSet` into the few
fields the supervisor uses, so the runner's mechanics can be built and tested on their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

RestartPolicy = Literal["Always", "OnFailure", "Never"]
_RESTART_POLICIES: tuple[RestartPolicy, ...] = ("Always", "OnFailure", "Never")


def _is_restart_policy(value: str) -> TypeGuard[RestartPolicy]:
    return value in _RESTART_POLICIES


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One declared port: its name, the number callers use, and its protocol."""

    name: str
    port: int
    protocol: str = "HTTP"

    @property
    def is_tcp(self) -> bool:
        return self.protocol.upper() in ("TCP", "TLS", "MONGO", "REDIS", "MYSQL")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A Workload as the runner sees it: how many replicas, what to run, who it is."""

    name: str
    namespace: str
    service_account: str
    labels: Mapping[str, str]
    ports: tuple[PortSpec, ...]
    command: tuple[str, ...]
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    restart_policy: RestartPolicy = "Always"
    working_dir: str | None = None

    @property
    def is_job(self) -> bool:
        return self.restart_policy != "Always"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Service: a name in a namespace with ports, selecting workloads by labels."""

    name: str
    namespace: str
    ports: tuple[PortSpec, ...]
    selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class MeshSpec:
    """Everything `hyphal up` starts: the config directory, its workloads and services."""

    config_dir: Path
    workloads: tuple[WorkloadSpec, ...]
    services: tuple[ServiceSpec, ...]


def env_name(name: str) -> str:
    """`product-v1` -> `PRODUCT_V1`: a name made fit for an environment variable."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


# ---- adapting hyphal.config's objects (duck-typed: pydantic models or plain mappings) ----


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj and obj[name] is not None:
                return obj[name]
        else:
            value = getattr(obj, name, None)
            if value is not None:
                return value
    return default


def _meta_and_spec(obj: Any) -> tuple[Any, Any]:
    meta = _get(obj, "metadata", default=obj)
    spec = _get(obj, "spec", default=obj)
    return meta, spec


def _ports(raw: Iterable[Any] | None) -> tuple[PortSpec, ...]:
    out: list[PortSpec] = []
    for i, p in enumerate(raw or ()):
        number = int(_get(p, "port", "number", "container_port", "containerPort"))
        protocol = str(_get(p, "protocol", default="HTTP"))
        name = str(_get(p, "name", default=protocol.lower() if i == 0 else f"port-{number}"))
        out.append(PortSpec(name=name, port=number, protocol=protocol))
    return tuple(out)


def _env(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    out: dict[str, str] = {}
    for item in raw:
        out[str(_get(item, "name"))] = str(_get(item, "value", default=""))
    return out


def workload_from_config(obj: Any) -> WorkloadSpec:
    meta, spec = _meta_and_spec(obj)
    name = str(_get(meta, "name"))
    namespace = str(_get(meta, "namespace", default="default"))
    labels = {str(k): str(v) for k, v in dict(_get(spec, "labels", default={}) or {}).items()}
    if not labels:
        labels = {str(k): str(v) for k, v in dict(_get(meta, "labels", default={}) or {}).items()}
    command = [str(c) for c in (_get(spec, "command", default=()) or ())]
    command += [str(a) for a in (_get(spec, "args", default=()) or ())]
    if not command:
        raise ValueError(f"Workload {namespace}/{name}: spec.command is required to run it locally")
    policy = str(_get(spec, "restart_policy", "restartPolicy", default="Always"))
    if not _is_restart_policy(policy):
        raise ValueError(f"Workload {namespace}/{name}: restartPolicy {policy!r} is not one of "
                         f"{', '.join(_RESTART_POLICIES)}")
    working_dir = _get(spec, "working_dir", "workingDir")
    return WorkloadSpec(
        name=name,
        namespace=namespace,
        service_account=str(_get(spec, "service_account", "serviceAccount", default="default")),
        labels=labels,
        ports=_ports(_get(spec, "ports")),
        command=tuple(command),
        replicas=int(_get(spec, "replicas", default=1)),
        env=_env(_get(spec, "env")),
        restart_policy=policy,
        working_dir=None if working_dir is None else str(working_dir),
    )


def service_from_config(obj: Any) -> ServiceSpec:
    meta, spec = _meta_and_spec(obj)
    selector = _get(spec, "selector", default={}) or {}
    return ServiceSpec(
        name=str(_get(meta, "name")),
        namespace=str(_get(meta, "namespace", default="default")),
        ports=_ports(_get(spec, "ports")),
        selector={str(k): str(v) for k, v in dict(selector).items()},
    )


def load_mesh(config_dir: Path) -> MeshSpec:
    """Load DIR with `hyphal.config.load_paths` and keep what the runner needs."""
    # Imported late: the runner's unit tests do not need the config package.
    from hyphal.config.loader import load_paths

    resources = load_paths(config_dir)
    workloads = tuple(workload_from_config(w) for w in _get(resources, "workloads", default=()))
    services = tuple(service_from_config(s) for s in _get(resources, "services", default=()))
    return MeshSpec(config_dir=config_dir.resolve(), workloads=workloads, services=services)
