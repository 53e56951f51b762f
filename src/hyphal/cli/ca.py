"""`hyphal ca`: show the trusted roots, add one, rotate the signing root, retire an old root.

    hyphal ca show                      roots (subject, fingerprint, expiry), rotation phase,
                                        which root each connected sidecar's certificate uses
    hyphal ca add-root FILE             append PEM root(s) to <state-dir>/ca/trust-bundle.pem
                                        (atomically; the control plane reloads it in ~1 s)
    hyphal ca rotate                    new root -> trusted everywhere -> (every sidecar ACKed)
                                        -> signing switches -> (sidecars renew) -> prints the
                                        retire-root command
    hyphal ca retire-root FINGERPRINT   drop a root no connected sidecar uses any more

Every step the control plane refuses (HTTP 409) is printed with its reason; `rotate` waits
and retries those that only need time (ACKs, renewals) until `--timeout`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hyphal.cli.client import MESH_FILE, ApiClient, ApiError, ClientError, add_api_arguments, locate


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ca", help="the mesh certificate authority: roots and root rotation")
    csub = p.add_subparsers(dest="ca_command", metavar="SUBCOMMAND")

    s = csub.add_parser("show", help="trusted roots, signing root, rotation phase, sidecars")
    add_api_arguments(s)
    s.add_argument("-o", "--output", choices=("table", "json"), default="table")
    s.set_defaults(func=run_show)

    a = csub.add_parser("add-root", help="trust another root (appends to ca/trust-bundle.pem)")
    a.add_argument("file", type=Path, help="PEM file with one or more root certificates")
    a.add_argument("--state-dir", metavar="DIR", help="control plane state directory")
    a.set_defaults(func=run_add_root)

    r = csub.add_parser("rotate", help="rotate the signing root without downtime")
    add_api_arguments(r)
    r.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for ACKs and renewals (default 600)")
    r.add_argument("--no-wait", action="store_true",
                   help="switch signing but do not wait for sidecars to renew")
    r.set_defaults(func=run_rotate)

    t = csub.add_parser("retire-root", help="stop trusting a root (after `rotate`)")
    t.add_argument("fingerprint", help="SHA-256 fingerprint (or a unique prefix) from `ca show`")
    add_api_arguments(t)
    t.set_defaults(func=run_retire)

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(locate(args.api, args.state_dir), use_env_proxy=False)


def _fail(what: str, exc: Exception) -> int:
    errors = exc.errors if isinstance(exc, ApiError) else [str(exc)]
    for e in errors:
        print(f"hyphal ca {what}: {e}", file=sys.stderr)
    return 1


def render(view: dict[str, Any]) -> str:
    """`ca show`'s table."""
    lines = [f"trust domain {view['trust_domain']}"]
    for r in view["roots"]:
        marks = [m for m, on in (("signing", r["signing"]),
                                 ("serving", r["fingerprint"] == view.get("serving_root"))) if on]
        lines.append(f"  {r['fingerprint']}  {r['subject']}  expires {r['not_after']}"
                     + (f"  [{', '.join(marks)}]" if marks else ""))
    rot = view.get("rotation") or {}
    if rot.get("phase", "idle") != "idle":
        lines.append(f"rotation: {rot['phase']} (new root {str(rot['new_root'])[:16]}, "
                     f"old root {str(rot['old_root'])[:16]})")
    sidecars = view.get("sidecars") or []
    if sidecars:
        lines.append("sidecars:")
        for s in sidecars:
            lines.append(f"  {s['node']}  cert root {str(s['cert_root'] or '?')[:16]}  "
                         f"ROOTCA {'acked' if s['rootca_acked'] else 'NOT acked'}")
    if view.get("last_error"):
        lines.append(f"last bundle error: {view['last_error']}")
    return "\n".join(lines)


def run_show(args: argparse.Namespace) -> int:
    try:
        view = _client(args).get("/api/v1/ca")
    except ClientError as exc:
        return _fail("show", exc)
    print(json.dumps(view, indent=2) if args.output == "json" else render(view))
    return 0


def _state_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    if os.environ.get("HYPHAL_STATE_DIR"):
        return Path(os.environ["HYPHAL_STATE_DIR"])
    try:
        mesh = json.loads(MESH_FILE.read_text(encoding="utf-8"))
        return Path(mesh["state_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ClientError(
            "no state directory: pass --state-dir DIR, set HYPHAL_STATE_DIR, or run this where "
            f"`hyphal up` was started ({MESH_FILE})"
        ) from None


def run_add_root(args: argparse.Namespace) -> int:
    from hyphal.control.ca.bundle import BundleError, add_root, fingerprint

    try:
        bundle = _state_dir(args.state_dir) / "ca" / "trust-bundle.pem"
        if not bundle.parent.is_dir():
            raise ClientError(f"{bundle.parent} does not exist: is this the control plane's "
                              "state directory?")
        root, changed = add_root(bundle, args.file.read_bytes(), str(args.file))
    except (ClientError, BundleError, OSError) as exc:
        return _fail("add-root", exc)
    state = "added to" if changed else "already in"
    print(f"root {fingerprint(root)} ({root.subject.rfc4514_string()}) {state} {bundle}")
    return 0


def _retrying(client: ApiClient, step: str, deadline: float) -> dict[str, Any]:
    """POST a rotate step, retrying while the control plane answers 409 (not yet)."""
    last = ""
    while True:
        try:
            result: dict[str, Any] = client.post_json("/api/v1/ca/rotate", {"step": step})
            return result
        except ApiError as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise
            msg = "; ".join(exc.errors)
            if msg != last:
                print(f"waiting: {msg}", flush=True)  # progress, not an error
                last = msg
        time.sleep(0.5)


def run_rotate(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    try:
        client = _client(args)
        view = client.get("/api/v1/ca")
        phase = view["rotation"]["phase"]
        if phase == "idle":
            view = client.post_json("/api/v1/ca/rotate", {"step": "prepare"})
            print(f"1/3 new root {view['rotation']['new_root']} is in the trust bundle")
        if view["rotation"]["phase"] == "published":
            view = _retrying(client, "switch", deadline)
            print(f"2/3 every sidecar trusts it; signing switched to {view['signing_root']}")
        new, old = view["rotation"]["new_root"], view["rotation"]["old_root"]
        if not args.no_wait:
            while True:
                behind = [s["node"] for s in view["sidecars"] if s["cert_root"] != new]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    print(f"hyphal ca rotate: still waiting for {len(behind)} sidecar(s) to "
                          f"renew: {', '.join(behind[:5])}; run `hyphal ca show` later",
                          file=sys.stderr)
                    return 1
                time.sleep(0.5)
                view = client.get("/api/v1/ca")
            print("3/3 every connected sidecar holds a certificate from the new root")
    except ClientError as exc:
        return _fail("rotate", exc)
    print(f"when no workload uses the old root any more: hyphal ca retire-root {old}")
    return 0


def run_retire(args: argparse.Namespace) -> int:
    try:
        view = _client(args).post_json("/api/v1/ca/retire", {"fingerprint": args.fingerprint})
    except ClientError as exc:
        return _fail("retire-root", exc)
    print(f"retired {args.fingerprint}; trusted now: "
          + ", ".join(r["fingerprint"][:16] for r in view["roots"]))
    return 0
