"""Push debouncing, sans I/O: a burst of change notifications becomes one push.

A push fires once no notification has arrived for `quiet` seconds, but never later than
`max_delay` seconds after the first notification of the burst, so continuous churn still
pushes regularly. Time is passed in; the caller sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Debouncer:
    """Tracks one burst of notifications; `due_in(now)` says how long until it should fire."""

    quiet: float = 0.1
    max_delay: float = 1.0
    first: float | None = None
    last: float | None = None

    def __post_init__(self) -> None:
        if self.quiet < 0 or self.max_delay < self.quiet:
            raise ValueError(
                f"debounce needs 0 <= quiet ({self.quiet}) <= max_delay ({self.max_delay})"
            )

    @property
    def pending(self) -> bool:
        return self.first is not None

    def notify(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def due_in(self, now: float) -> float | None:
        """Seconds until the push should fire (0 = now), or None when nothing is pending."""
        if self.first is None or self.last is None:
            return None
        deadline = min(self.last + self.quiet, self.first + self.max_delay)
        return max(0.0, deadline - now)

    def fire(self) -> None:
        """The push is starting: notifications from now on belong to the next burst."""
        self.first = self.last = None
