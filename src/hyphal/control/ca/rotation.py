"""Root rotation as a state machine, sans I/O: which step may run now, and why not.

Theory of operation. Rotating the mesh root without a failed request means nobody may ever
meet a certificate they do not trust. So trust moves first, signing second, distrust last:

    phase      step                    precondition                              next phase
    idle       prepare  (make root N)  none                                      published
    published  switch   (sign with N)  every connected sidecar ACKed the ROOTCA  switched
                                       that holds N
    any        retire R (drop root R)  R is trusted, R is not the signing root,  idle
                                       and no connected sidecar's certificate
                                       chains to R (each reports CERT_ROOT)

Between `switch` and `retire` workloads move to certificates from root N: at their normal
half-life renewal, or at once, because a sidecar renews early when the first (signing) root
of the ROOTCA it receives is not the root its certificate chains to. A retire in the
`published` phase drops the new root again (the rotation is abandoned). Every refusal says
which sidecars hold the step up and what to do. The phase is persisted (`ca/rotation.json`)
so a restarted control plane resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

Phase = Literal["idle", "published", "switched"]
PHASES: tuple[Phase, ...] = ("idle", "published", "switched")

__all__ = [
    "PHASES",
    "Phase",
    "RotationRefused",
    "RotationState",
    "SidecarTrust",
    "check_prepare",
    "check_retire",
    "check_switch",
]


class RotationRefused(Exception):
    """A rotation step whose precondition does not hold; the message says what to do."""


@dataclass(frozen=True, slots=True)
class SidecarTrust:
    """What the control plane knows about one connected sidecar's trust and certificate."""

    node_id: str
    identity: str  # the SPIFFE id its ADS client certificate proved
    subscribed: bool  # it subscribed to the ROOTCA secret at all
    rootca_acked: bool  # it ACKed the ROOTCA the control plane would send it now
    cert_root: str | None  # fingerprint of the root its certificate chains to (CERT_ROOT)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "identity": self.identity,
            "rootca_subscribed": self.subscribed,
            "rootca_acked": self.rootca_acked,
            "cert_root": self.cert_root,
        }


@dataclass(frozen=True, slots=True)
class RotationState:
    """Where a root rotation stands. `new_root` / `old_root` are SHA-256 fingerprints."""

    phase: Phase = "idle"
    new_root: str | None = None
    old_root: str | None = None
    updated_at: str = ""

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            allowed = ", ".join(PHASES)
            raise ValueError(f"rotation phase must be one of {allowed}, not {self.phase!r}")
        if self.phase != "idle" and not (self.new_root and self.old_root):
            raise ValueError(f"rotation phase {self.phase!r} needs both new_root and old_root")

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "new_root": self.new_root,
            "old_root": self.old_root,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "rotation state") -> RotationState:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: must be a JSON object")
        try:
            return cls(
                phase=data.get("phase", "idle"),
                new_root=data.get("new_root"),
                old_root=data.get("old_root"),
                updated_at=str(data.get("updated_at") or ""),
            )
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2) + "\n").encode()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _names(sidecars: Iterable[SidecarTrust], limit: int = 5) -> str:
    ids = sorted(s.node_id for s in sidecars)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def check_prepare(state: RotationState, signing_root: str, new_root: str) -> RotationState:
    """`prepare`: allowed only when no rotation is under way."""
    if state.phase != "idle":
        raise RotationRefused(
            f"a root rotation is already {state.phase} (new root {state.new_root}); "
            + (
                "run `hyphal ca rotate` again to continue it"
                if state.phase == "published"
                else f"finish it with `hyphal ca retire-root {state.old_root}`"
            )
        )
    return RotationState("published", new_root, signing_root, _now())


def check_switch(state: RotationState, sidecars: Sequence[SidecarTrust]) -> RotationState:
    """`switch`: every connected sidecar holds the new root (it ACKed the current ROOTCA)."""
    if state.phase == "switched":
        raise RotationRefused(
            f"signing already switched to {state.new_root}; wait for workloads to renew, then "
            f"`hyphal ca retire-root {state.old_root}`"
        )
    if state.phase != "published":
        raise RotationRefused("no root rotation under way: start one with `hyphal ca rotate`")
    waiting = [s for s in sidecars if s.subscribed and not s.rootca_acked]
    if waiting:
        raise RotationRefused(
            f"{len(waiting)} connected sidecar(s) have not ACKed the trust bundle with the new "
            f"root yet: {_names(waiting)}; they would reject certificates from it. Wait and "
            "retry (a sidecar that NACKs the ROOTCA secret says why in its log)"
        )
    return replace(state, phase="switched", updated_at=_now())


def check_retire(
    state: RotationState,
    root: str,
    trusted: Sequence[str],
    signing_root: str,
    sidecars: Sequence[SidecarTrust],
) -> RotationState:
    """`retire ROOT`: drop a trusted, non-signing root that no connected sidecar still uses."""
    matches = [fp for fp in trusted if fp.startswith(root.lower())] if root else []
    if len(matches) != 1:
        listed = ", ".join(fp[:16] for fp in trusted)
        what = "matches no" if not matches else "is a prefix of more than one"
        raise RotationRefused(
            f"fingerprint {root!r} {what} trusted root (trusted: {listed}); "
            "see `hyphal ca show`"
        )
    fp = matches[0]
    if fp == signing_root:
        raise RotationRefused(
            f"{fp[:16]} is the root that signs workload certificates now; rotate first "
            "(`hyphal ca rotate`), then retire it"
        )
    if len(trusted) < 2:
        raise RotationRefused("refusing to retire the last trusted root")
    unknown = [s for s in sidecars if s.cert_root is None]
    if unknown:
        raise RotationRefused(
            f"{len(unknown)} connected sidecar(s) do not report which root their certificate "
            f"chains to (node metadata CERT_ROOT): {_names(unknown)}; upgrade or restart them"
        )
    still = [s for s in sidecars if s.cert_root == fp]
    if still:
        raise RotationRefused(
            f"{len(still)} connected sidecar(s) still present a certificate from root "
            f"{fp[:16]}: {_names(still)}; they renew at half their lifetime (at once after "
            "`hyphal ca rotate` switched signing): wait and retry"
        )
    if state.phase == "published" and fp == state.new_root:
        return RotationState("idle", updated_at=_now())  # the rotation is abandoned
    if state.phase == "published":
        raise RotationRefused(
            f"a rotation to {state.new_root} is half done (published, not switched); finish it "
            "with `hyphal ca rotate` before retiring other roots"
        )
    if state.phase == "switched" and fp != state.old_root:
        return state  # another root goes; the rotation still waits for its old root's turn
    return RotationState("idle", updated_at=_now())
