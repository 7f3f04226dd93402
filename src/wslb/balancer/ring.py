"""Consistent hashing (a ketama-style ring), keyed so clients cannot aim at an endpoint.

Each endpoint gets ``vnodes * weight`` points on a 64-bit ring, at keyed BLAKE2b hashes of its
address; a key maps to the first point at or after its own hash. Adding an endpoint to ``c``
others moves only the keys that now fall on its points, about ``1/(c+1)`` of them, and removing
one moves only its own keys. With a secret key, where a key lands cannot be computed (or chosen)
from outside.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from wslb.balancer.endpoints import EndpointState

VNODES = 160  # points per unit of weight (ketama uses 160 per server)


def _h(secret: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=secret[:64]).digest(), "big")


class HashRing:
    __slots__ = ("_endpoints", "_points", "_secret")

    def __init__(self, endpoints: Sequence[EndpointState], secret: bytes) -> None:
        self._secret = secret
        points: list[tuple[int, int]] = []
        for index, ep in enumerate(endpoints):
            name = ep.address.encode()
            for i in range(VNODES * ep.weight):
                points.append((_h(secret, b"%s#%d" % (name, i)), index))
        points.sort()
        self._points = [p for p, _ in points]
        self._endpoints = [endpoints[i] for _, i in points]

    def __len__(self) -> int:
        return len(self._points)

    def get(self, key: bytes) -> EndpointState | None:
        if not self._points:
            return None
        i = bisect.bisect_left(self._points, _h(self._secret, key))
        return self._endpoints[i % len(self._points)]
