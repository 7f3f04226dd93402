"""Draining an endpoint: its WebSockets get Close 1012 between two frames, spread over the
drain window; the others are untouched. And wslb's own shutdown: Close 1001."""

from __future__ import annotations

import asyncio
import itertools
import resource
import signal
import statistics
import time
from collections.abc import Callable

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import endpoints
from tests.support.procs import Proc, Wslb, scaled

WINDOW = 3.0


async def _until_closed(ws: ClientConnection, stream: bool) -> float:
    """Keep the WebSocket busy (big messages from the endpoint when ``stream``) until it is
    closed; the time it was."""
    try:
        while True:
            if stream:
                await ws.send("bytes:300000")
                assert len(await ws.recv()) == 300000
            else:
                await ws.recv()
    except ConnectionClosed:
        return time.monotonic()


async def test_drain_spreads_close_1012_over_the_window_never_mid_frame(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    a, b = endpoints(backends[:2])
    config = {
        "listeners": [{"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http"}],
        "backends": [
            {
                "name": "app",
                "endpoints": [a, b],
                "health": {"enabled": False},
                "drain_window": WINDOW,
            }
        ],
        "routes": [{"path": "/", "backend": "app"}],
    }
    lb = wslb(config, extra=["--admin", "127.0.0.1:0"])
    url = f"ws://127.0.0.1:{lb.port('web')}/ws"
    sockets: list[ClientConnection] = []
    for _ in range(6):  # 600, round robin: 300 on each endpoint
        sockets += await asyncio.gather(*(connect(url, max_size=2**22) for _ in range(100)))
    servers = []
    for ws in sockets:
        await ws.send("whoami")
        servers.append(await ws.recv())
    on_a = [ws for ws, s in zip(sockets, servers, strict=True) if s == "a"]
    on_b = [ws for ws, s in zip(sockets, servers, strict=True) if s == "b"]
    assert len(on_a) == 300 and len(on_b) == 300
    # 30 of a's WebSockets receive 300 KB messages all along: frames span many reads, so the
    # Close must wait for a frame to end
    watchers = [asyncio.create_task(_until_closed(ws, stream=i < 30)) for i, ws in enumerate(on_a)]
    admin = f"http://127.0.0.1:{lb.info['admin']['port']}"
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{admin}/api/drain", params={"backend": "app", "endpoint": a})
        assert r.status_code == 202
    started = time.monotonic()
    times = await asyncio.wait_for(asyncio.gather(*watchers), scaled(WINDOW + 30))
    codes = [ws.close_code for ws in on_a]
    assert codes == [1012] * 300, sorted(set(map(str, codes)))  # a clean Close, every one
    offsets = sorted(t - started for t in times)
    gaps = [y - x for x, y in itertools.pairwise(offsets)]
    print(  # figures for the closing note (pytest -s)
        f"drain: 300 Close 1012 from {offsets[0]:.2f}s to {offsets[-1]:.2f}s "
        f"(window {WINDOW}s), median gap {statistics.median(gaps) * 1000:.1f}ms, "
        f"largest {max(gaps) * 1000:.0f}ms"
    )
    # workers pick the drain up within their one-second publishing tick; from there the
    # Closes are spread over the window, not sent all at once, and no second of the window
    # holds more than about a third of them
    assert offsets[0] < 1.0 + scaled(1.0)
    span = offsets[-1] - offsets[0]
    assert WINDOW * 0.8 <= span <= WINDOW + scaled(1.0), span
    per_second = [sum(1 for t in offsets if s <= t < s + 1) for s in range(int(WINDOW) + 3)]
    assert max(per_second) <= 140, per_second
    # the other endpoint's WebSockets never noticed
    for ws in on_b:
        await ws.send("still")
        assert await ws.recv() == "still"
    for ws in on_b:
        await ws.close()
    out = lb.output()
    assert "closing 300 WebSocket(s) with 1012 (endpoint draining) over 3s" in out
    assert "endpoint draining (Close 1012)" in out


async def test_shutdown_closes_websockets_with_1001(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    config = {
        "server": {"shutdown_grace": 2},
        "listeners": [{"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http"}],
        "backends": [
            {"name": "app", "endpoints": endpoints(backends[:1]), "health": {"enabled": False}}
        ],
        "routes": [{"path": "/", "backend": "app"}],
    }
    lb = wslb(config)
    sockets = [await connect(f"ws://127.0.0.1:{lb.port('web')}/ws") for _ in range(20)]
    watchers = [asyncio.create_task(_until_closed(ws, stream=False)) for ws in sockets]
    lb.signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*watchers), scaled(15))
    assert [ws.close_code for ws in sockets] == [1001] * 20
    assert lb.proc.wait(timeout=scaled(15)) == 0
