"""Consistent hashing pickers: Ketama-style RingHash and Google's Maglev, over endpoint keys.

Both map a request's hash key (bytes, see `hash_policy.hash_key_for`) to an endpoint so that
when an endpoint joins or leaves only about 1/N of the keys move. Hashes are 8-byte BLAKE2b
digests: stable across processes and Python versions (unlike `hash()`), and fast enough
(well under a microsecond for a short key).

* `RingHash` is Ketama-style, like Envoy's RING_HASH: every endpoint gets virtual nodes
  `"<key>_<i>"` in proportion to its weight, at least `min_ring_size` (1024) in all, at most
  `max_ring_size`; a key goes to the first virtual node clockwise from its hash (binary
  search, O(log n)). Points per weight unit are a power of two, so a join adds only the new
  endpoint's points and moves keys only to it.
  With `exclude`, the walk continues clockwise to the first allowed endpoint: exactly where
  the key would land on a ring rebuilt without the excluded ones.
* `Maglev` follows the Maglev paper (Eisenbud et al., NSDI 2016) and Envoy's weighted
  variant: a lookup table of prime size (65537) filled round-robin from each endpoint's
  permutation `(offset + j * skip) mod M`, endpoints taking turns in proportion to weight.
  Lookup is one modulo and one index (O(1)); building the table costs ~0.1 s, so build at
  config time only. With `exclude`, the key is re-hashed a few times, then falls back to
  a deterministic choice among the allowed endpoints.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Container, Sequence
from hashlib import blake2b

_NOTHING: frozenset[str] = frozenset()
_MASK64 = (1 << 64) - 1


def hash64(data: bytes) -> int:
    """The stable 64-bit hash used for rings, tables and request keys."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread rehash of a 64-bit value."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _check(keys: tuple[str, ...], weights: Sequence[int] | None) -> tuple[int, ...]:
    if len(set(keys)) != len(keys):
        raise ValueError("endpoint keys must be unique")
    if weights is None:
        return (1,) * len(keys)
    if len(weights) != len(keys):
        raise ValueError(f"{len(keys)} endpoints but {len(weights)} weights")
    for key, weight in zip(keys, weights):
        if weight < 1:
            raise ValueError(f"endpoint {key}: load_balancing_weight must be >= 1, got {weight}")
    return tuple(weights)


class RingHash:
    """Envoy's ring hash (see module docstring). `pick(hash_key)` per request."""

    __slots__ = ("_hashes", "_owners", "keys", "weights")

    def __init__(self, keys: tuple[str, ...], weights: Sequence[int] | None = None,
                 min_ring_size: int = 1024, max_ring_size: int = 8 * 1024 * 1024) -> None:
        if min_ring_size < 1 or max_ring_size < min_ring_size:
            raise ValueError("ring hash: need 1 <= minimum_ring_size <= maximum_ring_size")
        self.keys = keys
        self.weights = _check(keys, weights)
        points: list[tuple[int, int]] = []
        if keys:
            divisor = math.gcd(*self.weights)
            units = [w // divisor for w in self.weights]
            total = sum(units)
            # Virtual nodes per weight unit: a power of two reaching min_ring_size, so that
            # an endpoint joining or leaving leaves everyone else's points where they are
            # (unless the count crosses a power of two). Envoy rescales the ring instead,
            # which moves some keys between the endpoints that stayed.
            per_unit = 1 << max(0, math.ceil(math.log2(min_ring_size / total)))
            scale = min(float(per_unit), max_ring_size / total)
            for index, (key, unit) in enumerate(zip(keys, units)):
                prefix = key.encode() + b"_"
                for vnode in range(max(1, int(scale * unit))):
                    points.append((hash64(prefix + str(vnode).encode()), index))
        points.sort()
        self._hashes = tuple(h for h, _ in points)
        self._owners = tuple(keys[i] for _, i in points)

    def __len__(self) -> int:
        return len(self._hashes)

    def pick(self, hash_key: bytes, exclude: Container[str] = _NOTHING) -> str | None:
        return self.pick_hash(hash64(hash_key), exclude)

    def pick_hash(self, value: int, exclude: Container[str] = _NOTHING) -> str | None:
        hashes, owners = self._hashes, self._owners
        size = len(hashes)
        if not size:
            return None
        index = bisect_left(hashes, value)
        if index == size:
            index = 0
        owner = owners[index]
        if not exclude or owner not in exclude:
            return owner
        if all(key in exclude for key in self.keys):
            return None
        while owner in exclude:
            index = index + 1 if index + 1 < size else 0
            owner = owners[index]
        return owner


class Maglev:
    """Maglev lookup table (see module docstring). `pick(hash_key)` per request."""

    __slots__ = ("_table", "keys", "table_size", "weights")

    def __init__(self, keys: tuple[str, ...], weights: Sequence[int] | None = None,
                 table_size: int = 65537) -> None:
        if table_size < 2 or any(table_size % p == 0 for p in range(2, math.isqrt(table_size) + 1)):
            raise ValueError(f"maglev table_size must be a prime, got {table_size}")
        if len(keys) > table_size:
            raise ValueError(f"maglev: {len(keys)} endpoints exceed table_size {table_size}")
        self.keys = keys
        self.weights = _check(keys, weights)
        self.table_size = table_size
        self._table: tuple[str, ...] = self._populate() if keys else ()

    def _populate(self) -> tuple[str, ...]:
        size = self.table_size
        n = len(self.keys)
        positions: list[int] = []
        skips: list[int] = []
        for key in self.keys:
            raw = key.encode()
            positions.append(hash64(b"maglev-offset:" + raw) % size)
            skips.append(hash64(b"maglev-skip:" + raw) % (size - 1) + 1)
        weights = self.weights
        max_weight = max(weights)
        uniform = min(weights) == max_weight
        targets = [0] * n
        table = [-1] * size
        filled = 0
        iteration = 0
        while filled < size:
            iteration += 1
            for i in range(n):
                if not uniform:
                    if iteration * weights[i] < targets[i]:
                        continue
                    targets[i] += max_weight
                c = positions[i]
                skip = skips[i]
                while table[c] >= 0:
                    c += skip
                    if c >= size:
                        c -= size
                table[c] = i
                c += skip
                positions[i] = c - size if c >= size else c
                filled += 1
                if filled == size:
                    break
        keys = self.keys
        return tuple(keys[i] for i in table)

    def pick(self, hash_key: bytes, exclude: Container[str] = _NOTHING) -> str | None:
        return self.pick_hash(hash64(hash_key), exclude)

    def pick_hash(self, value: int, exclude: Container[str] = _NOTHING) -> str | None:
        table = self._table
        if not table:
            return None
        owner = table[value % self.table_size]
        if not exclude or owner not in exclude:
            return owner
        for _ in range(8):
            value = _mix64(value)
            owner = table[value % self.table_size]
            if owner not in exclude:
                return owner
        allowed = [key for key in self.keys if key not in exclude]
        return allowed[value % len(allowed)] if allowed else None

    def share(self) -> dict[str, float]:
        """Each endpoint's fraction of the table (for tests and `proxy-config`)."""
        counts: dict[str, int] = dict.fromkeys(self.keys, 0)
        for owner in self._table:
            counts[owner] += 1
        return {key: count / self.table_size for key, count in counts.items()}
