"""One coarse timer per worker instead of a timer per connection or per message.

Connections keep a deadline (or an activity flag for idle timeouts) and the sweeper visits them
every ``interval`` seconds. A timeout therefore fires between ``t`` and ``t + interval`` late, which
is the price of a data path that never touches a timer. The interval adapts to the smallest
configured timeout so that short timeouts (tests) stay accurate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("wslb.server")


class Sweepable(Protocol):
    def sweep(self, now: float) -> None: ...


def interval_for(smallest_timeout: float) -> float:
    return max(0.02, min(1.0, smallest_timeout / 10))


class Sweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.items: set[Sweepable] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, item: Sweepable) -> None:
        self.items.add(item)

    def discard(self, item: Sweepable) -> None:
        self.items.discard(item)

    def start(self) -> None:
        if self._handle is None:
            self._handle = self.loop.call_later(self.interval, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        now = self.loop.time()
        for item in list(self.items):
            try:
                item.sweep(now)
            except Exception:
                log.exception("timeout sweep failed for %r", item)
        self._handle = self.loop.call_later(self.interval, self._run)
