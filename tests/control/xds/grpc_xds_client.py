"""Subprocess for the proxyless interop test: grpcio's own xDS client calling xds:///TARGET.

Protocol on stdout (one JSON object a line): {"phase": "first", "a": N, "b": M} after the
first N calls; then, after reading "go" on stdin, it calls in batches of 50 until a batch is
mostly backend B, prints {"phase": "switched", "seconds": S}, makes N more calls and prints
{"phase": "after", "a": N, "b": M}. GRPC_XDS_BOOTSTRAP_CONFIG must be set by the parent.
"""

from __future__ import annotations

import json
import sys
import time

import grpc


def main() -> None:
    target, calls = sys.argv[1], int(sys.argv[2])
    with grpc.insecure_channel(f"xds:///{target}") as channel:
        hello = channel.unary_unary("/demo.Greeter/Hello")
        hello(b"", timeout=10, wait_for_ready=True)

        def count(n: int) -> dict[str, int]:
            out = {"a": 0, "b": 0}
            for _ in range(n):
                out[hello(b"", timeout=5).decode()] += 1
            return out

        print(json.dumps({"phase": "first", **count(calls)}), flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        start = time.monotonic()
        while time.monotonic() - start < 10:
            batch = count(50)
            if batch["b"] > batch["a"]:
                break
        print(json.dumps({"phase": "switched", "seconds": time.monotonic() - start}), flush=True)
        print(json.dumps({"phase": "after", **count(calls)}), flush=True)


if __name__ == "__main__":
    main()
