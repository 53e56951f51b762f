"""Endpoint pickers: round robin, random, least request (P2C), peak EWMA; hashing re-exported.

A balancer is built once per endpoint set (config time: EDS update) over a tuple of endpoint
keys and their weights; `pick` runs per request. `exclude` holds keys that must not be
chosen now (ejected, failing health checks, already tried by this request); when every key
is excluded `pick` returns None and the data plane answers "no healthy upstream" (or retries
without the exclusion, as it prefers). Per-pick cost is O(1) apart from rare fallbacks.

The load-aware pickers read in-flight counts from a live `Mapping[str, int]` the data plane
keeps (its per-endpoint `active` dict, or an `InFlight` from here); they never own it, so a
rebuilt balancer sees the same counts.

Consistent hashing (`RingHash`, `Maglev`) and `hash_key_for` live in `consistent_hash` and
`hash_policy`, and are re-exported here.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Container, Mapping, Sequence
from itertools import accumulate

from hyphal.proxy.resilience.consistent_hash import Maglev, RingHash
from hyphal.proxy.resilience.hash_policy import HashKey, HashPolicy, hash_key_for

__all__ = [
    "HashKey", "HashPolicy", "InFlight", "LeastRequest", "Maglev", "PeakEwma", "Random",
    "RingHash", "RoundRobin", "hash_key_for", "smooth_weighted_schedule",
]

_NOTHING: frozenset[str] = frozenset()
_SCHEDULE_MAX = 1 << 16  # precompute round-robin schedules up to this period
_TRIES = 8  # random re-draws around excluded keys before the O(n) fallback


def _weights_for(keys: tuple[str, ...], weights: Sequence[int] | None) -> tuple[int, ...]:
    if weights is None:
        return (1,) * len(keys)
    if len(weights) != len(keys):
        raise ValueError(f"{len(keys)} endpoints but {len(weights)} weights")
    if len(set(keys)) != len(keys):
        raise ValueError("endpoint keys must be unique")
    for key, weight in zip(keys, weights):
        if weight < 1:
            raise ValueError(f"endpoint {key}: load_balancing_weight must be >= 1, got {weight}")
    return tuple(weights)


class InFlight(dict[str, int]):
    """Requests in flight per endpoint key; `finish` never goes below zero."""

    def start(self, key: str) -> None:
        self[key] = self.get(key, 0) + 1

    def finish(self, key: str) -> None:
        count = self.get(key, 0)
        if count > 1:
            self[key] = count - 1
        elif count == 1:
            del self[key]


class _Weighted:
    """Weighted random draws in O(log n) (O(1) when weights are uniform)."""

    __slots__ = ("_cumulative", "_total", "_uniform", "keys", "rng", "weights")

    def __init__(self, keys: tuple[str, ...], weights: Sequence[int] | None = None,
                 rng: random.Random | None = None) -> None:
        self.keys = keys
        self.weights = _weights_for(keys, weights)
        self.rng = rng if rng is not None else random.Random()
        self._cumulative = tuple(accumulate(self.weights))
        self._total = self._cumulative[-1] if keys else 0
        self._uniform = len(set(self.weights)) <= 1

    def _draw(self) -> int:
        if self._uniform:
            return int(self.rng.random() * len(self.keys))
        return bisect_right(self._cumulative, self.rng.random() * self._total)

    def _draw_allowed(self, exclude: Container[str]) -> int | None:
        """A weighted draw among keys not in `exclude`, or None if all are excluded."""
        keys = self.keys
        for _ in range(_TRIES):
            index = self._draw()
            if keys[index] not in exclude:
                return index
        allowed = [i for i, key in enumerate(keys) if key not in exclude]
        if not allowed:
            return None
        return self.rng.choices(allowed, [self.weights[i] for i in allowed])[0]


class Random(_Weighted):
    """Weighted random (Envoy RANDOM)."""

    __slots__ = ()

    def pick(self, exclude: Container[str] = _NOTHING) -> str | None:
        if not self.keys:
            return None
        if not exclude:
            return self.keys[self._draw()]
        index = self._draw_allowed(exclude)
        return None if index is None else self.keys[index]


def smooth_weighted_schedule(weights: Sequence[int]) -> tuple[int, ...]:
    """One period of nginx's smooth weighted round robin over `weights` (divided by their
    gcd): each index appears weight times, spread as evenly as the algorithm spreads them."""
    divisor = math.gcd(*weights) if weights else 1
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    current = [0] * len(reduced)
    schedule: list[int] = []
    for _ in range(total):
        best = 0
        for i, weight in enumerate(reduced):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        schedule.append(best)
    return tuple(schedule)


class RoundRobin(_Weighted):
    """Smooth weighted round robin (nginx). The period is precomputed when it is at most 65,536
    picks (O(1) per pick); beyond that the live algorithm runs (O(n) per pick). The starting
    point is random so that sidecars do not march in step."""

    __slots__ = ("_current", "_pos", "_schedule")

    def __init__(self, keys: tuple[str, ...], weights: Sequence[int] | None = None,
                 rng: random.Random | None = None) -> None:
        super().__init__(keys, weights, rng)
        self._schedule: tuple[str, ...] | None = None
        self._current = [0] * len(keys)
        self._pos = 0
        if not keys:
            return
        reduced_total = self._total // math.gcd(*self.weights)
        if reduced_total <= _SCHEDULE_MAX:
            order = smooth_weighted_schedule(self.weights)
            self._schedule = tuple(keys[i] for i in order)
            self._pos = self.rng.randrange(len(self._schedule))

    def pick(self, exclude: Container[str] = _NOTHING) -> str | None:
        schedule = self._schedule
        if schedule is None:
            return self._pick_live(exclude) if self.keys else None
        size = len(schedule)
        pos = self._pos
        for _ in range(min(size, 64) if exclude else 1):
            key = schedule[pos]
            pos = pos + 1 if pos + 1 < size else 0
            if not exclude or key not in exclude:
                self._pos = pos
                return key
        self._pos = pos
        index = self._draw_allowed(exclude)
        return None if index is None else self.keys[index]

    def _pick_live(self, exclude: Container[str]) -> str | None:
        current, weights, keys = self._current, self.weights, self.keys
        best = -1
        total = 0
        for i, weight in enumerate(weights):
            if exclude and keys[i] in exclude:
                continue
            current[i] += weight
            total += weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return keys[best]


class LeastRequest(_Weighted):
    """Envoy's LEAST_REQUEST.

    Equal weights: power of two choices, two distinct random endpoints, the one with fewer
    requests in flight wins (O(1)). Unequal weights: Envoy's earliest-deadline-first
    schedule, where an endpoint re-enters the schedule after each pick with the effective
    weight `weight / (active + 1) ** active_request_bias` (bias 1.0 by default; 0 gives
    plain weighted round robin) (O(log n)). Idle endpoints are picked in proportion to
    their weights; loaded ones are pushed back in proportion to their load."""

    __slots__ = ("_heap", "_seq", "active", "bias")

    def __init__(self, keys: tuple[str, ...], active: Mapping[str, int],
                 weights: Sequence[int] | None = None, rng: random.Random | None = None,
                 active_request_bias: float = 1.0) -> None:
        super().__init__(keys, weights, rng)
        if active_request_bias < 0:
            raise ValueError("least_request active_request_bias must be >= 0")
        self.active = active
        self.bias = active_request_bias
        self._seq = 0
        # (deadline, tie-breaker, index); random start so sidecars do not move in step.
        self._heap: list[tuple[float, int, int]] = []
        if not self._uniform:
            for index, weight in enumerate(self.weights):
                self._heap.append((self.rng.random() / weight, index, index))
            heapq.heapify(self._heap)
            self._seq = len(keys)

    def pick(self, exclude: Container[str] = _NOTHING) -> str | None:
        keys = self.keys
        n = len(keys)
        if n <= 1:
            return keys[0] if n and keys[0] not in exclude else None
        if not self._uniform:
            return self._pick_edf(exclude)
        if exclude:
            first = self._draw_allowed(exclude)
            if first is None:
                return None
            second = self._draw_allowed(exclude)
            assert second is not None
        else:
            first = int(self.rng.random() * n)
            second = int(self.rng.random() * (n - 1))
            if second >= first:
                second += 1
        a, b = keys[first], keys[second]
        active = self.active
        return a if active.get(a, 0) <= active.get(b, 0) else b

    def _pick_edf(self, exclude: Container[str]) -> str | None:
        heap, keys = self._heap, self.keys
        skipped: list[tuple[float, int, int]] = []
        chosen: tuple[float, int, int] | None = None
        while heap:
            entry = heapq.heappop(heap)
            if exclude and keys[entry[2]] in exclude:
                skipped.append(entry)
                continue
            chosen = entry
            break
        for entry in skipped:
            heapq.heappush(heap, entry)
        if chosen is None:
            return None
        deadline, _, index = chosen
        key = keys[index]
        effective = self.weights[index] / (self.active.get(key, 0) + 1) ** self.bias
        self._seq += 1
        heapq.heappush(heap, (deadline + 1.0 / effective, self._seq, index))
        return key


class PeakEwma(_Weighted):
    """Linkerd's peak-EWMA balancer: P2C over `cost = ewma_latency * (active + 1) / weight`.

    Each endpoint's latency estimate is an exponentially weighted moving average with decay
    time `decay_s` (tau = 10 s) that is *peak-sensitive*: a sample above the current estimate
    replaces it at once, so a slow endpoint loses traffic after a single slow response, and
    only earns it back as the estimate decays. Reading a cost decays the estimate towards
    zero (as tower's `PeakEwma` does), so an idle endpoint is tried again eventually.
    Endpoints not yet observed start at `default_rtt_s` (linkerd: 30 ms)."""

    __slots__ = ("_rtt", "_stamp", "active", "decay_s", "default_rtt_s")

    def __init__(self, keys: tuple[str, ...], active: Mapping[str, int],
                 weights: Sequence[int] | None = None, rng: random.Random | None = None,
                 decay_s: float = 10.0, default_rtt_s: float = 0.030,
                 now: float = 0.0, previous: PeakEwma | None = None) -> None:
        super().__init__(keys, weights, rng)
        if decay_s <= 0:
            raise ValueError("peak EWMA decay must be > 0 seconds")
        self.active = active
        self.decay_s = decay_s
        self.default_rtt_s = default_rtt_s
        self._rtt: dict[str, float] = {}
        self._stamp: dict[str, float] = {}
        for key in keys:
            if previous is not None and key in previous._rtt:
                self._rtt[key] = previous._rtt[key]
                self._stamp[key] = previous._stamp[key]
            else:
                self._rtt[key] = default_rtt_s
                self._stamp[key] = now

    def estimate(self, key: str, now: float) -> float:
        """The decayed latency estimate of `key` in seconds."""
        elapsed = now - self._stamp[key]
        rtt = self._rtt[key]
        return rtt * math.exp(-elapsed / self.decay_s) if elapsed > 0 else rtt

    def observe(self, key: str, latency_s: float, now: float) -> None:
        if key not in self._rtt:
            return  # an endpoint that left the set
        prior = self.estimate(key, now)
        if latency_s > prior:
            self._rtt[key] = latency_s
        else:
            elapsed = max(now - self._stamp[key], 0.0)
            weight = math.exp(-elapsed / self.decay_s)
            self._rtt[key] = self._rtt[key] * weight + latency_s * (1.0 - weight)
        self._stamp[key] = now

    def cost(self, index: int, now: float) -> float:
        key = self.keys[index]
        return ((self.estimate(key, now) + 1e-9) * (self.active.get(key, 0) + 1)
                / self.weights[index])

    def pick(self, now: float, exclude: Container[str] = _NOTHING) -> str | None:
        keys = self.keys
        n = len(keys)
        if n <= 1:
            return keys[0] if n and keys[0] not in exclude else None
        if exclude:
            first = self._draw_allowed(exclude)
            if first is None:
                return None
            second = self._draw_allowed(exclude)
            assert second is not None
        else:
            first = int(self.rng.random() * n)
            second = int(self.rng.random() * (n - 1))
            if second >= first:
                second += 1
        return keys[first] if self.cost(first, now) <= self.cost(second, now) else keys[second]
