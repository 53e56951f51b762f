"""Sidecar memory (not a test; prints its numbers): VmRSS of the data-plane-only sidecars and of
real `hyphal proxy` processes.

  bench sidecars  bench_proxy.py's sidecar A (outbound, mTLS client) and B (inbound, mTLS
                  server, RBAC), built by hand, data plane only: idle, then while wrk paces
                  about 1,000 req/s through A -> B -> app (20 connections, 10 ms apart)
  real sidecars   `hyphal proxy --bootstrap FILE` x3 in tests/e2e's web/api mesh (control
                  plane, CA, xDS, mTLS), idle once synced and after one request through them

Each line: VmRSS, and of it anonymous / file-backed pages (file pages of shared libraries are
shared between sidecars on one host but count in each RSS), and the thread count. Uses its
own ports (25100-25106) and temporary directories; stops everything it starts.

Usage: python bench/bench_memory.py [--rounds 2] [--only bench|real]
       HYPHAL_SRC=<tree>/src runs the sidecars from another source tree (A/B).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(os.environ.get("HYPHAL_SRC", str(ROOT / "src"))).resolve()
TREE = SRC.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import bench_proxy as bp  # noqa: E402

PORTS = {"app": 25100, "ha1": 25101, "ha2": 25102, "sa_out": 25103, "sb_in": 25104,
         "s1_out": 25105, "ha_single": 25106}
PACED_CONNECTIONS = 20  # each waits 10 ms between requests: about 1,000 req/s


def memory(pid: int) -> str:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            fields[key] = value.split()[0]
    mb = {k: int(fields[k]) / 1024 for k in ("VmRSS", "RssAnon", "RssFile")}
    return (f"{mb['VmRSS']:5.1f} MB (anon {mb['RssAnon']:4.1f}, file {mb['RssFile']:4.1f}), "
            f"{fields['Threads']} threads")


def bench_sidecars(rounds: int) -> None:
    bp.PORTS.update(PORTS)

    def sidecar(role: str, directory: str) -> list[str]:
        code = (f"import sys; sys.argv = ['bench_proxy.py']; "
                f"sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                f"import bench_proxy as bp; bp.PORTS.update({PORTS!r}); "
                f"from pathlib import Path; bp.sidecar_main({role!r}, Path({directory!r}))")
        return [sys.executable, "-c", code]

    bp.ensure_tools()
    with tempfile.TemporaryDirectory(prefix="hyphal-bench-mem-") as tmp:
        directory = Path(tmp)
        bp.make_pki(directory)
        (directory / "app.cfg").write_text(
            bp.HAPROXY_TEMPLATE.format(body=bp.APP_BODY.format(**PORTS)))
        script = directory / "paced.lua"
        script.write_text(bp.PACED_LUA)
        procs = bp.Procs()
        try:
            procs.start(["haproxy", "-f", str(directory / "app.cfg")], cpu=1,
                        ready_port=PORTS["app"])
            for n in range(rounds):
                side_b = procs.start(sidecar("b", tmp), cpu=0, wait_line=True)
                side_a = procs.start(sidecar("a", tmp), cpu=0, wait_line=True)
                time.sleep(1.0)
                print(f"round {n + 1}, idle:  A {memory(side_a.pid)}")
                print(f"round {n + 1}, idle:  B {memory(side_b.pid)}")
                bp.wrk(PORTS["sa_out"], 4, 1)  # warm up: connections, pools
                seen: dict[str, str] = {}

                async def sample(a: int = side_a.pid, b: int = side_b.pid,
                                 out: dict[str, str] = seen) -> None:
                    await asyncio.sleep(2.5)
                    out["a"], out["b"] = memory(a), memory(b)

                async def paced() -> dict[str, float]:
                    task = asyncio.ensure_future(sample())
                    res = await asyncio.to_thread(bp.wrk, PORTS["sa_out"], PACED_CONNECTIONS, 5,
                                                  script)
                    await task
                    return res

                res = asyncio.run(paced())
                print(f"round {n + 1}, {res['rps']:.0f} req/s: A {seen['a']}")
                print(f"round {n + 1}, {res['rps']:.0f} req/s: B {seen['b']}")
                for proc in (side_a, side_b):
                    proc.terminate()
                    proc.wait(5)
                    procs.procs.remove(proc)
        finally:
            procs.stop_all()


def real_sidecars(rounds: int) -> None:
    import mesh_harness
    from test_sidecar_mesh import NS, RESOURCES

    os.environ["PYTHONPATH"] = str(SRC)
    mesh_harness.REPO = TREE
    for n in range(rounds):
        with tempfile.TemporaryDirectory(prefix="hyphal-bench-mem-mesh-") as tmp:
            mesh = mesh_harness.Mesh(Path(tmp))
            try:
                mesh.start_control(RESOURCES)
                mesh.add_workload("web", NS, "web", {"app": "web", "version": "v1"})
                mesh.add_workload("api-v1", NS, "api", {"app": "api", "version": "v1"})
                mesh.add_workload("api-v2", NS, "api", {"app": "api", "version": "v2"})
                mesh.wait_ready()
                web = mesh.workloads["web"]
                deadline = time.monotonic() + 15.0
                while True:  # until api's endpoints have reached web's sidecar
                    status, _ = mesh_harness.http_get(
                        f"http://127.0.0.1:{web.outbound_port}/", headers={"Host": "api"})
                    if status == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                time.sleep(5.0)  # synced and settled
                for name, w in mesh.workloads.items():
                    print(f"round {n + 1}, {name:7} (GET via web: {status}): "
                          f"{memory(w.sidecar_pid)}")
            finally:
                mesh.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=("bench", "real"))
    args = parser.parse_args()
    print(f"sidecars from {SRC}")
    if args.only != "real":
        print("== bench sidecars (data plane only, bench_proxy.py's A and B)")
        bench_sidecars(args.rounds)
    if args.only != "bench":
        print("== real sidecars (hyphal proxy in tests/e2e's web/api mesh)")
        real_sidecars(args.rounds)


if __name__ == "__main__":
    main()
