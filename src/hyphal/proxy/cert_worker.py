"""Obtain a workload certificate in a short-lived child process (`-m hyphal.proxy.cert_worker`).

Making the key and the CSR and checking the CA's answer take `cryptography`, whose import
costs ~10 MB of RSS that would stay for the life of the sidecar, although it is needed only
at start and at each rotation, hours apart. So the sidecar runs this module as a child: the
request goes in as JSON on stdin; the new bundle (key, chain, roots) and what the sidecar
reports about it later (serial, validity, the root it chains to) come back as JSON on stdout.
The private key is made in the child and crosses only that pipe: it is never logged, never
written to disk. Errors come back as CertificateRequestError with the CA's gRPC status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hyphal.identity.client import CertBundle, CertificateRequestError
from hyphal.identity.spiffe import SpiffeId

__all__ = ["LeafFacts", "candidate_roots", "leaf_facts", "obtain"]

log = logging.getLogger("hyphal.proxy.certs")

# The child imports hyphal from the same tree as this process (tests run from a checkout).
_SRC = str(Path(__file__).resolve().parents[2])
_STARTUP_S = 30.0  # the child's own start (interpreter, grpc, cryptography) on a busy host


@dataclass(frozen=True, slots=True)
class LeafFacts:
    """What the sidecar reports about its certificate (/config_dump, CERT_ROOT)."""

    serial: str
    not_before: str
    not_after: str
    root_fingerprint: str  # SHA-256 of the root that issued the leaf ('' if none of ours)


async def obtain(
    address: str,
    root_pem: bytes,
    token: str | None,
    spiffe_id: SpiffeId,
    ttl: dt.timedelta,
    *,
    client_bundle: CertBundle | None,
    timeout: float,
    trust_bundle: bytes,
    bootstrap_root: bytes,
) -> tuple[CertBundle, LeafFacts]:
    """`hyphal.identity.client.request_certificate` with a fresh key, run in a child; the
    root that issued the new leaf is looked up as `candidate_roots` says."""
    request = {
        "address": address,
        "root_pem": root_pem.decode("ascii"),
        "token": token,
        "spiffe_id": spiffe_id.uri,
        "ttl_s": ttl.total_seconds(),
        "client_bundle": _bundle_to_json(client_bundle) if client_bundle else None,
        "timeout": timeout,
        "trust_bundle": trust_bundle.decode("ascii"),
        "bootstrap_root": bootstrap_root.decode("ascii"),
    }
    try:
        reply = await _in_child(request, timeout + _STARTUP_S)
    except OSError as exc:
        # Cannot start a process here (a sandbox): do the same work in this process, which
        # then keeps `cryptography` loaded. Serving beats saving memory.
        log.warning("cannot start the certificate worker (%s); requesting the certificate "
                    "in the sidecar process", exc)
        reply = await _issue(request)
    except TimeoutError:
        raise CertificateRequestError(
            f"the certificate worker for {spiffe_id.uri} did not answer within "
            f"{timeout + _STARTUP_S:.0f}s") from None
    if reply is None:
        raise CertificateRequestError(
            f"the certificate worker for {spiffe_id.uri} failed; its error is in this "
            "sidecar's log")
    if "error" in reply:
        code = reply.get("code")
        raise CertificateRequestError(reply["error"], grpc.StatusCode[code] if code else None)
    return _bundle_from_json(reply["bundle"]), LeafFacts(**reply["facts"])


async def _in_child(request: dict[str, Any], limit_s: float) -> dict[str, Any] | None:
    """Run `python -m hyphal.proxy.cert_worker` on `request`; its reply, or None if it failed.

    Started with `subprocess` (vfork + exec) rather than the event loop's spawn (fork under
    uvloop: gRPC's fork handlers, a copy of this process's page tables), and from the very
    binary this process runs (`/proc/self/exe`, named as `sys.executable` so that the same
    virtualenv applies): a sidecar running under another uid may not be able to resolve the
    path `sys.executable` names. Request and reply go through the event loop's pipes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH", "")) if p)
    exe = "/proc/self/exe" if os.path.exists("/proc/self/exe") else sys.executable
    proc = subprocess.Popen(
        [sys.executable, "-m", __name__], executable=exe, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    loop = asyncio.get_running_loop()
    writer: asyncio.WriteTransport | None = None
    try:
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, proc.stdin)
        writer.write(json.dumps(request).encode())
        writer.close()  # after the buffer is flushed: the worker reads to EOF
        async with asyncio.timeout(limit_s):
            out = await _read_all(proc.stdout)
            while proc.poll() is None:  # it exits right after writing its reply
                await asyncio.sleep(0.01)
    finally:
        if proc.poll() is None:  # timed out, or cancelled because the sidecar is stopping
            proc.kill()
            proc.wait()
        if writer is not None and not writer.is_closing():
            writer.abort()  # the pipe transports own (and close) the pipes
    try:
        reply = json.loads(out)
    except ValueError:
        return None
    return reply if proc.returncode == 0 and isinstance(reply, dict) else None


async def _read_all(pipe: Any) -> bytes:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await reader.read()
    finally:
        transport.close()


def candidate_roots(trust_bundle: bytes, bundle: CertBundle, bootstrap_root: bytes) -> bytes:
    """Where to look for the root that issued `bundle`, in order: the control plane's
    roots (ROOTCA), the CA's answer, the bootstrap root."""
    return trust_bundle + b"\n" + bundle.roots_pem + b"\n" + bootstrap_root


def leaf_facts(bundle: CertBundle, candidates: bytes) -> LeafFacts:
    """Serial, validity and issuing root of `bundle`'s leaf (imports `cryptography`: the
    child calls it, and the sidecar only for a bundle it did not get from the child)."""
    from cryptography import x509

    from hyphal.control.ca.bundle import fingerprint, issued_by
    from hyphal.identity.certs import CertificateError, load_chain

    leaf = x509.load_pem_x509_certificate(bundle.chain_pem)
    try:
        roots = load_chain(candidates)
    except (CertificateError, ValueError):
        roots = []
    return LeafFacts(
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc.isoformat(),
        not_after=leaf.not_valid_after_utc.isoformat(),
        root_fingerprint=next((fingerprint(r) for r in roots if issued_by(leaf, r)), ""),
    )


def _bundle_to_json(b: CertBundle) -> dict[str, Any]:
    return {
        "key_pem": b.key_pem.decode("ascii"),
        "chain_pem": b.chain_pem.decode("ascii"),
        "not_after": b.not_after.isoformat(),
        "spiffe_id": b.spiffe_id.uri,
        "issued_at": b.issued_at.isoformat(),
        "roots_pem": b.roots_pem.decode("ascii"),
    }


def _bundle_from_json(d: dict[str, Any]) -> CertBundle:
    return CertBundle(
        key_pem=d["key_pem"].encode("ascii"),
        chain_pem=d["chain_pem"].encode("ascii"),
        not_after=dt.datetime.fromisoformat(d["not_after"]),
        spiffe_id=SpiffeId.parse(d["spiffe_id"]),
        issued_at=dt.datetime.fromisoformat(d["issued_at"]),
        roots_pem=d["roots_pem"].encode("ascii"),
    )


async def _issue(req: dict[str, Any]) -> dict[str, Any]:
    """The worker's work: a key, the CSR, the CA's answer checked; its reply as JSON data."""
    from hyphal.identity.client import request_certificate
    from hyphal.identity.keys import generate_key

    client = req["client_bundle"]
    try:
        bundle = await request_certificate(
            req["address"],
            req["root_pem"].encode("ascii"),
            req["token"],
            generate_key(),
            SpiffeId.parse(req["spiffe_id"]),
            dt.timedelta(seconds=req["ttl_s"]),
            client_bundle=_bundle_from_json(client) if client else None,
            timeout=req["timeout"],
        )
    except CertificateRequestError as exc:
        return {"error": str(exc), "code": exc.code.name if exc.code else None}
    facts = leaf_facts(bundle, candidate_roots(
        req["trust_bundle"].encode("ascii"), bundle, req["bootstrap_root"].encode("ascii")))
    return {"bundle": _bundle_to_json(bundle), "facts": {
        "serial": facts.serial, "not_before": facts.not_before,
        "not_after": facts.not_after, "root_fingerprint": facts.root_fingerprint}}


def _main() -> int:
    reply = asyncio.run(_issue(json.loads(sys.stdin.read())))
    sys.stdout.write(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
