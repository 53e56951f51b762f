"""Per-cluster retry budgets: a rate form (20% of requests + 3/s) and Envoy's concurrency form.

Two shapes, both O(1) per call:

* `RetryBudget` (the rate form; **the one the data plane should use**, as the issue asks:
  "retries <= 20% of requests plus a floor of 3 per second, per cluster"). Over a sliding
  window (10 s) a retry is allowed while

      retries_in_window < ratio * requests_in_window + min_per_s * window_s

  which is linkerd2/tower's `TpsBudget`: the floor is a reserve of `min_per_s * window_s`
  retries that refills as the window slides, so a quiet cluster can still retry, and a retry
  storm is capped at 20% extra load plus 3/s however many requests fail. Only first attempts
  count as requests (`record_request`); retries are counted by `try_withdraw`.

* `ConcurrencyRetryBudget` (Envoy's `circuit_breakers.thresholds.retry_budget`): a retry may
  start while active retries < max(min_retry_concurrency, budget_percent% of active
  requests). It bounds retries in flight rather than over time; use it when translating an
  Envoy `retry_budget` verbatim.

The window is a ring of buckets (100 ms each by default) with running sums, so the sliding
window is exact to one bucket and advancing it costs at most one pass over the ring.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    ratio: float = 0.2
    min_per_s: float = 3.0
    window_s: float = 10.0
    buckets: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1000.0:
            raise ValueError(f"retry budget ratio must be in [0, 1000], got {self.ratio}")
        if self.min_per_s < 0:
            raise ValueError(f"retry budget min_per_s must be >= 0, got {self.min_per_s}")
        if not self.window_s > 0 or self.buckets < 1:
            raise ValueError("retry budget window_s must be > 0 and buckets >= 1")


class RetryBudget:
    """Sliding-window rate budget for one cluster (see the module docstring)."""

    __slots__ = (
        "_bucket_s",
        "_epoch",
        "_n",
        "_requests",
        "_reserve",
        "_retries",
        "_sum_requests",
        "_sum_retries",
        "config",
    )

    def __init__(self, config: RetryBudgetConfig = RetryBudgetConfig()) -> None:
        self.config = config
        self._bucket_s = config.window_s / config.buckets
        self._n = config.buckets
        self._requests = [0] * config.buckets
        self._retries = [0] * config.buckets
        self._sum_requests = 0
        self._sum_retries = 0
        self._epoch: int | None = None  # index of the newest bucket, in bucket units
        self._reserve = config.min_per_s * config.window_s

    def _advance(self, now: float) -> int:
        epoch = int(now / self._bucket_s)
        last = self._epoch
        n = self.config.buckets
        if last is None:
            self._epoch = epoch
        elif epoch > last:
            steps = min(epoch - last, n)
            requests, retries = self._requests, self._retries
            for step in range(1, steps + 1):
                slot = (last + step) % n
                self._sum_requests -= requests[slot]
                self._sum_retries -= retries[slot]
                requests[slot] = 0
                retries[slot] = 0
            self._epoch = epoch
        # A clock that steps back (it should not: monotonic) lands in the newest bucket.
        return (self._epoch or 0) % n

    def record_request(self, now: float) -> None:
        """Count one first attempt (not retries)."""
        epoch = int(now / self._bucket_s)
        # Still the newest bucket (most requests): nothing slides, no _advance call.
        slot = epoch % self._n if epoch == self._epoch else self._advance(now)
        self._requests[slot] += 1
        self._sum_requests += 1

    def allowance(self, now: float) -> float:
        """Retries still allowed in the current window (may be fractional or negative)."""
        self._advance(now)
        limit = self.config.ratio * self._sum_requests + self._reserve
        return limit - self._sum_retries

    def can_retry(self, now: float) -> bool:
        return self.allowance(now) >= 1.0

    def try_withdraw(self, now: float) -> bool:
        """Spend one retry if the budget allows it; False means "do not retry" (count it as
        `upstream_rq_retry_overflow` / a budget exhaustion in stats)."""
        if self.allowance(now) < 1.0:
            return False
        slot = (self._epoch or 0) % self.config.buckets
        self._retries[slot] += 1
        self._sum_retries += 1
        return True

    def window_counts(self, now: float) -> tuple[int, int]:
        """(requests, retries) in the current window, for stats and tests."""
        self._advance(now)
        return self._sum_requests, self._sum_retries


@dataclass(frozen=True, slots=True)
class ConcurrencyRetryBudgetConfig:
    """Envoy's `retry_budget` defaults: 20% and a floor of 3 concurrent retries."""

    budget_percent: float = 20.0
    min_retry_concurrency: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget_percent <= 100.0:
            raise ValueError(f"retry_budget.budget_percent must be in [0, 100], "
                             f"got {self.budget_percent}")
        if self.min_retry_concurrency < 0:
            raise ValueError("retry_budget.min_retry_concurrency must be >= 0")


class ConcurrencyRetryBudget:
    """Envoy's concurrency budget. `active_requests` counts every request in flight or pending
    on the cluster, retries included (Envoy counts rq_active + rq_pending)."""

    __slots__ = ("active_requests", "active_retries", "config")

    def __init__(self, config: ConcurrencyRetryBudgetConfig = ConcurrencyRetryBudgetConfig()
                 ) -> None:
        self.config = config
        self.active_requests = 0
        self.active_retries = 0

    def max_retries(self) -> int:
        by_percent = int(self.config.budget_percent * self.active_requests / 100.0)
        return max(self.config.min_retry_concurrency, by_percent)

    def request_started(self) -> None:
        self.active_requests += 1

    def request_finished(self) -> None:
        self.active_requests = max(0, self.active_requests - 1)

    def try_start_retry(self) -> bool:
        if self.active_retries >= self.max_retries():
            return False
        self.active_retries += 1
        return True

    def retry_finished(self) -> None:
        self.active_retries = max(0, self.active_retries - 1)
