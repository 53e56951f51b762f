"""A hand-built mesh on loopback for e2e tests: `hyphal control`, stdlib echo apps, sidecars.

Everything is a real process: the control plane (`hyphal control`, all ports from the kernel,
read back from `<state-dir>/ports.json`), one tiny HTTP app per workload (echoes its name,
version and the `x-forwarded-client-cert` it received, as JSON) and one `hyphal proxy` per
workload, started from a bootstrap file written here exactly as docs/xds-conventions.md
says. Tokens come from the control plane's `POST /api/v1/tokens`. `Mesh.stop()` sends
SIGTERM to every process it started, then SIGKILL to any left after a grace period, and
returns the pids so a test can check they are gone.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hyphal.local.ports import PortAllocator

_PORTS = PortAllocator()  # one per test process: never the same port twice

REPO = Path(__file__).resolve().parents[2]
HYPHAL = (sys.executable, "-m", "hyphal")

APP_SOURCE = '''\
"""e2e echo app: GET anything -> JSON {name, version, path, host, xfcc}."""
import http.server, json, socket, sys

NAME, VERSION, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"name": NAME, "version": VERSION, "path": self.path,
                           "host": self.headers.get("Host", ""),
                           "xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
'''


def free_ports(n: int) -> list[int]:
    """Below the kernel's ephemeral range (hyphal.local.ports): a port taken from it can be
    grabbed by any outbound connection before the test binds it ("address already in use")."""
    return _PORTS.allocate_many(n)


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll `check` every 50 ms; fail with `what` (and `alive()`'s complaint, if any)."""
    deadline = time.monotonic() + timeout
    while not check():
        dead = alive()
        if dead:
            raise AssertionError(f"{what}: {dead}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.05)


def http_get(
    url: str, timeout: float = 2.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Plain GET (no proxies from the environment): (status, body); (0, b"") if unreachable."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


class ProxyFormClient:
    """Proxy-form HTTP/1.1 over one keep-alive connection to a sidecar's outbound port.

    No retries, on purpose: a request that fails is reported as failed. A new connection is
    opened only when the previous response said `Connection: close`.
    """

    __slots__ = ("_conn", "_port")

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn: http.client.HTTPConnection | None = None

    def get(self, url: str) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=5)
        try:
            self._conn.request("GET", url)
            resp = self._conn.getresponse()
            body = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, body

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _answers(port: int, path: str) -> bool:
    return http_get(f"http://127.0.0.1:{port}{path}")[0] == 200


@dataclass(frozen=True, slots=True)
class Workload:
    """One running workload: its app and its sidecar, and every port they use."""

    name: str
    namespace: str
    service_account: str
    labels: tuple[tuple[str, str], ...]
    app_port: int
    inbound_port: int
    outbound_port: int
    admin_port: int
    access_log: Path
    app_pid: int
    sidecar_pid: int

    @property
    def identity(self) -> str:
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.service_account}"

    def admin(self, path: str) -> tuple[int, bytes]:
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def access_log_lines(self) -> list[dict[str, Any]]:
        try:
            text = self.access_log.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class Mesh:
    """The processes of one mesh under `root`; `stop()` is idempotent and always safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_dir = root / "config"
        self.state_dir = root / "state"
        self.config_dir.mkdir(parents=True)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.ports: dict[str, Any] = {}
        self.workloads: dict[str, Workload] = {}
        (root / "echo_app.py").write_text(APP_SOURCE)

    # -- processes ---------------------------------------------------------------------

    def _spawn(self, label: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.root / f"{label}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env(),
                start_new_session=True,
            )
        self.procs.append((label, proc))
        return proc

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        if self.ports:
            env["HYPHAL_API"] = f"http://127.0.0.1:{self.ports['api']}"
            env["HYPHAL_STATE_DIR"] = str(self.state_dir)
        return env

    def log(self, label: str) -> str:
        try:
            return (self.root / f"{label}.log").read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def _dead(self) -> str | None:
        for label, proc in self.procs:
            if proc.poll() is not None:
                return f"{label} exited with {proc.returncode}:\n{self.log(label)}"
        return None

    def start_control(self, resources: str) -> None:
        (self.config_dir / "mesh.yaml").write_text(resources)
        proc = self._spawn(
            "control",
            [
                *HYPHAL,
                "control",
                "--config-dir",
                str(self.config_dir),
                "--state-dir",
                str(self.state_dir),
                "--xds-port",
                "0",
                "--xds-plaintext-port",
                "0",
                "--ca-port",
                "0",
                "--api-port",
                "0",
            ],
        )
        ports_file = self.state_dir / "ports.json"

        def ready() -> bool:
            try:
                ports = json.loads(ports_file.read_text())
            except (OSError, ValueError):
                return False
            if ports.get("pid") != proc.pid:
                return False
            if http_get(f"http://127.0.0.1:{ports['api']}/ready")[0] != 200:
                return False
            self.ports = ports
            return True

        wait_until("hyphal control ready", ready, 20, self._dead)

    def api(self, method: str, path: str, body: Any) -> Any:
        token = (self.state_dir / "admin-token").read_text().strip()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['api']}{path}",
            method=method,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as r:
            return json.load(r)

    def token(self, namespace: str, service_account: str) -> str:
        reply = self.api(
            "POST", "/api/v1/tokens", {"namespace": namespace, "service_account": service_account}
        )
        token = reply["token"] if isinstance(reply, dict) else reply
        assert isinstance(token, str) and token.count(".") == 2, reply
        return token

    def add_workload(
        self,
        name: str,
        namespace: str,
        service_account: str,
        labels: dict[str, str],
        port: int = 8080,
    ) -> None:
        """Start the app and its sidecar (not waiting: see `wait_ready`)."""
        app_port, inbound, outbound, admin = free_ports(4)
        token_file = self.root / f"{name}.token"
        token_file.write_text(self.token(namespace, service_account) + "\n")
        access_log = self.root / f"{name}.access.log"
        bootstrap = {
            "node": {
                "id": f"{name}-0.{namespace}",
                "cluster": name,
                "metadata": {
                    "NAMESPACE": namespace,
                    "SERVICE_ACCOUNT": service_account,
                    "WORKLOAD_NAME": name,
                    "LABELS": labels,
                    "INSTANCE_IP": "127.0.0.1",
                    "PROXY_MODE": "sidecar",
                    "OUTBOUND_HTTP_PORT": outbound,
                    "PORTS": [
                        {
                            "name": "http",
                            "port": port,
                            "protocol": "HTTP",
                            "app_port": app_port,
                            "inbound_port": inbound,
                        }
                    ],
                    "UPSTREAM_PORTS": {},
                },
            },
            "xds_address": f"127.0.0.1:{self.ports['xds']}",
            "ca_address": f"127.0.0.1:{self.ports['ca']}",
            "root_cert_file": str(self.state_dir / "ca" / "root-cert.pem"),
            "token_file": str(token_file),
            "trust_domain": "cluster.local",
            "admin_port": admin,
            "access_log": str(access_log),
            "cert_ttl_seconds": 3600,
        }
        bootstrap_file = self.root / f"{name}.bootstrap.json"
        bootstrap_file.write_text(json.dumps(bootstrap, indent=2))
        app = self._spawn(
            f"{name}-app",
            [
                sys.executable,
                str(self.root / "echo_app.py"),
                name,
                labels.get("version", ""),
                str(app_port),
            ],
        )
        sidecar = self._spawn(
            f"{name}-sidecar", [*HYPHAL, "proxy", "--bootstrap", str(bootstrap_file)]
        )
        self.workloads[name] = Workload(
            name,
            namespace,
            service_account,
            tuple(sorted(labels.items())),
            app_port,
            inbound,
            outbound,
            admin,
            access_log,
            app.pid,
            sidecar.pid,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        for w in self.workloads.values():
            wait_until(
                f"{w.name}'s sidecar /ready",
                partial(_answers, w.admin_port, "/ready"),
                timeout,
                self._dead,
            )
            wait_until(
                f"{w.name}'s app listening", partial(_answers, w.app_port, "/"), timeout, self._dead
            )

    def pids(self) -> list[int]:
        return [proc.pid for _, proc in self.procs]

    def stop(self, grace: float = 5.0) -> list[int]:
        """SIGTERM everything (sidecars first, control plane last), SIGKILL what is left."""
        order = sorted(self.procs, key=lambda lp: lp[0] == "control")
        for _, proc in order:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in order:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return self.pids()


def _ports(protocol: str | None) -> str:
    proto = f", protocol: {protocol}" if protocol else ""
    return f"[{{name: http, port: 8080{proto}}}]"


def service_yaml(name: str, *, ns: str = "demo", selector: str | None = None,
                 protocol: str | None = "HTTP") -> str:
    """A hyphal Service `name` on port 8080 (`http`), selecting `{app: name}` by default."""
    return f"""\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {selector or f"{{app: {name}}}"}
  ports: {_ports(protocol)}
"""


def workload_yaml(name: str, app: str, version: str, *, sa: str | None = None,
                  ns: str = "demo", protocol: str | None = "HTTP") -> str:
    """A hyphal Workload `name` labelled app/version, service account `sa` (default: app)."""
    return f"""\
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: {ns}}}
spec:
  labels: {{app: {app}, version: {version}}}
  serviceAccount: {sa or app}
  ports: {_ports(protocol)}
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
