"""What every connection of a worker uses of it (``wslb.server.state.runtime.Runtime`` is one):
the event loop, the write batch of the loop iteration, the sweeper that runs timers, the
registry of open connections (for draining) and connection ids. Lower layers type against this
protocol, so that they never import the runtime."""

from __future__ import annotations

import asyncio
from typing import Protocol

from wslb.server.core.clock import Sweeper
from wslb.server.core.output import WriteBatch


class Closable(Protocol):
    """What the runtime can ask an open connection or tunnel to do while draining."""

    def drain(self) -> None: ...
    def force_close(self, reason: str) -> None: ...
    def busy(self) -> bool: ...


class Worker(Protocol):
    loop: asyncio.AbstractEventLoop
    batch: WriteBatch
    sweeper: Sweeper

    def next_id(self) -> str: ...
    def register(self, conn: Closable) -> None: ...
    def unregister(self, conn: Closable) -> None: ...
