"""Draining tunnels: the WebSockets of a removed endpoint, of a stopping worker, closed one
after the other over a window, so that their clients do not all reconnect in the same second."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from wslb.server.state.runtime import Runtime
from wslb.server.tunnel.relay import Tunnel

log = logging.getLogger("wslb.server")


def drain_tunnels(
    runtime: Runtime, match: Callable[[Tunnel], bool], code: int, why: str, window: float
) -> int:
    """Close the WebSockets that ``match`` with a Close frame ``code``, one after the other,
    spread evenly over ``window`` seconds (in random order, so that no endpoint or client is
    favoured); tcp tunnels just close at their turn. Returns how many."""
    tunnels = [
        c
        for c in runtime.connections
        if isinstance(c, Tunnel) and not c.closed and not c.close_by and match(c)
    ]
    if not tunnels:
        return 0
    random.shuffle(tunnels)
    task = runtime.loop.create_task(_spread(runtime.loop, tunnels, code, why, window))
    runtime.tasks.add(task)
    task.add_done_callback(runtime.tasks.discard)
    log.info("closing %d WebSocket(s) with %d (%s) over %.0fs", len(tunnels), code, why, window)
    return len(tunnels)


async def _spread(
    loop: asyncio.AbstractEventLoop, tunnels: list[Tunnel], code: int, why: str, window: float
) -> None:
    start = loop.time()
    count = len(tunnels)
    for i, tunnel in enumerate(tunnels):
        delay = start + window * (i + 0.5) / count - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tunnel.close_gracefully(code, why)
