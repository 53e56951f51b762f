"""DiscoveryResponse bytes for the wire, with the nonce-free body cached across streams.

When one change is pushed to a thousand nodes that share content, the resources are encoded
once: the body (version, resources, type URL) is cached by `(type_url, version)` — the version
is a content hash of exactly the names sent — and each stream only appends its nonce field.
Protobuf allows fields in any order, so `body + nonce field` is a valid DiscoveryResponse.
"""

from __future__ import annotations

from collections import OrderedDict

from envoy.service.discovery.v3 import discovery_pb2

from hyphal.control.xds.protocol import Response

_NONCE_TAG = b"\x2a"  # field 5 (nonce), wire type 2 (length-delimited)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class ResponseEncoder:
    """Encodes `Response`s to DiscoveryResponse bytes; a bounded LRU of bodies."""

    __slots__ = ("_bodies", "_capacity", "hits", "misses")

    def __init__(self, capacity: int = 4096) -> None:
        self._bodies: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._capacity = capacity
        self.hits = 0
        self.misses = 0

    def body(self, resp: Response) -> bytes:
        key = (resp.type_url, resp.version)
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
            self.hits += 1
            return body
        self.misses += 1
        by_name = resp.snapshot.names(resp.type_url)
        msg = discovery_pb2.DiscoveryResponse(
            version_info=resp.version,
            type_url=resp.type_url,
            resources=[by_name[n] for n in resp.names],
        )
        encoded: bytes = msg.SerializeToString(deterministic=True)
        self._bodies[key] = encoded
        if len(self._bodies) > self._capacity:
            self._bodies.popitem(last=False)
        return encoded

    def encode(self, resp: Response) -> bytes:
        nonce = resp.nonce.encode()
        return self.body(resp) + _NONCE_TAG + _varint(len(nonce)) + nonce


def decode(data: bytes) -> discovery_pb2.DiscoveryResponse:
    """Parse bytes made by `ResponseEncoder.encode` (for tests and tools)."""
    return discovery_pb2.DiscoveryResponse.FromString(data)
