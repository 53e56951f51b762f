"""Restart decisions for supervised apps: restart policy and capped exponential backoff.

Pure logic: (policy, exit code, how long it ran, restarts so far) -> what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyphal.local.model import RestartPolicy


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restart N: base * factor**N, capped; reset after a long enough healthy run."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 10.0

    def delay(self, consecutive_failures: int) -> float:
        return min(self.cap, self.base * self.factor ** max(0, consecutive_failures))

    def next_streak(self, streak: int, ran_for: float) -> int:
        """The failure streak after an exit: a run longer than `reset_after` starts afresh."""
        return 0 if ran_for >= self.reset_after else streak + 1


@dataclass(frozen=True, slots=True)
class Decision:
    restart: bool
    delay: float
    final_state: str  # state when not restarting: "completed" | "failed"


def decide(
    policy: RestartPolicy, exit_code: int, streak: int, backoff: Backoff
) -> Decision:
    """What to do when an app exits with `exit_code` after `streak` quick failures in a row."""
    if policy == "Always" or (policy == "OnFailure" and exit_code != 0):
        return Decision(restart=True, delay=backoff.delay(streak), final_state="backoff")
    final = "completed" if exit_code == 0 else "failed"
    return Decision(restart=False, delay=0.0, final_state=final)
