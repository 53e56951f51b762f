"""Isolated local mode (`hyphal up --isolated`): run hyphal.local.netns's plan for real.

Each replica gets a network namespace on a bridge; iptables in it (Kubernetes' injection
rules) send the app's TCP to its sidecar, which runs as UID/GID 1337 so its own traffic is
left alone. This module checks the prerequisites, runs the setup and teardown commands,
writes the /etc/netns hosts files, keeps each sidecar's private files where UID 1337 can
read them (/run/hyphal/<hash>/<replica>), wraps commands with `ip netns exec` (+ `setpriv`)
and probes ports inside a namespace (setns(2) in a short-lived thread).

What was created is recorded (`NetRecord`, in mesh.json) before it is created, so `hyphal
down` tears it all down even after `up` crashed half-way; teardown is idempotent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyphal.kube.inject import ADMIN_PORT, OUTBOUND_PORT, PROXY_UID
from hyphal.local import netns
from hyphal.local.model import MeshSpec

POD_FILES = Path("/run/hyphal")
_CLONE_NEWNET = 0x40000000
_PACKAGES = {"ip": "iproute2", "iptables": "iptables", "setpriv": "util-linux"}

__all__ = ["ADMIN_PORT", "OUTBOUND_PORT", "PROXY_UID", "IsolatedError", "NetRecord",
           "app_argv", "check_prerequisites", "http_ready", "listening", "net_plan",
           "pod_dir", "record", "setup", "sidecar_argv", "teardown"]


class IsolatedError(Exception):
    """Isolated mode cannot run here, or a setup command failed; the message says why."""


def check_prerequisites() -> None:
    """Root and the `ip`, `iptables` and `setpriv` commands, or an error saying what to do."""
    if os.geteuid() != 0:
        raise IsolatedError("--isolated creates network namespaces and iptables rules, which "
                            "needs root: run it with sudo (e.g. `sudo .venv/bin/hyphal up "
                            "--isolated DIR`), or drop --isolated")
    for cmd, pkg in _PACKAGES.items():
        if shutil.which(cmd) is None:
            raise IsolatedError(f"--isolated needs the `{cmd}` command, which is not on PATH: "
                                f"install it (Debian/Ubuntu: `apt-get install {pkg}`)")


def net_plan(mesh: MeshSpec, run_dir: Path) -> netns.NetPlan:
    replicas = [f"{w.name}-{r}" for w in _ordered(mesh) for r in range(w.replicas)]
    services = [(s.name, s.namespace) for s in mesh.services]
    return netns.plan(str(Path(run_dir).absolute()), replicas, services)


def _ordered(mesh: MeshSpec) -> list[Any]:
    return sorted(mesh.workloads, key=lambda w: (w.is_job, w.namespace, w.name))


def pod_dir(p: netns.NetPlan, replica: str) -> Path:
    """Where a sidecar's token, bootstrap and root certificate live (owned by UID 1337)."""
    return POD_FILES / p.mesh_hash / replica


@dataclass(frozen=True, slots=True)
class NetRecord:
    """What isolated mode creates, as mesh.json keeps it (enough to tear it all down)."""

    mesh_hash: str
    bridge: str
    vip_subnet: str
    netns: tuple[str, ...]
    veths: tuple[str, ...]
    dirs: tuple[str, ...]  # hosts dirs and the sidecars' file dir

    def to_json(self) -> dict[str, Any]:
        return {"mesh_hash": self.mesh_hash, "bridge": self.bridge, "vip_subnet": self.vip_subnet,
                "netns": list(self.netns), "veths": list(self.veths), "dirs": list(self.dirs)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> NetRecord:
        return NetRecord(str(d["mesh_hash"]), str(d["bridge"]), str(d["vip_subnet"]),
                         tuple(d.get("netns") or ()), tuple(d.get("veths") or ()),
                         tuple(d.get("dirs") or ()))


def record(p: netns.NetPlan) -> NetRecord:
    return NetRecord(p.mesh_hash, p.bridge, p.vip_subnet, tuple(x.netns for x in p.pods),
                     tuple(x.veth for x in p.pods),
                     (*netns.hosts_dirs(p), str(POD_FILES / p.mesh_hash)))


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)


def setup(p: netns.NetPlan, namespaces: dict[str, str],
          out: Callable[[str], None] = print) -> None:
    """Bridge, namespaces, veths, routes, iptables, hosts files, sidecar file dirs.
    `namespaces`: replica -> its Kubernetes namespace (for the hosts file's short names).
    Call only after `record(p)` is saved. Leftovers of an earlier crash are removed first."""
    teardown(record(p))
    for cmd in netns.setup_commands(p):
        done = _run(cmd)
        if done.returncode != 0:
            raise IsolatedError(f"isolated setup failed: `{' '.join(cmd)}` exited with "
                                f"{done.returncode}: {done.stderr.strip()}")
    for pod in p.pods:
        d = Path(netns.NETNS_DIR) / pod.netns
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts").write_text(netns.hosts_file(p, namespaces[pod.replica]))
        (d / "resolv.conf").write_text("# hyphal isolated mode: names come from hosts\n"
                                       "options timeout:1 attempts:1\n")
        pd = pod_dir(p, pod.replica)
        pd.mkdir(parents=True, exist_ok=True)
        os.chmod(pd.parent, 0o755)
        os.chown(pd, PROXY_UID, PROXY_UID)
        os.chmod(pd, 0o700)
    out(f"isolated network: bridge {p.bridge} ({p.bridge_ip}/{p.prefix}), "
        f"{len(p.pods)} namespaces, VIPs in {p.vip_subnet}")


def teardown(rec: NetRecord) -> list[str]:
    """Delete namespaces, veths, the VIP route, the bridge and the dirs; ignores what is
    already gone. Returns what was actually removed."""
    removed = []
    cmds = [["ip", "netns", "del", n] for n in rec.netns]
    cmds += [["ip", "link", "del", v] for v in rec.veths]
    cmds += [["ip", "route", "del", rec.vip_subnet], ["ip", "link", "del", rec.bridge]]
    for cmd in cmds:
        try:
            if _run(cmd).returncode == 0:
                removed.append(" ".join(cmd[1:]))
        except (OSError, subprocess.TimeoutExpired):
            pass
    for d in rec.dirs:
        if os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"rm {d}")
    with contextlib.suppress(OSError):
        POD_FILES.rmdir()  # only when no other isolated mesh uses it
    return removed


def give(path: Path, text: str | bytes) -> None:
    """Write a file only UID 1337 (the sidecar) and root can read."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode() if isinstance(text, str) else text)
    finally:
        os.close(fd)
    os.chown(tmp, PROXY_UID, PROXY_UID)
    os.replace(tmp, path)


def sidecar_argv(ns: str, argv: Sequence[str]) -> tuple[str, ...]:
    """Run `argv` in namespace `ns` as UID/GID 1337 (excluded from capture)."""
    return ("ip", "netns", "exec", ns, "setpriv", f"--reuid={PROXY_UID}",
            f"--regid={PROXY_UID}", "--clear-groups", *argv)


def app_argv(ns: str, argv: Sequence[str]) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns, *argv)


def _in_netns(ns: str, fn: Callable[[], Any]) -> Any:
    """Run `fn` on a new thread that first joins network namespace `ns` (the thread ends
    with it, so no other thread ever changes namespace). Sockets keep their namespace."""
    result: list[Any] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def listening(ns: str, port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept TCP on host:port inside namespace `ns`?"""
    def probe() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((host, port)) == 0
    try:
        return bool(_in_netns(ns, probe))
    except OSError:
        return False


def http_get(ns: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """A plain HTTP/1.1 GET to 127.0.0.1:port inside namespace `ns` (status, body)."""
    def get() -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                      .encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body
    result: tuple[int, bytes] = _in_netns(ns, get)
    return result


def http_ready(ns: str, port: int) -> bool:
    try:
        return http_get(ns, port, "/ready")[0] == 200
    except (OSError, ValueError, IndexError):
        return False
