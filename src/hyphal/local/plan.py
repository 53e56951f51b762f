"""The plan for one run: every port, file, environment and bootstrap, decided before any start.

Pure apart from the port allocator it is given, so the mechanics are testable without processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyphal.identity.node import NodePort
from hyphal.identity.spiffe import spiffe_uri
from hyphal.local import isolated
from hyphal.local.model import MeshSpec, ServiceSpec, WorkloadSpec, env_name
from hyphal.local.netns import NetPlan, PodNet
from hyphal.local.ports import PortAllocator
from hyphal.local.rundir import RunDir


@dataclass(frozen=True, slots=True)
class ControlPlan:
    """Where the control plane listens and keeps its state."""

    state_dir: Path
    xds_port: int
    xds_plaintext_port: int
    ca_port: int
    api_port: int
    trust_domain: str
    cert_ttl_seconds: int
    host: str = "127.0.0.1"  # isolated mode: the bridge address, reachable from namespaces

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def command(self, hyphal: Sequence[str], config_dir: Path) -> tuple[str, ...]:
        """`hyphal control ...` with this plan's flags; `hyphal` is how to run the CLI."""
        return (
            *hyphal, "control",
            "--config-dir", str(config_dir),
            "--state-dir", str(self.state_dir),
            "--xds-port", str(self.xds_port),
            "--xds-plaintext-port", str(self.xds_plaintext_port),
            "--ca-port", str(self.ca_port),
            "--api-port", str(self.api_port),
            "--trust-domain", self.trust_domain,
            "--cert-ttl", f"{self.cert_ttl_seconds}s",
            *(("--host", self.host) if self.host != "127.0.0.1" else ()),
        )


PortBinding = NodePort
"""A declared workload port, where its app listens and where the sidecar's mTLS inbound does."""


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """One replica of one Workload: its sidecar's bootstrap and its app's environment."""

    workload: WorkloadSpec
    replica: int
    ports: tuple[PortBinding, ...]
    outbound_http_port: int
    admin_port: int
    upstream_ports: Mapping[str, int]
    upstream_env: Mapping[str, str]
    token_file: Path
    bootstrap_file: Path
    app_log: Path
    sidecar_log: Path
    trust_domain: str
    pod: PodNet | None = None  # isolated mode: its namespace and address
    vips: Mapping[str, str] = field(default_factory=dict)  # isolated: fqdn -> VIP
    root_cert_file: Path | None = None  # isolated: a copy UID 1337 can read

    @property
    def key(self) -> str:
        return f"{self.workload.name}-{self.replica}"

    @property
    def node_id(self) -> str:
        return f"{self.key}.{self.workload.namespace}"

    @property
    def identity(self) -> str:
        w = self.workload
        return spiffe_uri(self.trust_domain, w.namespace, w.service_account)

    def app_env(self) -> dict[str, str]:
        """Environment variables only: the app knows nothing of the mesh beyond a proxy URL
        (isolated mode: not even that; iptables hands its connections to the sidecar)."""
        proxy = f"http://127.0.0.1:{self.outbound_http_port}"
        env: dict[str, str] = {} if self.pod is not None else {
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            # Service names must NOT be here: the app reaches them through its sidecar.
            "NO_PROXY": "localhost,127.0.0.1",
            "no_proxy": "localhost,127.0.0.1",
        }
        env |= {
            "HYPHAL_WORKLOAD": self.workload.name,
            "HYPHAL_REPLICA": str(self.replica),
            "HYPHAL_NAMESPACE": self.workload.namespace,
            "PYTHONUNBUFFERED": "1",
        }
        if self.ports:
            env["PORT"] = str(self.ports[0].app_port)
        for b in self.ports:
            env[f"PORT_{env_name(b.name)}"] = str(b.app_port)
        env.update(self.upstream_env)
        env.update(self.workload.env)
        return env

    def bootstrap(self, control: ControlPlan, cert_ttl_seconds: int) -> dict[str, Any]:
        """The sidecar bootstrap file, exactly as docs/xds-conventions.md fixes it."""
        boot = self._bootstrap(control, cert_ttl_seconds)
        if self.pod is not None:
            md = boot["node"]["metadata"]
            md["INSTANCE_IP"] = self.pod.ip
            md["INTERCEPTION_MODE"] = "REDIRECT"
            md["SERVICE_VIPS"] = dict(self.vips)
            boot["xds_address"] = f"{control.host}:{control.xds_port}"
            boot["ca_address"] = f"{control.host}:{control.ca_port}"
            if self.root_cert_file is not None:
                boot["root_cert_file"] = str(self.root_cert_file)
        return boot

    def _bootstrap(self, control: ControlPlan, cert_ttl_seconds: int) -> dict[str, Any]:
        w = self.workload
        return {
            "node": {
                "id": self.node_id,
                "cluster": w.name,
                "metadata": {
                    "NAMESPACE": w.namespace,
                    "SERVICE_ACCOUNT": w.service_account,
                    "WORKLOAD_NAME": w.name,
                    "LABELS": dict(w.labels),
                    "INSTANCE_IP": "127.0.0.1",
                    "PROXY_MODE": "sidecar",
                    "OUTBOUND_HTTP_PORT": self.outbound_http_port,
                    "PORTS": [b.to_metadata() for b in self.ports],
                    "UPSTREAM_PORTS": dict(self.upstream_ports),
                    "ADMIN_PORT": self.admin_port,  # the control plane scrapes its stats
                },
            },
            "xds_address": f"127.0.0.1:{control.xds_port}",
            "ca_address": f"127.0.0.1:{control.ca_port}",
            "root_cert_file": str(control.state_dir / "ca" / "root-cert.pem"),
            "token_file": str(self.token_file),
            "trust_domain": self.trust_domain,
            "admin_port": self.admin_port,
            "access_log": "-",
            "cert_ttl_seconds": cert_ttl_seconds,
        }


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The whole run: control plane first, then replicas (long-running before jobs)."""

    mesh: MeshSpec
    control: ControlPlan
    replicas: tuple[ReplicaPlan, ...]
    net: NetPlan | None = None  # isolated mode


def _tcp_upstreams(services: tuple[ServiceSpec, ...]) -> list[tuple[ServiceSpec, str, int, str]]:
    """(service, port name, port, fqdn:port) for every TCP, GRPC and HTTP2 service port: those
    get a per-upstream listener (gRPC apps may also CONNECT through HTTP_PROXY)."""
    out = []
    for svc in services:
        for p in svc.ports:
            if p.is_tcp or p.protocol.upper() in ("GRPC", "HTTP2"):
                out.append((svc, p.name, p.port, f"{svc.fqdn}:{p.port}"))
    return out


def plan_run(
    mesh: MeshSpec,
    run_dir: Path,
    ports: PortAllocator,
    *,
    trust_domain: str = "cluster.local",
    cert_ttl_seconds: int = 86400,
    net: NetPlan | None = None,
) -> RunPlan:
    """`net`: isolated mode's network plan (hyphal.local.isolated.net_plan): each replica
    runs in its namespace with capture; ports are the declared ones, no upstream ports."""
    layout = RunDir(run_dir)
    control = ControlPlan(
        state_dir=layout.control_state,
        xds_port=ports.allocate(),
        xds_plaintext_port=ports.allocate(),
        ca_port=ports.allocate(),
        api_port=ports.allocate(),
        trust_domain=trust_domain,
        cert_ttl_seconds=cert_ttl_seconds,
        host=net.bridge_ip if net is not None else "127.0.0.1",
    )
    if net is not None:
        return RunPlan(mesh=mesh, control=control, net=net,
                       replicas=_isolated_replicas(mesh, layout, net, trust_domain))
    upstreams = _tcp_upstreams(mesh.services)
    replicas: list[ReplicaPlan] = []
    ordered = sorted(mesh.workloads, key=lambda w: (w.is_job, w.namespace, w.name))
    for w in ordered:
        for r in range(w.replicas):
            key = f"{w.name}-{r}"
            bindings = tuple(
                PortBinding(p.name, p.port, p.protocol.upper(), ports.allocate(), ports.allocate())
                for p in w.ports
            )
            upstream_ports: dict[str, int] = {}
            upstream_env: dict[str, str] = {}
            for svc, port_name, port, authority in upstreams:
                local = upstream_ports.get(authority) or ports.allocate()
                upstream_ports[authority] = local
                base = env_name(svc.name if svc.namespace == w.namespace
                                else f"{svc.name}_{svc.namespace}")
                upstream_env[f"{base}_SERVICE_HOST"] = "127.0.0.1"
                upstream_env.setdefault(f"{base}_SERVICE_PORT", str(local))
                upstream_env[f"{base}_SERVICE_PORT_{env_name(port_name)}"] = str(local)
                if any(p.port == port and p.protocol.upper() == "GRPC" for p in svc.ports):
                    upstream_env.setdefault(f"GRPC_{base}_TARGET", f"127.0.0.1:{local}")
            replicas.append(ReplicaPlan(
                workload=w,
                replica=r,
                ports=bindings,
                outbound_http_port=ports.allocate(),
                admin_port=ports.allocate(),
                upstream_ports=upstream_ports,
                upstream_env=upstream_env,
                token_file=layout.tokens / f"{key}.token",
                bootstrap_file=layout.bootstrap / f"{key}.json",
                app_log=layout.logs / f"{key}.log",
                sidecar_log=layout.logs / f"{key}.sidecar.log",
                trust_domain=trust_domain,
            ))
    return RunPlan(mesh=mesh, control=control, replicas=tuple(replicas))


def _isolated_replicas(mesh: MeshSpec, layout: RunDir, net: NetPlan,
                       trust_domain: str) -> tuple[ReplicaPlan, ...]:
    pods = {p.replica: p for p in net.pods}
    out: list[ReplicaPlan] = []
    for w in sorted(mesh.workloads, key=lambda w: (w.is_job, w.namespace, w.name)):
        for r in range(w.replicas):
            key = f"{w.name}-{r}"
            files = isolated.pod_dir(net, key)
            out.append(ReplicaPlan(
                workload=w,
                replica=r,
                ports=tuple(PortBinding(p.name, p.port, p.protocol.upper(), p.port, p.port)
                            for p in w.ports),
                outbound_http_port=isolated.OUTBOUND_PORT,
                admin_port=isolated.ADMIN_PORT,
                upstream_ports={},
                upstream_env={},
                token_file=files / "token",
                bootstrap_file=files / "bootstrap.json",
                app_log=layout.logs / f"{key}.log",
                sidecar_log=layout.logs / f"{key}.sidecar.log",
                trust_domain=trust_domain,
                pod=pods[key],
                vips=dict(net.vips),
                root_cert_file=files / "root-cert.pem",
            ))
    return tuple(out)
