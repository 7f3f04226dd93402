"""Per-client limits, as ingress-nginx's limit-rps / limit-rpm / limit-connections.

Rates are token buckets per client address (``rate`` tokens per second, ``burst`` deep: nginx's
``limit_req ... burst=rate*multiplier nodelay``); connections count requests in progress and open
tunnels. The clock is passed in; idle entries are dropped by ``sweep``.
"""

from __future__ import annotations


class TokenBuckets:
    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last)

    def take(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def sweep(self, now: float) -> None:
        full = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}


class Counter:
    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        n = self._counts.get(key, 0)
        if n >= self.limit:
            return False
        self._counts[key] = n + 1
        return True

    def release(self, key: str) -> None:
        n = self._counts.get(key, 0) - 1
        if n > 0:
            self._counts[key] = n
        else:
            self._counts.pop(key, None)


class Gauge:
    """A count that outlives the object that made it (a backend replaced by a reload keeps
    counting its open tunnels in the same gauge)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def release(self) -> None:
        self.n -= 1
