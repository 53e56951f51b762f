"""`hyphal up DIR`: run a mesh locally — control plane, then each Workload replica and sidecar."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from hyphal.local import procs
from hyphal.local.plan import plan_run
from hyphal.local.ports import PortAllocator
from hyphal.local.render import summary
from hyphal.local.rundir import MeshState, RunDir
from hyphal.local.supervisor import Supervisor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run the mesh in DIR locally (control plane, sidecars, apps)")
    p.add_argument("dir", metavar="DIR", help="directory of mesh resources (YAML)")
    p.add_argument("--foreground", action="store_true",
                   help="stay attached; Ctrl-C stops everything")
    p.add_argument("--run-dir", default=".hyphal", help="run directory (default: .hyphal)")
    p.add_argument("--cert-ttl", default="24h", help="workload certificate lifetime (default 24h)")
    p.add_argument("--ready-timeout", type=float, default=60.0,
                   help="seconds each part may take to become ready (default 60)")
    p.add_argument("--isolated", action="store_true",
                   help="each replica in its own network namespace with iptables capture, "
                   "as in a Kubernetes pod (root only; needs ip, iptables, setpriv)")
    p.add_argument("--detached-child", action="store_true", help=argparse.SUPPRESS)
    # How to run `hyphal control` / `hyphal proxy` (a command line); tests use stand-ins.
    p.add_argument("--hyphal-cmd", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _err(msg: str) -> None:
    print(f"hyphal up: {msg}", file=sys.stderr, flush=True)


def _still_running(run_dir: RunDir) -> MeshState | None:
    state = run_dir.read_state()
    if state is None:
        return None
    sup_alive = state.supervisor_pid is not None and procs.is_alive(
        state.supervisor_pid, state.supervisor_start_ticks)
    if sup_alive or any(p.pid and procs.group_alive(p.pid, p.start_ticks) for p in state.processes):
        return state
    return None


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir(args.run_dir)
    if not args.detached_child:
        live = _still_running(run_dir)
        if live is not None:
            _err(f"a mesh is already running from {run_dir.root} (supervisor pid "
                 f"{live.supervisor_pid}); stop it first with "
                 f"`hyphal down --run-dir {args.run_dir}`")
            return 1
    from hyphal.config import to_seconds
    from hyphal.local.model import load_mesh

    try:
        cert_ttl = int(to_seconds(args.cert_ttl))
        mesh = load_mesh(Path(args.dir))
    except Exception as exc:  # noqa: BLE001 - config errors are reported to the user as they are
        _err(f"cannot load {args.dir}: {exc}")
        return 2
    if not mesh.workloads:
        _err(f"{args.dir} declares no Workload: nothing to run")
        return 2
    if getattr(args, "isolated", False):
        from hyphal.local.isolated import IsolatedError, check_prerequisites

        try:
            check_prerequisites()
        except IsolatedError as exc:
            _err(str(exc))
            return 2
    if args.foreground or args.detached_child:
        return _supervise(args, run_dir, mesh, cert_ttl)
    return _detach(args, run_dir)


def _supervise(args: argparse.Namespace, run_dir: RunDir, mesh: object, cert_ttl: int) -> int:
    from hyphal.local.model import MeshSpec

    assert isinstance(mesh, MeshSpec)
    run_dir.create()
    net = None
    if getattr(args, "isolated", False):
        from hyphal.local.isolated import net_plan

        net = net_plan(mesh, run_dir.root)
    plan = plan_run(mesh, run_dir.root, PortAllocator(), cert_ttl_seconds=cert_ttl, net=net)

    def out(line: str) -> None:
        print(line, flush=True)

    def on_ready(state: MeshState) -> None:
        if args.foreground:
            out(summary(state))
            out("mesh is up; press Ctrl-C to stop it")

    if args.detached_child:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    hyphal_cmd = (tuple(shlex.split(args.hyphal_cmd)) if args.hyphal_cmd
                  else (sys.executable, "-m", "hyphal"))
    sup = Supervisor(plan, run_dir, hyphal_cmd=hyphal_cmd, ready_timeout=args.ready_timeout,
                     out=out)
    code = asyncio.run(sup.run(on_ready=on_ready))
    for key, job_code in sorted(sup.job_exit_codes.items()):
        out(f"job {key}: exit code {job_code}")
    out("mesh stopped")
    return code


def _detach(args: argparse.Namespace, run_dir: RunDir) -> int:
    """Start the supervisor in its own session, echo its progress, return once the mesh is ready."""
    run_dir.create()
    try:
        run_dir.mesh_file.unlink()
    except FileNotFoundError:
        pass
    log = run_dir.supervisor_log
    offset = log.stat().st_size if log.exists() else 0
    argv = [sys.executable, "-m", "hyphal", "up", str(Path(args.dir).absolute()),
            "--run-dir", str(run_dir.root), "--cert-ttl", args.cert_ttl,
            "--ready-timeout", str(args.ready_timeout), "--detached-child"]
    if args.hyphal_cmd:
        argv += ["--hyphal-cmd", args.hyphal_cmd]
    if getattr(args, "isolated", False):
        argv.append("--isolated")
    with open(log, "ab") as fh:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 cwd=os.getcwd())
    deadline = time.monotonic() + args.ready_timeout * 4 + 30
    try:
        while True:
            offset = _echo(log, offset)
            state = run_dir.read_state()
            if state is not None and state.phase == "ready":
                _echo(log, offset)
                print(summary(state))
                print(f"mesh is up (supervisor pid {child.pid}); "
                      f"`hyphal status`, `hyphal logs WORKLOAD`, `hyphal down` to stop")
                return 0
            if child.poll() is not None or (state is not None and state.phase == "failed"):
                child.wait(timeout=60)
                _echo(log, offset)
                _err(f"the mesh did not come up; see {log}")
                return 1
            if time.monotonic() > deadline:
                child.terminate()
                child.wait(timeout=60)
                _err(f"the mesh was not ready in time; stopped it. See {log}")
                return 1
            time.sleep(0.1)
    except KeyboardInterrupt:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        _echo(log, offset)
        _err("interrupted; the mesh was stopped")
        return 130


def _echo(log: Path, offset: int) -> int:
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return offset
    if data:
        sys.stdout.write(data.decode(errors="replace"))
        sys.stdout.flush()
    return offset + len(data)
