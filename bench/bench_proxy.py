"""Benchmark of the sidecar data plane against HAProxy (not a test; prints its numbers).

Setups, each measured with wrk (keep-alive, small responses):
  direct        wrk -> app
  haproxy-1     wrk -> haproxy -> app
  sidecar-1     wrk -> hyphal outbound (plaintext) -> app
  haproxy-2tls  wrk -> haproxy A -> mTLS -> haproxy B -> app
  sidecar-2tls  wrk -> hyphal A (outbound) -> mTLS -> hyphal B (inbound, RBAC) -> app
The app is an HAProxy frontend answering 200 from memory. Proxies are pinned to CPU 0,
wrk and the app to CPU 1; the sidecars run on uvloop with stats, access log (to a file)
and RBAC on. Low rate = one connection (closed loop); saturation = 32 connections; RSS is
read from /proc while wrk paces about 1,000 req/s.

Usage: python bench/bench_proxy.py [--duration 8] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# HYPHAL_SRC runs the sidecars from another source tree (an A/B against an older commit).
sys.path.insert(0, os.environ.get("HYPHAL_SRC", str(ROOT / "src")))

PORTS = {"app": 24100, "ha1": 24101, "ha2": 24102, "sa_out": 24103, "sb_in": 24104,
         "s1_out": 24105, "ha_single": 24106, "ha1p": 24107, "ha2p": 24108,
         "floor": 24109}

HAPROXY_TEMPLATE = """
global
    nbthread 1
    maxconn 4000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
{body}
"""

APP_BODY = """
frontend app
    bind 127.0.0.1:{app}
    http-request return status 200 content-type text/plain string "hello from the app"
"""

HOP_BODY = """
frontend hop1
    bind 127.0.0.1:{ha1}
    default_backend to_hop2
backend to_hop2
    http-reuse always
    server hop2 127.0.0.1:{ha2} ssl crt {dir}/frontend.pem ca-file {dir}/ca.pem verify required alpn http/1.1
frontend hop2
    bind 127.0.0.1:{ha2} ssl crt {dir}/product.pem ca-file {dir}/ca.pem verify required alpn http/1.1
    default_backend to_app
backend to_app
    http-reuse always
    server app 127.0.0.1:{app}
"""

# The same two hops as two HAProxy processes, one per hop, as the two sidecars are two
# processes: each hop then pays the cross-process wake-ups that the sidecar pair pays.
HOP1_PROC_BODY = """
frontend hop1p
    bind 127.0.0.1:{ha1p}
    default_backend to_hop2p
backend to_hop2p
    http-reuse always
    server hop2p 127.0.0.1:{ha2p} ssl crt {dir}/frontend.pem ca-file {dir}/ca.pem verify required alpn http/1.1
"""

HOP2_PROC_BODY = """
frontend hop2p
    bind 127.0.0.1:{ha2p} ssl crt {dir}/product.pem ca-file {dir}/ca.pem verify required alpn http/1.1
    default_backend to_appp
backend to_appp
    http-reuse always
    server app 127.0.0.1:{app}
"""

SINGLE_BODY = """
frontend single
    bind 127.0.0.1:{ha_single}
    default_backend to_app1
backend to_app1
    http-reuse always
    server app 127.0.0.1:{app}
"""

PACED_LUA = """
request = function() return wrk.format("GET", "/") end
delay = function() return 10 end
"""
PACED_CONNECTIONS = 11  # each waits 10 ms between requests: about 1,000 req/s


def ensure_tools() -> None:
    missing = [tool for tool in ("haproxy", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"installing {' '.join(missing)} from Debian ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "haproxy", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)


def make_pki(directory: Path) -> None:
    from tests.proxy.dataplane.mesh import Ca, spiffe

    ca = Ca.make("bench root")
    (directory / "ca.pem").write_bytes(ca.pem)
    for name, sa in (("frontend", "frontend"), ("product", "product")):
        chain, key = ca.leaf(spiffe("shop", sa))
        (directory / f"{name}.crt").write_bytes(chain)
        (directory / f"{name}.key").write_bytes(key)
        (directory / f"{name}.pem").write_bytes(chain + key)


# ---------------------------------------------------------------- sidecar process

def sidecar_main(role: str, directory: Path) -> None:
    """One sidecar process; imports only the data plane (RSS is part of the measurement)."""
    import uvloop

    from hyphal.proxy.dataplane import DataPlane
    from hyphal.proxy.runtime.holder import ConfigHolder
    from hyphal.proxy.runtime.tables import (
        AnyRule, ClusterAction, ClusterSpec, DownstreamTls, EndpointSpec, ListenerKind,
        ListenerSpec, OrRule, PrincipalRule, ProxyConfig, RbacEngine, RbacPolicy, Route,
        RouteMatch, RouteTable, StringKind, StringMatch, UpstreamTls, VirtualHost,
    )
    from hyphal.proxy.transport.tls import TlsMaterial
    from hyphal.telemetry.accesslog import AccessLog
    from hyphal.telemetry.stats import Stats

    ca = (directory / "ca.pem").read_bytes()
    td = "spiffe://cluster.local/ns/shop/sa/"
    product_id, frontend_id = td + "product", td + "frontend"

    def routes(name: str, cluster: str) -> RouteTable:
        route = Route("default", RouteMatch(), ClusterAction.single(cluster))
        return RouteTable.build(name, (VirtualHost(name, ("*",), (route,)),))

    def app_cluster(name: str) -> ClusterSpec:
        return ClusterSpec(name, (EndpointSpec("127.0.0.1", PORTS["app"]),))

    tls: TlsMaterial | None = None
    # HYPHAL_BENCH_PLAIN=1: the A -> B leg in plaintext (what the TLS leg itself costs).
    plain = os.environ.get("HYPHAL_BENCH_PLAIN") == "1"
    if role == "single":
        cfg = ProxyConfig("1", (ListenerSpec("outbound_http", "127.0.0.1", PORTS["s1_out"],
                                             ListenerKind.OUTBOUND_HTTP,
                                             route_config="outbound_http"),),
                          {"outbound_http": routes("outbound_http", "product")},
                          {"product": app_cluster("product")})
    elif role == "a":
        tls = TlsMaterial((directory / "frontend.crt").read_bytes(),
                          (directory / "frontend.key").read_bytes(), ca)
        product = ClusterSpec("product", (EndpointSpec("127.0.0.1", PORTS["sb_in"]),),
                              tls=None if plain else UpstreamTls("product",
                                                                 frozenset({product_id})))
        cfg = ProxyConfig("1", (ListenerSpec("outbound_http", "127.0.0.1", PORTS["sa_out"],
                                             ListenerKind.OUTBOUND_HTTP,
                                             route_config="outbound_http"),),
                          {"outbound_http": routes("outbound_http", "product")},
                          {"product": product}, identity=frontend_id, workload="frontend",
                          namespace="shop")
    else:
        tls = TlsMaterial((directory / "product.crt").read_bytes(),
                          (directory / "product.key").read_bytes(), ca)
        rbac = RbacEngine(allow=(RbacPolicy("frontend", AnyRule(), AnyRule() if plain else OrRule((
            PrincipalRule(StringMatch(StringKind.EXACT, frontend_id)),))),))
        inbound = ListenerSpec(f"inbound|{PORTS['sb_in']}", "127.0.0.1", PORTS["sb_in"],
                               ListenerKind.INBOUND_HTTP, tls=None if plain else DownstreamTls(),
                               inline_routes=routes("inbound", "inbound|8080||"), rbac=rbac)
        cfg = ProxyConfig("1", (inbound,), {}, {"inbound|8080||": app_cluster("inbound|8080||")},
                          identity=product_id, workload="product", namespace="shop")

    async def run() -> None:
        plane = DataPlane(ConfigHolder(), tls, AccessLog(str(directory / f"access-{role}.log")),
                          Stats())
        await plane.apply(cfg)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await plane.close()

    profile_dir = os.environ.get("HYPHAL_BENCH_PROFILE")
    if not profile_dir:
        uvloop.run(run())
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvloop.run(run())
    finally:
        profiler.disable()
        profiler.dump_stats(str(Path(profile_dir) / f"sidecar-{role}.prof"))


def floor_main() -> None:
    """The floor of this stack: a featureless keep-alive HTTP/1.1 proxy on uvloop + httptools +
    Protocols, one upstream connection per downstream one, no routing, telemetry or policy.
    What the sidecar costs above it is the price of its features and of our code."""
    import httptools
    import uvloop

    class Up(asyncio.Protocol):
        def __init__(self, down: Down) -> None:
            self.down = down
            self.parser = httptools.HttpResponseParser(self)
            self.chunks: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            self.chunks.append(data)
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.down.transport.write(b"".join(self.chunks))
            self.chunks.clear()

    class Down(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)
            self.parser = httptools.HttpRequestParser(self)
            self.headers: list[bytes] = []
            self.up: Up | None = None
            self.pending: bytes | None = None
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            _, up = await asyncio.get_running_loop().create_connection(
                lambda: Up(self), "127.0.0.1", PORTS["app"])
            self.up = up
            if self.pending is not None:
                self.up.transport.write(self.pending)
                self.pending = None

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append(name + b": " + value)

        def on_message_complete(self) -> None:
            head = b"GET " + self.url + b" HTTP/1.1\r\n" + b"\r\n".join(self.headers) + b"\r\n\r\n"
            self.headers = []
            if self.up is None:
                self.pending = head
            else:
                self.up.transport.write(head)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(Down, "127.0.0.1", PORTS["floor"])
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(run())


def profile_main(out_dir: Path, duration: int) -> None:
    """Only the two-sidecar mTLS chain, each sidecar under cProfile; prints the top entries."""
    import pstats

    ensure_tools()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hyphal-bench-") as tmp:
        directory = Path(tmp)
        make_pki(directory)
        (directory / "app.cfg").write_text(
            HAPROXY_TEMPLATE.format(body=APP_BODY.format(**PORTS)))
        procs = Procs()
        os.environ["HYPHAL_BENCH_PROFILE"] = str(out_dir)
        try:
            procs.start(["haproxy", "-f", str(directory / "app.cfg")], cpu=1,
                        ready_port=PORTS["app"])
            side = [sys.executable, str(Path(__file__).resolve()), "--dir", tmp, "--sidecar"]
            procs.start([*side, "b"], cpu=0, wait_line=True)
            procs.start([*side, "a"], cpu=0, wait_line=True)
            wrk(PORTS["sa_out"], 4, 1)
            print(f"profiled run: {wrk(PORTS['sa_out'], 32, duration)}")
        finally:
            procs.stop_all()
            os.environ.pop("HYPHAL_BENCH_PROFILE", None)
    for role in ("a", "b"):
        print(f"==== sidecar {role}")
        pstats.Stats(str(out_dir / f"sidecar-{role}.prof")).sort_stats("tottime").print_stats(30)


# ---------------------------------------------------------------- orchestration

def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], cpu: int, ready_port: int | None = None,
              wait_line: bool = False) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), *cmd],
                                stdout=subprocess.PIPE if wait_line else subprocess.DEVNULL)
        self.procs.append(proc)
        if wait_line and proc.stdout is not None:
            proc.stdout.readline()
        if ready_port is not None:
            wait_port(ready_port)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def wrk(port: int, connections: int, duration: int, script: Path | None = None) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"),
            "non2xx": float(errors.group(1)) if errors else 0.0,
            "requests": float(total.group(1)) if total else float("nan")}


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes so far (from /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sidecar", choices=("a", "b", "single", "floor"))
    parser.add_argument("--dir")
    parser.add_argument("--profile", metavar="OUT_DIR",
                        help="only profile the two-sidecar chain (cProfile) into OUT_DIR")
    args = parser.parse_args()
    if args.sidecar == "floor":
        floor_main()
        return
    if args.sidecar:
        sidecar_main(args.sidecar, Path(args.dir))
        return
    if args.profile:
        profile_main(Path(args.profile), args.duration)
        return
    ensure_tools()
    py = sys.executable
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hyphal-bench-") as tmp:
        directory = Path(tmp)
        make_pki(directory)
        fmt = {**PORTS, "dir": tmp}
        for name, body in (("app", APP_BODY), ("hops", HOP_BODY), ("single", SINGLE_BODY),
                           ("hop1p", HOP1_PROC_BODY), ("hop2p", HOP2_PROC_BODY)):
            (directory / f"{name}.cfg").write_text(HAPROXY_TEMPLATE.format(body=body.format(**fmt)))
        procs = Procs()
        try:
            procs.start(["haproxy", "-f", str(directory / "app.cfg")], cpu=1, ready_port=PORTS["app"])
            ha_hops = procs.start(["haproxy", "-f", str(directory / "hops.cfg")], cpu=0,
                                  ready_port=PORTS["ha1"])
            ha_hop2p = procs.start(["haproxy", "-f", str(directory / "hop2p.cfg")], cpu=0,
                                   ready_port=PORTS["ha2p"])
            ha_hop1p = procs.start(["haproxy", "-f", str(directory / "hop1p.cfg")], cpu=0,
                                   ready_port=PORTS["ha1p"])
            ha_single = procs.start(["haproxy", "-f", str(directory / "single.cfg")], cpu=0,
                                    ready_port=PORTS["ha_single"])
            side = [py, str(Path(__file__).resolve()), "--dir", tmp, "--sidecar"]
            single = procs.start([*side, "single"], cpu=0, wait_line=True)
            floor = procs.start([*side, "floor"], cpu=0, wait_line=True)
            side_b = procs.start([*side, "b"], cpu=0, wait_line=True)
            side_a = procs.start([*side, "a"], cpu=0, wait_line=True)
            setups = {"direct": PORTS["app"], "haproxy-1": PORTS["ha_single"],
                      "python-floor-1": PORTS["floor"],
                      "sidecar-1": PORTS["s1_out"], "haproxy-2tls": PORTS["ha1"],
                      "haproxy-2tls-2p": PORTS["ha1p"], "sidecar-2tls": PORTS["sa_out"]}
            # The proxy processes whose CPU time a setup's requests cost.
            proxy_pids = {"direct": [], "haproxy-1": [ha_single.pid],
                          "python-floor-1": [floor.pid],
                          "sidecar-1": [single.pid], "haproxy-2tls": [ha_hops.pid],
                          "haproxy-2tls-2p": [ha_hop1p.pid, ha_hop2p.pid],
                          "sidecar-2tls": [side_a.pid, side_b.pid]}
            for port in setups.values():
                wrk(port, 4, 1)  # warm up: connections, pools, TLS sessions
            for run in range(args.runs):
                for name, port in setups.items():  # interleaved, as the noise note advises
                    low = wrk(port, 1, max(2, args.duration // 2))
                    cpu_before = cpu_seconds(proxy_pids[name])
                    high = wrk(port, 32, args.duration)
                    cpu = cpu_seconds(proxy_pids[name]) - cpu_before
                    results.setdefault(name, []).append({
                        "low_p50": low["p50"], "low_p99": low["p99"], "rps": high["rps"],
                        "sat_p50": high["p50"], "sat_p99": high["p99"],
                        "cpu_us": cpu / high["requests"] * 1e6 if proxy_pids[name] else 0.0,
                        "non2xx": low["non2xx"] + high["non2xx"]})
                    print(f"run {run + 1} {name:13} {results[name][-1]}", flush=True)
            script = directory / "paced.lua"
            script.write_text(PACED_LUA)
            paced = {}
            for label, proc, port in (("sidecar-1", single, PORTS["s1_out"]),
                                      ("sidecar-2tls A", side_a, PORTS["sa_out"])):
                holder: dict[str, float] = {}

                async def sample(pid: int, out: dict[str, float]) -> None:
                    await asyncio.sleep(2.5)
                    out["rss"] = rss_mb(pid)

                async def both(pid: int = proc.pid, out: dict[str, float] = holder,
                               port_: int = port) -> dict[str, float]:
                    task = asyncio.ensure_future(sample(pid, out))
                    res = await asyncio.to_thread(wrk, port_, PACED_CONNECTIONS, 5, script)
                    await task
                    return res

                res = asyncio.run(both())
                paced[label] = (res["rps"], holder["rss"])
            paced["sidecar-2tls B"] = (paced["sidecar-2tls A"][0], rss_mb(side_b.pid))
            haproxy_rss = {"haproxy-1": rss_mb(ha_single.pid),
                           "haproxy-2tls (both hops)": rss_mb(ha_hops.pid),
                           "haproxy-2tls-2p (both hops)": rss_mb(ha_hop1p.pid) + rss_mb(ha_hop2p.pid)}
        finally:
            procs.stop_all()
    print()
    print(f"machine: {os.cpu_count()} CPUs, {open('/proc/cpuinfo').read().split('model name')[1].split(chr(10))[0].strip(': ')}")
    print(f"command: python bench/bench_proxy.py --duration {args.duration} --runs {args.runs}")
    print(f"{'setup':14} {'rps@c32':>9} {'p50 c32':>8} {'p99 c32':>8} {'p50 c1':>8} "
          f"{'p99 c1':>8} {'cpu us/rq':>9} {'non2xx':>7}")
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        med = {key: sorted(r[key] for r in runs)[len(runs) // 2] for key in runs[0]}
        summary[name] = med
        print(f"{name:14} {med['rps']:9.0f} {med['sat_p50']:7.2f}ms {med['sat_p99']:7.2f}ms "
              f"{med['low_p50']:7.3f}ms {med['low_p99']:7.3f}ms {med['cpu_us']:9.1f} "
              f"{med['non2xx']:7.0f}")
    ratio = summary["sidecar-2tls"]["rps"] / summary["haproxy-2tls"]["rps"]
    ratio_2p = summary["sidecar-2tls"]["rps"] / summary["haproxy-2tls-2p"]["rps"]
    added_side = summary["sidecar-2tls"]["low_p50"] - summary["direct"]["low_p50"]
    added_ha = summary["haproxy-2tls"]["low_p50"] - summary["direct"]["low_p50"]
    added_ha_2p = summary["haproxy-2tls-2p"]["low_p50"] - summary["direct"]["low_p50"]
    print(f"two-hop mTLS throughput, sidecars / HAProxy: {ratio:.2f} (target >= 0.8)")
    print(f"  against HAProxy as two processes, one per hop: {ratio_2p:.2f}")
    print(f"p50 added at low rate: sidecars {added_side:.3f} ms, HAProxy {added_ha:.3f} ms, "
          f"ratio {added_side / added_ha if added_ha > 0 else float('nan'):.2f} (target <= 1.2)")
    print(f"  against HAProxy as two processes: {added_ha_2p:.3f} ms, ratio "
          f"{added_side / added_ha_2p if added_ha_2p > 0 else float('nan'):.2f}")
    for label, (rps, rss) in paced.items():
        print(f"RSS at ~{rps:.0f} req/s: {label}: {rss:.1f} MB (target <= 40)")
    for label, rss in haproxy_rss.items():
        print(f"RSS after the runs: {label}: {rss:.1f} MB")


if __name__ == "__main__":
    main()
