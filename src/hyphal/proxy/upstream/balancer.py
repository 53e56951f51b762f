"""Load balancers (pure): pick an endpoint among the healthy ones, honouring weights."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping

from hyphal.proxy.runtime.tables import EndpointSpec, LbPolicy


class Balancer:
    """One per cluster runtime. `active` maps endpoint address → requests in flight
    (for least-request). `exclude` holds addresses tried already by this request; they are
    avoided when another healthy endpoint exists."""

    __slots__ = ("policy", "endpoints", "_rr_current", "_rng", "_total_weight", "_only")

    def __init__(self, policy: LbPolicy, endpoints: tuple[EndpointSpec, ...],
                 rng: random.Random | None = None) -> None:
        self.policy = policy
        self.endpoints = endpoints
        # Smooth weighted round robin state (nginx's algorithm): deterministic and even.
        self._rr_current = [0] * len(endpoints)
        self._rng = rng or random.Random()
        self._total_weight = sum(max(e.weight, 1) for e in endpoints)
        healthy = [e for e in endpoints if e.healthy]
        # The common single-endpoint cluster (inbound, one replica) skips all the work.
        self._only = healthy[0] if len(healthy) == 1 else None

    def pick(
        self,
        active: Mapping[str, int],
        exclude: frozenset[str] = frozenset(),
        hash_key: bytes | None = None,
        usable: Callable[[EndpointSpec], bool] | None = None,
    ) -> EndpointSpec | None:
        only = self._only
        if only is not None and usable is None:
            return only
        candidates = [i for i, e in enumerate(self.endpoints)
                      if e.healthy and (usable is None or usable(e))]
        if not candidates:
            return None
        if exclude:
            fresh = [i for i in candidates if self.endpoints[i].address not in exclude]
            if fresh:
                candidates = fresh
        if len(candidates) == 1:
            return self.endpoints[candidates[0]]
        policy = self.policy
        if hash_key is not None and policy in (LbPolicy.RING_HASH, LbPolicy.MAGLEV):
            return self._rendezvous(candidates, hash_key)
        if policy is LbPolicy.LEAST_REQUEST:
            return self._p2c(candidates, active)
        if policy is LbPolicy.ROUND_ROBIN:
            return self._smooth_rr(candidates)
        return self._weighted_random(candidates)

    def _smooth_rr(self, candidates: list[int]) -> EndpointSpec:
        current = self._rr_current
        total = 0
        best = candidates[0]
        for i in candidates:
            weight = max(self.endpoints[i].weight, 1)
            current[i] += weight
            total += weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        return self.endpoints[best]

    def _weighted_random(self, candidates: list[int]) -> EndpointSpec:
        weights = [max(self.endpoints[i].weight, 1) for i in candidates]
        return self.endpoints[self._rng.choices(candidates, weights)[0]]

    def _p2c(self, candidates: list[int], active: Mapping[str, int]) -> EndpointSpec:
        first = self._weighted_random(candidates)
        # Two distinct choices: with few endpoints a repeated draw would ignore the load.
        second = self._weighted_random([i for i in candidates if self.endpoints[i] is not first])
        # Envoy's weighted least request: fewer active requests per unit of weight wins.
        def load(e: EndpointSpec) -> float:
            return (active.get(e.address, 0) + 1) / max(e.weight, 1)
        return first if load(first) <= load(second) else second

    def _rendezvous(self, candidates: list[int], key: bytes) -> EndpointSpec:
        """Highest random weight hashing: consistent as endpoints come and go."""
        def score(i: int) -> float:
            e = self.endpoints[i]
            digest = hashlib.blake2b(key + e.address.encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") * max(e.weight, 1)
        return self.endpoints[max(candidates, key=score)]
