"""Isolated local mode's network plan: per replica a network namespace on a bridge, service
VIPs, /etc/netns hosts files, and the `ip`/`iptables` commands that make and unmake them.

Pure: nothing here runs a command. Everything the mesh creates is named from one short hash
of the run directory (`hyphal-<hash>-<i>` namespaces, `hyphal-br<hash>` bridge, `hy<hash><i>`
veths), so teardown can rebuild the list from mesh.json and is idempotent.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from hyphal.kube.inject import iptables_rules

BASE = ipaddress.IPv4Network("10.233.0.0/16")
NETNS_DIR = "/etc/netns"


@dataclass(frozen=True, slots=True)
class PodNet:
    """One replica's namespace: its name, the host-side veth, and its address."""

    replica: str  # "<workload>-<i>"
    netns: str
    veth: str
    ip: str


@dataclass(frozen=True, slots=True)
class NetPlan:
    mesh_hash: str
    bridge: str
    bridge_ip: str  # the gateway, where the control plane is reachable from namespaces
    prefix: int
    vip_subnet: str
    pods: tuple[PodNet, ...]
    vips: tuple[tuple[str, str], ...]  # (fqdn, ip)
    spellings: tuple[tuple[str, tuple[str, ...]], ...]  # (fqdn, names a pod may use)


def mesh_hash(run_dir: str) -> str:
    return hashlib.sha256(run_dir.encode()).hexdigest()[:6]


def plan(run_dir: str, replicas: Sequence[str],
         services: Sequence[tuple[str, str]], *, slot: int | None = None) -> NetPlan:
    """`replicas`: "<workload>-<i>" names; `services`: (name, namespace). Pods get the /24
    10.233.<2s>.0, VIPs 10.233.<2s+1>.0, with s from the hash unless `slot` is given."""
    h = mesh_hash(run_dir)
    s = (int(h, 16) % 127) if slot is None else slot
    pods_net = ipaddress.IPv4Network(f"10.233.{2 * s}.0/24")
    vip_net = ipaddress.IPv4Network(f"10.233.{2 * s + 1}.0/24")
    if len(replicas) > 250 or len(services) > 250:
        raise ValueError("isolated mode supports up to 250 replicas and 250 services")
    hosts = list(pods_net.hosts())
    pods = tuple(PodNet(r, f"hyphal-{h}-{i}", f"hy{h}{i}", str(hosts[i + 1]))
                 for i, r in enumerate(replicas))
    vhosts = list(vip_net.hosts())
    vips, spellings = [], []
    for i, (name, ns) in enumerate(sorted(services, key=lambda x: (x[1], x[0]))):
        fqdn = f"{name}.{ns}.svc.cluster.local"
        vips.append((fqdn, str(vhosts[i])))
        spellings.append((fqdn, (fqdn, f"{name}.{ns}.svc", f"{name}.{ns}", name)))
    return NetPlan(h, f"hyphal-br{h}", str(hosts[0]), pods_net.prefixlen, str(vip_net),
                   pods, tuple(vips), tuple(spellings))


def hosts_file(p: NetPlan, namespace: str) -> str:
    """/etc/netns/<ns>/hosts: each service's spellings → its VIP. A bare `name` is only
    written for services of the pod's own namespace, as Kubernetes' search path resolves."""
    lines = ["127.0.0.1 localhost"]
    vips = dict(p.vips)
    for fqdn, names in p.spellings:
        own = fqdn.split(".")[1] == namespace
        lines.append(" ".join([vips[fqdn], *(n for n in names if own or "." in n)]))
    return "\n".join(lines) + "\n"


def setup_commands(p: NetPlan) -> list[list[str]]:
    cmds = [["ip", "link", "add", p.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{p.bridge_ip}/{p.prefix}", "dev", p.bridge],
            ["ip", "link", "set", p.bridge, "up"],
            ["ip", "route", "add", p.vip_subnet, "dev", p.bridge]]
    for pod in p.pods:
        ns = ["ip", "netns", "exec", pod.netns]
        cmds += [["ip", "netns", "add", pod.netns],
                 ["ip", "link", "add", pod.veth, "type", "veth", "peer", "name", "eth0",
                  "netns", pod.netns],
                 ["ip", "link", "set", pod.veth, "master", p.bridge, "up"],
                 [*ns, "ip", "addr", "add", f"{pod.ip}/{p.prefix}", "dev", "eth0"],
                 [*ns, "ip", "link", "set", "eth0", "up"],
                 [*ns, "ip", "link", "set", "lo", "up"],
                 [*ns, "ip", "route", "add", "default", "via", p.bridge_ip]]
        cmds += [[*ns, "iptables", "-t", "nat", *rule.split()] for rule in iptables_rules()]
    return cmds


def teardown_commands(p: NetPlan) -> list[list[str]]:
    """Every command may fail (already gone): run them all, ignore failures. Deleting a
    namespace deletes its veth pair and its iptables rules with it."""
    cmds = [["ip", "netns", "del", pod.netns] for pod in p.pods]
    cmds += [["ip", "link", "del", pod.veth] for pod in p.pods]
    cmds += [["ip", "route", "del", p.vip_subnet], ["ip", "link", "del", p.bridge]]
    return cmds


def hosts_dirs(p: NetPlan) -> list[str]:
    return [f"{NETNS_DIR}/{pod.netns}" for pod in p.pods]
