"""`python -m hyphal.demo examples/shop` (what `make demo` runs): the shop mesh, shown working.

Brings the mesh up with `hyphal up`, drives traffic from inside it (through the sidecars'
outbound ports, as the apps themselves do) and prints what it saw: the canary split, the
identity on every hop (from the x-forwarded-client-cert headers the apps received), one call
that the AuthorizationPolicy allows and one it denies. Then it keeps the mesh up until Ctrl-C
(or exits at once with DEMO_ONCE=1) and always stops it: no process is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from types import FrameType
from typing import Any

from hyphal.local.client import MeshClient, xfcc_uri
from hyphal.local.observe import find_replica
from hyphal.local.rundir import MeshState, RunDir
from hyphal.local.teardown import stop_mesh


def _hyphal(*args: str) -> int:
    child = subprocess.Popen([sys.executable, "-m", "hyphal", *args])
    try:
        return child.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the child too; let it finish stopping what it started.
        child.wait(timeout=120)
        raise


def _proxy_port(state: MeshState, workload: str) -> int:
    return int(find_replica(state, workload, 0)["outbound_http_port"])


def _wait_converged(front: MeshClient, order: MeshClient, timeout: float = 20.0) -> None:
    """Until every route answers from an app (not a mesh-made 503 while config converges)."""
    deadline = time.monotonic() + timeout
    while True:
        ok = (front.get("http://product:8080/product/1").status == 200
              and front.get("http://order:8080/").status == 200
              and order.post("http://payment:8080/process", {}).status == 200)
        if ok:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the mesh did not converge: calls still fail; see `hyphal status`")
        time.sleep(0.1)


def measure_split(client: MeshClient, calls: int) -> Counter[str]:
    versions: Counter[str] = Counter()
    for _ in range(calls):
        resp = client.get("http://product:8080/product/1")
        versions[resp.json()["version"] if resp.status == 200 else f"HTTP {resp.status}"] += 1
    return versions


def _who(caller: str) -> str:
    return xfcc_uri(caller) or "(no client certificate: not mTLS!)"


def show(state: MeshState, calls: int) -> None:
    front = MeshClient(_proxy_port(state, "frontend"))
    order = MeshClient(_proxy_port(state, "order"))
    _wait_converged(front, order)

    t0 = time.monotonic()
    split = measure_split(front, calls)
    took = time.monotonic() - t0
    parts = ", ".join(f"{v} {n} ({100 * n / calls:.1f}%)" for v, n in sorted(split.items()))
    print(f"\nproduct: {parts} over {calls} calls ({calls / took:.0f} calls/s through 2 sidecars)")

    summary: dict[str, Any] = front.get("http://frontend:8080/").json()
    prod, ord_ = summary["product"]["body"], summary["order"]["body"]
    pay = ord_["payment"]["body"]
    print("every hop is mTLS; the identity each app saw calling it (x-forwarded-client-cert):")
    print(f"  frontend -> product ({prod['version']}): caller {_who(prod['caller'])}")
    print(f"  frontend -> order:        caller {_who(ord_['caller'])}")
    print(f"  order    -> payment:      caller {_who(pay['caller'])}")

    allowed = order.post("http://payment:8080/process", {"amount": 1})
    print(f"allowed: order -> payment POST /process: {allowed.status}")
    denied = front.post("http://payment:8080/process", {"amount": 1})
    reason = denied.headers.get("x-hyphal-reason", "-")
    print(f"denied:  frontend -> payment POST /process: {denied.status}, x-hyphal-reason: {reason}")
    front.close()
    order.close()


def payment_check(order: MeshClient) -> str:
    """One order -> payment call: the AuthorizationPolicy's verdict as the demo prints it."""
    resp = order.post("http://payment:8080/process", {"amount": 1})
    reason = resp.headers.get("x-hyphal-reason")
    return f"{resp.status}" + (f" {reason}" if reason else "")


def watch_line(front: MeshClient, order: MeshClient, calls: int) -> str:
    split = measure_split(front, calls)
    parts = ", ".join(f"{v} {n * 100 / calls:.0f}%" for v, n in sorted(split.items()))
    return (f"{time.strftime('%H:%M:%S')} product split over the last {calls} calls: {parts}; "
            f"order -> payment POST /process: {payment_check(order)}")


def watch_split(state: MeshState, every: float = 5.0, calls: int = 200) -> None:
    """Until Ctrl-C: the live product split and payment's verdict on order, one line per
    `every` seconds, so that a `hyphal apply` made in another terminal is seen being
    followed (examples/try/: product-50-50.yaml, payment-deny-all.yaml)."""
    front = MeshClient(_proxy_port(state, "frontend"))
    order = MeshClient(_proxy_port(state, "order"))
    while True:
        print(watch_line(front, order, calls), flush=True)
        time.sleep(every)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hyphal.demo", description=__doc__)
    p.add_argument("dir", nargs="?", default="examples/shop", help="the mesh to run")
    p.add_argument("--run-dir", default=".hyphal")
    p.add_argument("--calls", type=int, default=1000, help="calls for the canary split")
    args = p.parse_args(argv)
    once = os.environ.get("DEMO_ONCE", "") not in ("", "0")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C must work even when started with SIGINT ignored (e.g. `cmd &` in a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        print(f"== hyphal up {args.dir}")
        if _hyphal("up", args.dir, "--run-dir", args.run_dir) != 0:
            return 1
        state = RunDir(args.run_dir).require_state()
        show(state, args.calls)
        if not once:
            print(f"\nthe mesh is up. In another terminal try: hyphal status, "
                  f"hyphal apply -f examples/try/product-50-50.yaml (or "
                  f"payment-deny-all.yaml), "
                  f"hyphal proxy-config frontend routes, hyphal logs payment -f "
                  f"(run dir {args.run_dir}). Ctrl-C stops it.")
            watch_split(state)
    except KeyboardInterrupt:
        print("\ninterrupted")
        code = 130
    except Exception as exc:  # noqa: BLE001 - the demo reports and still tears down
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the teardown
        print("== hyphal down")
        for line in stop_mesh(RunDir(args.run_dir)).lines():
            print(line)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
