"""Shared builders for the local runner's tests: meshes of stand-in apps and a supervisor child."""

from __future__ import annotations

import sys
from pathlib import Path

from hyphal.local.model import MeshSpec, PortSpec, ServiceSpec, WorkloadSpec

HERE = Path(__file__).resolve().parent
STANDIN = (sys.executable, str(HERE / "standin.py"))
APP = str(HERE / "app.py")


def workload(name: str, *, env: dict[str, str] | None = None, policy: str = "Always",
             ports: tuple[PortSpec, ...] = (PortSpec("http", 8080, "HTTP"),),
             replicas: int = 1) -> WorkloadSpec:
    return WorkloadSpec(
        name=name, namespace="shop", service_account=name, labels={"app": name},
        ports=ports, command=(sys.executable, APP), replicas=replicas,
        env=env or {}, restart_policy=policy,  # type: ignore[arg-type]
    )


def mesh(tmp: Path, *workloads: WorkloadSpec, services: tuple[ServiceSpec, ...] = ()) -> MeshSpec:
    return MeshSpec(config_dir=tmp, workloads=tuple(workloads), services=services)
