"""Admission control for WebSocket handshakes: what stops a reconnect storm at the door.

When a deploy or a network blip drops thousands of WebSockets at once, their clients come back
within the same second. ``Admission`` lets at most ``rate`` handshakes through in any sliding
one-second window (all clients together), and at most ``client_rate`` per client address; the
others are answered at once (503 or 429) with a ``Retry-After`` that spreads them over the
coming seconds, one second's worth of admissions each, instead of sending them all back
together. The window is exact (the admission times of the last second are kept: at most
``rate`` of them), so an endpoint never sees more than ``rate`` new WebSockets in any second.

Pure: the clock is passed in; idle per-client entries are dropped by ``sweep``.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW = 1.0  # seconds
HORIZON = 300.0  # the furthest a refused client is sent (seconds)


class SlidingWindow:
    """At most ``limit`` events in any ``WINDOW``."""

    __slots__ = ("_times", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: deque[float] = deque()

    def take(self, now: float) -> float:
        """0.0 and the event counts; or the seconds until one more would fit."""
        times = self._times
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if len(times) < self.limit:
            times.append(now)
            return 0.0
        return max(times[0] + WINDOW - now, 1e-6)  # never 0.0: that means admitted

    def untake(self) -> None:
        """Forget the last event (it was refused further on)."""
        self._times.pop()

    def idle(self, now: float) -> bool:
        return not self._times or self._times[-1] <= now - WINDOW


class Admission:
    __slots__ = ("_clients", "_next_slot", "client_rate", "rate", "total")

    def __init__(self, rate: int | None, client_rate: int | None) -> None:
        self.rate = rate
        self.client_rate = client_rate
        self.total = SlidingWindow(rate) if rate else None
        self._clients: dict[str, SlidingWindow] = {}
        self._next_slot = 0.0  # when the last client sent away was told to come back

    def admit(self, client: str, now: float) -> int:
        """0 if this handshake may go on; else the Retry-After (seconds, at least 1)."""
        window = None
        if self.client_rate:
            window = self._clients.get(client)
            if window is None:
                window = self._clients[client] = SlidingWindow(self.client_rate)
            wait = window.take(now)
            if wait:
                return max(1, math.ceil(wait))
        if self.total is not None:
            wait = self.total.take(now)
            if wait:
                if window is not None:
                    window.untake()
                # A place in a virtual queue: one second's worth of refused clients per
                # second ahead, so that they do not all come back at the same moment.
                assert self.rate is not None
                slot = max(self._next_slot, now + wait) + 1.0 / self.rate
                self._next_slot = min(slot, now + HORIZON)
                return max(1, math.ceil(self._next_slot - now))
        return 0

    def sweep(self, now: float) -> None:
        if self._clients:
            self._clients = {k: w for k, w in self._clients.items() if not w.idle(now)}
