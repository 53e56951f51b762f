"""Benchmark: CA signatures per second, in-process and end to end over gRPC with TLS.

    .venv/bin/python bench/bench_ca.py [--seconds 3] [--clients 1,8,32] [--server sync|aio]

In-process: CertificateAuthority.sign_csr on pre-made CSRs (the CSR check and the signature,
which is what the CA pays per request). End to end: a CA server in a child process on
127.0.0.1 (TLS, bearer token), N concurrent grpc.aio clients each with its own channel,
pre-made CSRs, so the numbers are the server's capacity rather than the clients' key making.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import platform
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import grpc

from hyphal.control.ca.authority import CertificateAuthority
from hyphal.control.ca.proto import ca_pb2, ca_pb2_grpc
from hyphal.control.ca.service import add_ca_service
from hyphal.control.ca.tokens import TokenIssuer
from hyphal.identity.keys import generate_key, make_csr
from hyphal.identity.spiffe import SpiffeId

SID = SpiffeId("cluster.local", "bench", "client")
TTL = dt.timedelta(hours=1)
MAX_CALLS = 200_000  # hard bound on any loop, whatever --seconds says


def make_csrs(n: int) -> list[bytes]:
    return [make_csr(generate_key(), SID) for _ in range(n)]


def bench_in_process(
    ca: CertificateAuthority, csrs: list[bytes], seconds: float
) -> tuple[float, float]:
    """(signatures per wall second, per CPU second); the second is robust to a busy machine."""
    for csr in csrs[:20]:  # warm up
        ca.sign_csr(csr, SID, TTL)
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline and done < MAX_CALLS:
        ca.sign_csr(csrs[done % len(csrs)], SID, TTL)
        done += 1
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def serve(state: str, kind: str, conn: Connection) -> None:
    ca = CertificateAuthority.load_or_create(Path(state), "cluster.local")
    tokens = TokenIssuer.load_or_create(Path(state))
    creds = ca.server_credentials().grpc_credentials()
    if kind == "aio":

        async def main() -> None:
            server = grpc.aio.server()
            add_ca_service(server, ca, tokens, TTL, TTL)
            port = server.add_secure_port("127.0.0.1:0", creds)
            await server.start()
            conn.send(port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            await server.stop(None)

        asyncio.run(main())
        return
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    add_ca_service(server, ca, tokens, TTL, TTL)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    conn.send(port)
    conn.recv()  # wait for "stop"
    server.stop(None)


async def bench_grpc(
    target: str, root: bytes, token: str, csrs: list[str], clients: int, seconds: float
) -> tuple[float, float]:
    metadata = (("authorization", f"Bearer {token}"),)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> int:
        n = 0
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root)) as ch:
            stub = ca_pb2_grpc.IstioCertificateServiceStub(ch)
            warm = ca_pb2.IstioCertificateRequest(csr=csrs[i % len(csrs)])
            await stub.CreateCertificate(warm, metadata=metadata, timeout=10)
            await barrier.wait()
            while time.perf_counter() < stop_at and n < MAX_CALLS // clients:
                req = ca_pb2.IstioCertificateRequest(csr=csrs[(i + n) % len(csrs)])
                t0 = time.perf_counter()
                await stub.CreateCertificate(req, metadata=metadata, timeout=10)
                latencies.append(time.perf_counter() - t0)
                n += 1
        return n

    barrier = asyncio.Barrier(clients)
    start = time.perf_counter()
    counts = await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    return sum(counts) / elapsed, p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--server", choices=["sync", "aio"], default="sync")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"Python {platform.python_version()}, grpcio {grpc.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        ca = CertificateAuthority.load_or_create(state, "cluster.local")
        tokens = TokenIssuer.load_or_create(state)
        csrs = make_csrs(64)
        rate, cpu_rate = bench_in_process(ca, csrs, args.seconds)
        print(f"in-process sign_csr: {rate:,.0f} signatures/s wall, {cpu_rate:,.0f} per "
              f"CPU-second ({1e6 / cpu_rate:.0f} us of CPU each)")  # fmt: skip

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(str(state), args.server, child), daemon=True)
        proc.start()
        try:
            if not parent.poll(30):
                raise SystemExit("CA server did not start within 30 s")
            target = f"127.0.0.1:{parent.recv()}"
            token = tokens.mint("bench", "client", dt.timedelta(minutes=10))
            pems = [c.decode() for c in csrs]
            for n in [int(x) for x in args.clients.split(",")]:
                rps, p50 = asyncio.run(
                    bench_grpc(target, ca.root_cert_pem, token, pems, n, args.seconds)
                )
                print(f"gRPC ({args.server} server, TLS, {n:>3} clients): "
                      f"{rps:,.0f} signatures/s, p50 {p50 * 1e3:.2f} ms")  # fmt: skip
        finally:
            parent.send("stop")
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


if __name__ == "__main__":
    main()
