"""The `hyphal up` supervisor: starts the control plane, then each replica's sidecar and app.

Theory of operation. One asyncio loop owns every child. Each child runs in its own session
(its own process group), its output appended to its log in the run directory. Start-up is
ordered: control plane -> `/ready`; per replica (concurrently): token, bootstrap file,
sidecar -> its admin `/ready`, app -> its ports accept connections; a job's app starts only
once every long-running app is up. Every change of a child's state is written to mesh.json
at once, so `status` and `down` (even after this process dies) see every pid. A stop
(SIGTERM, SIGINT, or the last job finishing when the mesh has only jobs) drains in reverse:
apps, sidecars (`/quitquitquit`, then SIGTERM, then SIGKILL), control plane.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypedDict, Unpack

from hyphal.local import control as control_api
from hyphal.local import isolated, procs
from hyphal.local.backoff import Backoff, decide
from hyphal.local.plan import ReplicaPlan, RunPlan
from hyphal.local.probe import is_ready, request
from hyphal.local.rundir import MeshState, ProcessRecord, RunDir

_PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
               "NO_PROXY", "no_proxy")


class StartupError(Exception):
    """The mesh could not come up; the message says which part and where its log is."""


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _RecordChanges(TypedDict, total=False):
    """The fields of a ProcessRecord that change while its process lives."""

    pid: int | None
    start_ticks: int | None
    state: str
    restarts: int
    exit_code: int | None


class Supervisor:
    """Runs one RunPlan until asked to stop: create, `await run()`; `request_stop()` ends it."""

    def __init__(
        self,
        plan: RunPlan,
        run_dir: RunDir,
        *,
        hyphal_cmd: Sequence[str] = (sys.executable, "-m", "hyphal"),
        backoff: Backoff | None = None,
        ready_timeout: float = 30.0,
        grace: float = 5.0,
        out: Callable[[str], None] = print,
    ) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self.hyphal_cmd = tuple(hyphal_cmd)
        self.backoff = backoff or Backoff()
        self.ready_timeout = ready_timeout
        self.grace = grace
        self.out = out
        self._records: dict[str, ProcessRecord] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._finished_jobs: set[str] = set()
        self._stop = asyncio.Event()
        self._stopping = False
        self._phase = "starting"
        self._error: str | None = None
        self.job_exit_codes: dict[str, int] = {}

    # ---- mesh.json -----------------------------------------------------------------------

    def state(self) -> MeshState:
        c = self.plan.control
        return MeshState(
            api=c.api,
            state_dir=str(c.state_dir),
            supervisor_pid=os.getpid(),
            supervisor_start_ticks=procs.start_ticks(os.getpid()),
            phase=self._phase,
            error=self._error,
            config_dir=str(self.plan.mesh.config_dir),
            control={"xds_port": c.xds_port, "xds_plaintext_port": c.xds_plaintext_port,
                     "ca_port": c.ca_port, "api_port": c.api_port,
                     "trust_domain": c.trust_domain},
            replicas=tuple(_replica_json(r) for r in self.plan.replicas),
            processes=tuple(self._records.values()),
            isolated=(isolated.record(self.plan.net).to_json()
                      if self.plan.net is not None else None),
        )

    def _save(self) -> None:
        self.run_dir.write_state(self.state())

    def _set(self, name: str, **changes: Unpack[_RecordChanges]) -> None:
        self._records[name] = replace(self._records[name], **changes)
        self._save()

    def _set_phase(self, phase: str, error: str | None = None) -> None:
        self._phase = phase
        if error is not None:
            self._error = error
        self._save()

    # ---- spawning ------------------------------------------------------------------------

    async def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path | None,
                     log: Path) -> asyncio.subprocess.Process:
        if self._stopping:
            raise StartupError(f"not starting {name}: the mesh is stopping")
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                env=env, cwd=str(cwd) if cwd else None, start_new_session=True,
            )
        except OSError as exc:
            raise StartupError(f"{name}: cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        self._procs[name] = proc
        self._set(name, pid=proc.pid, start_ticks=procs.start_ticks(proc.pid), state="running",
                  exit_code=None)
        return proc

    def _register(self, name: str, kind: str, argv: Sequence[str], log: Path,
                  replica: ReplicaPlan | None = None) -> None:
        self._records[name] = ProcessRecord(
            name=name, kind=kind, log=str(log), command=tuple(argv),
            workload=replica.workload.name if replica else None,
            replica=replica.replica if replica else None,
            # Isolated sidecars' admin port is inside their namespace: not for the host.
            admin_port=(replica.admin_port if replica and kind == "sidecar"
                        and replica.pod is None else None),
        )

    async def _wait_until(self, name: str, check: Callable[[], bool], what: str, log: Path) -> None:
        """Poll `check` (in a thread) until true; fail if the process exits or time runs out."""
        deadline = time.monotonic() + self.ready_timeout
        proc = self._procs[name]
        while True:
            if await asyncio.to_thread(check):
                return
            if proc.returncode is not None:
                raise StartupError(f"{name} exited with code {proc.returncode} before {what}; "
                                   f"see {log}:\n{_tail(log)}")
            if self._stopping:
                raise StartupError(f"stopped while waiting for {name}")
            if time.monotonic() > deadline:
                raise StartupError(f"{name} did not get {what} within {self.ready_timeout:.0f}s; "
                                   f"see {log}:\n{_tail(log)}")
            await asyncio.sleep(0.05)

    # ---- start-up ------------------------------------------------------------------------

    async def _start_control(self) -> None:
        c = self.plan.control
        argv = c.command(self.hyphal_cmd, self.plan.mesh.config_dir)
        log = self.run_dir.logs / "control.log"
        self._register("control", "control", argv, log)
        self.out(f"starting control plane (api {c.api}, xds :{c.xds_port}, ca :{c.ca_port})")
        await self._spawn("control", argv, base_env(), None, log)
        await self._wait_until("control", lambda: is_ready(f"{c.api}/ready"), "ready", log)
        self._set("control", state="ready")
        self._tasks.append(asyncio.create_task(self._keep("control", argv, base_env(), None, log)))
        self.out("control plane ready")

    async def _start_replica(self, r: ReplicaPlan, admin_token: str,
                             after: Sequence[asyncio.Task[None]] = ()) -> None:
        w = r.workload
        token = await asyncio.to_thread(
            control_api.mint_token, self.plan.control.api, admin_token, w.namespace,
            w.service_account)
        boot = r.bootstrap(self.plan.control, self.plan.control.cert_ttl_seconds)
        side = f"{r.key}/sidecar"
        side_argv: tuple[str, ...] = (*self.hyphal_cmd, "proxy", "--bootstrap",
                                      str(r.bootstrap_file))
        ready: Callable[[], bool] = lambda: is_ready(  # noqa: E731
            f"http://127.0.0.1:{r.admin_port}/ready")
        if r.pod is not None:  # isolated: files UID 1337 can read, run in the namespace
            isolated.give(r.token_file, token + "\n")
            isolated.give(r.bootstrap_file, json.dumps(boot, indent=2) + "\n")
            if r.root_cert_file is not None:
                isolated.give(r.root_cert_file,
                              (self.plan.control.state_dir / "ca" / "root-cert.pem").read_bytes())
            side_argv = isolated.sidecar_argv(r.pod.netns, side_argv)
            ns = r.pod.netns
            ready = lambda: isolated.http_ready(ns, r.admin_port)  # noqa: E731
        else:
            self.run_dir.write_private(r.token_file, token + "\n")
            self.run_dir.write_private(r.bootstrap_file, json.dumps(boot, indent=2) + "\n")
        self._register(side, "sidecar", side_argv, r.sidecar_log, r)
        self._save()
        await self._spawn(side, side_argv, base_env(), None, r.sidecar_log)
        await self._wait_until(side, ready, "ready", r.sidecar_log)
        self._set(side, state="ready")
        self._tasks.append(asyncio.create_task(
            self._keep(side, side_argv, base_env(), None, r.sidecar_log, replica=r)))
        if after:
            await asyncio.gather(*after)
        app = f"{r.key}/app"
        cwd = _working_dir(self.plan.mesh.config_dir, w.working_dir)
        env = base_env() | r.app_env()
        app_argv = tuple(w.command)
        ports = [b.app_port for b in r.ports]
        up: Callable[[], bool] = lambda: all(_listening(p) for p in ports)  # noqa: E731
        if r.pod is not None:
            app_argv = isolated.app_argv(r.pod.netns, app_argv)
            ns = r.pod.netns
            up = lambda: all(isolated.listening(ns, p) for p in ports)  # noqa: E731
        self._register(app, "app", app_argv, r.app_log, r)
        await self._spawn(app, app_argv, env, cwd, r.app_log)
        self._tasks.append(asyncio.create_task(
            self._keep(app, app_argv, env, cwd, r.app_log, replica=r)))
        if not w.is_job:
            await self._wait_until(app, up, f"listening on {ports}", r.app_log)
        self.out(f"  {r.key}: sidecar pid {self._records[side].pid} ready, "
                 f"app pid {self._records[app].pid} started ({r.identity})")

    async def start(self) -> None:
        self.run_dir.create()
        self._save()  # with the isolated network's record, before any of it exists
        net = self.plan.net
        if net is not None:
            spaces = {r.key: r.workload.namespace for r in self.plan.replicas}
            try:
                await asyncio.to_thread(isolated.setup, net, spaces, self.out)
            except isolated.IsolatedError as exc:
                raise StartupError(str(exc)) from exc
        await self._start_control()
        admin = await asyncio.to_thread(control_api.admin_token, self.plan.control.state_dir)
        # Every sidecar starts at once; a job's app waits until every long-running app is up.
        try:
            async with asyncio.TaskGroup() as tg:
                services = [tg.create_task(self._start_replica(r, admin))
                            for r in self.plan.replicas if not r.workload.is_job]
                for r in self.plan.replicas:
                    if r.workload.is_job:
                        tg.create_task(self._start_replica(r, admin, after=services))
        except BaseExceptionGroup as eg:
            raise _first_error(eg) from None
        self._set_phase("ready")

    # ---- keeping things running ----------------------------------------------------------

    async def _keep(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path | None,
                    log: Path, replica: ReplicaPlan | None = None) -> None:
        """Wait for the child to exit; restart it per its policy with capped backoff."""
        is_app = self._records[name].kind == "app"
        policy = replica.workload.restart_policy if (replica and is_app) else "Always"
        streak = 0
        while True:
            proc = self._procs[name]
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            if replica is not None and not is_app and replica.key in self._finished_jobs:
                self._set(name, state="stopped", exit_code=code)
                return
            streak = self.backoff.next_streak(streak, time.monotonic() - started)
            decision = decide(policy, code, max(0, streak - 1), self.backoff)
            if not decision.restart:
                self._set(name, state=decision.final_state, exit_code=code)
                assert replica is not None
                await self._finish_job(replica, code)
                return
            self._set(name, state="backoff", exit_code=code)
            self.out(f"{name} exited with code {code}; restarting in {decision.delay:.1f}s")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=decision.delay)
                return
            except TimeoutError:
                pass
            restarts = self._records[name].restarts + 1
            try:
                await self._spawn(name, argv, env, cwd, log)
            except StartupError as exc:
                if not self._stopping:
                    self.out(f"{name}: giving up restarting it: {exc}")
                    self._set(name, state="failed")
                return
            self._set(name, restarts=restarts)

    async def _finish_job(self, r: ReplicaPlan, code: int) -> None:
        """A job's app is done: record its code and stop its sidecar with it."""
        self._finished_jobs.add(r.key)
        self.job_exit_codes[r.key] = code
        self.out(f"job {r.key} finished with exit code {code}; stopping its sidecar")
        await self._stop_sidecar(f"{r.key}/sidecar", r.admin_port)
        if all(x.workload.is_job and x.key in self._finished_jobs for x in self.plan.replicas):
            self.out("every workload is a finished job")
            self.request_stop()

    # ---- stopping ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def _terminate(self, names: Sequence[str]) -> None:
        targets = []
        for n in names:
            rec = self._records.get(n)
            if rec is not None and rec.pid is not None:
                targets.append((rec.pid, rec.start_ticks))
        if targets:
            await asyncio.to_thread(procs.terminate_groups, targets, self.grace)
        for n in names:
            proc = self._procs.get(n)
            if proc is not None and proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), timeout=1.0)
                except TimeoutError:
                    pass
            rec = self._records.get(n)
            if rec is not None and rec.state not in ("completed", "failed"):
                code = proc.returncode if proc is not None else None
                self._set(n, state="stopped", exit_code=code)

    async def _stop_sidecar(self, name: str, admin_port: int) -> None:
        rec = self._records.get(name)
        proc = self._procs.get(name)
        if rec is None or proc is None or proc.returncode is not None:
            return
        if rec.admin_port is None:  # isolated: SIGTERM drains it as well
            await self._terminate([name])
            return
        try:
            await asyncio.to_thread(request, f"http://127.0.0.1:{admin_port}/quitquitquit",
                                    "POST", b"", None, 1.0)
            await asyncio.wait_for(proc.wait(), timeout=min(self.grace, 3.0))
        except Exception as exc:  # noqa: BLE001 - not answering /quitquitquit is what SIGTERM is for
            self.out(f"{name} did not stop on /quitquitquit ({type(exc).__name__}); terminating it")
        await self._terminate([name])

    async def shutdown(self) -> None:
        if self._stopping and self._phase in ("stopping", "stopped"):
            return
        self._stopping = True
        self._stop.set()
        self._set_phase("stopping")
        self.out("stopping the mesh")
        apps = [n for n, r in self._records.items() if r.kind == "app"]
        await self._terminate(apps)
        await asyncio.gather(*(
            self._stop_sidecar(f"{r.key}/sidecar", r.admin_port) for r in self.plan.replicas))
        await self._terminate([n for n, r in self._records.items() if r.kind == "sidecar"])
        await self._terminate(["control"])
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.plan.net is not None:
            await asyncio.to_thread(isolated.teardown, isolated.record(self.plan.net))
            self.out("isolated network removed")
        self._set_phase("stopped")

    async def run(self, on_ready: Callable[[MeshState], None] | None = None) -> int:
        """Start everything, then wait for a stop request; always tears down. Exit status back."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        code = 0
        try:
            start = asyncio.create_task(self.start())
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
            if start.done():
                start.result()  # raises StartupError
                if on_ready is not None:
                    on_ready(self.state())
                await self._stop.wait()
            else:
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
            stop.cancel()
        except (StartupError, control_api.ControlPlaneError, OSError) as exc:
            self.out(f"error: {exc}")
            self._error = str(exc)
            code = 1
        finally:
            await self.shutdown()
            if code:
                self._set_phase("failed", self._error)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self.job_exit_codes and all(r.workload.is_job for r in self.plan.replicas):
            return max(self.job_exit_codes.values(), key=abs)
        return code


def _first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf error of a TaskGroup failure (the others are its consequences)."""
    first = eg.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


def _replica_json(r: ReplicaPlan) -> dict[str, object]:
    w = r.workload
    return {
        "key": r.key, "workload": w.name, "namespace": w.namespace, "replica": r.replica,
        "service_account": w.service_account, "identity": r.identity, "labels": dict(w.labels),
        "restart_policy": w.restart_policy, "is_job": w.is_job,
        "admin_port": r.admin_port, "outbound_http_port": r.outbound_http_port,
        "ports": [{"name": b.name, "port": b.port, "protocol": b.protocol,
                   "app_port": b.app_port, "inbound_port": b.inbound_port} for b in r.ports],
        "upstream_ports": dict(r.upstream_ports),
        "bootstrap": str(r.bootstrap_file), "token_file": str(r.token_file),
        "app_log": str(r.app_log), "sidecar_log": str(r.sidecar_log),
        **({"netns": r.pod.netns, "pod_ip": r.pod.ip} if r.pod is not None else {}),
    }


def _working_dir(config_dir: Path, working_dir: str | None) -> Path:
    if working_dir is None:
        return config_dir
    p = Path(working_dir)
    return p if p.is_absolute() else config_dir / p


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "    (no log)"
    return "\n".join("    " + line for line in text[-lines:])
