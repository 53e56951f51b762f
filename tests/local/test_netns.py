"""Isolated mode's network plan: addresses, VIPs, hosts files, setup and teardown commands;
as root, the commands really make namespaces with capture rules and teardown removes all."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from hyphal.local import netns


def small() -> netns.NetPlan:
    return netns.plan("/tmp/run-x", ["product-v1-0", "frontend-0"],
                      [("product", "shop"), ("db", "other")], slot=100)


def test_addresses_vips_and_names() -> None:
    p = small()
    assert p.bridge == f"hyphal-br{p.mesh_hash}" and len(p.bridge) <= 15
    assert p.bridge_ip == "10.233.200.1" and p.vip_subnet == "10.233.201.0/24"
    assert [(x.netns, x.ip) for x in p.pods] == [
        (f"hyphal-{p.mesh_hash}-0", "10.233.200.2"), (f"hyphal-{p.mesh_hash}-1", "10.233.200.3")]
    assert all(len(x.veth) <= 15 for x in p.pods)
    assert dict(p.vips) == {"db.other.svc.cluster.local": "10.233.201.1",
                            "product.shop.svc.cluster.local": "10.233.201.2"}


def test_hosts_file_maps_every_spelling_bare_name_only_in_own_namespace() -> None:
    text = netns.hosts_file(small(), "shop")
    assert ("10.233.201.2 product.shop.svc.cluster.local product.shop.svc product.shop "
            "product\n") in text
    assert "10.233.201.1 db.other.svc.cluster.local db.other.svc db.other\n" in text


def test_setup_applies_the_injection_rules_in_each_namespace_and_teardown_undoes_all() -> None:
    p = small()
    setup = netns.setup_commands(p)
    rules = [c for c in setup if "iptables" in c]
    assert len(rules) == 2 * len(netns.iptables_rules())
    assert any("--uid-owner" in c for c in rules)
    down = netns.teardown_commands(p)
    assert ["ip", "link", "del", p.bridge] in down
    assert all(["ip", "netns", "del", x.netns] in down for x in p.pods)


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None or shutil.which("iptables") is None:
        return "ip or iptables missing"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"ip netns unusable: {probe.stderr.strip()}"


def test_real_namespaces_come_up_and_leave_nothing_behind() -> None:
    why = _usable()
    if why:
        print(f"skipped: {why}")
        pytest.skip(why)
    p = netns.plan(f"/tmp/test-netns-{os.getpid()}", ["a-0", "b-0"], [("a", "t")], slot=120)
    try:
        for cmd in netns.setup_commands(p):
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
        ping = subprocess.run(["ip", "netns", "exec", p.pods[0].netns, "ping", "-c1", "-W2",
                               p.pods[1].ip], capture_output=True, timeout=10)
        nat = subprocess.run(["ip", "netns", "exec", p.pods[0].netns, "iptables", "-t", "nat",
                              "-S"], capture_output=True, text=True, timeout=10).stdout
        assert "--to-ports 15006" in nat and "--to-ports 15001" in nat
        if shutil.which("ping"):
            assert ping.returncode == 0, ping.stderr
    finally:
        for cmd in netns.teardown_commands(p):
            subprocess.run(cmd, capture_output=True, timeout=10)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert p.mesh_hash not in names and p.mesh_hash not in links
