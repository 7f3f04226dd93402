"""Balancing and health: round robin, least connections, passive and active health, 502/503."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb, scaled, start_backend


def _free_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_round_robin_spreads_300_requests_evenly(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends)))
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
        for _ in range(300):
            r = await client.get("/x")
            seen[r.headers["x-server"]] += 1
    assert seen == {"a": 100, "b": 100, "c": 100}


async def test_weights_are_honoured_smoothly(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    eps = endpoints(backends)
    lb = wslb(
        http_config(
            [{"address": eps[0], "weight": 3}, {"address": eps[1], "weight": 1}, eps[2]],
        )
    )
    order = []
    async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
        for _ in range(50):
            order.append((await client.get("/x")).headers["x-server"])
    assert Counter(order) == {"a": 30, "b": 10, "c": 10}
    # smooth: never more than 3 in a row for the heavy endpoint (nginx's sequence is a a b a c)
    runs = "".join(order).split("b")
    assert max(len(r.replace("c", "|").split("|")[0]) for r in runs) <= 3


async def test_least_connections_sends_new_websocket_to_fewest_open(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends), backend={"balance": "least_connections"}))
    url = f"ws://127.0.0.1:{lb.port('web')}/ws"
    open_ws = []
    try:
        # Open 5: spread 2/2/1 in some order.
        names = []
        for _ in range(5):
            ws = await connect(url)
            open_ws.append(ws)
            await ws.send("whoami")
            names.append(await ws.recv())
        counts = Counter(names)
        assert sorted(counts.values()) == [1, 2, 2]
        fewest = min(counts, key=lambda n: counts[n])
        # The next one must go to the endpoint with the fewest open tunnels.
        ws = await connect(url)
        open_ws.append(ws)
        await ws.send("whoami")
        assert await ws.recv() == fewest
        # Close two on one endpoint: it becomes the least loaded and gets the next.
        busiest = next(n for n in counts if n != fewest)
        closing = [w for w, n in zip(open_ws, [*names, fewest], strict=True) if n == busiest]
        for w in closing:
            await w.close()
            open_ws.remove(w)
        # wslb sees the close asynchronously: the tunnel is gone once the backend closed it.
        await asyncio.sleep(0)
        for _ in range(int(scaled(50))):
            ws = await connect(url)
            await ws.send("whoami")
            name = await ws.recv()
            if name == busiest:
                open_ws.append(ws)
                break
            await ws.close()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the least loaded endpoint never got the new WebSocket")
    finally:
        for w in open_ws:
            await w.close()


async def test_refused_connect_is_retried_on_another_endpoint(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    dead = f"127.0.0.1:{_free_port()}"
    lb = wslb(http_config([dead, *endpoints(backends[:1])]))
    async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
        for _ in range(10):
            r = await client.get("/x")
            assert r.status_code == 200
            assert r.headers["x-server"] == "a"
    assert "ejected" in lb.output()


async def test_killed_endpoint_is_marked_down_and_traffic_moves(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    victim = start_backend("victim", tmp_path)
    try:
        lb = wslb(
            http_config(
                [*endpoints([victim]), *endpoints(backends[:1])],
                backend={
                    "health": {
                        "type": "http",
                        "interval": 0.2,
                        "timeout": 0.5,
                        "unhealthy_threshold": 2,
                    },
                },
            )
        )
        statuses: Counter[int] = Counter()
        servers: Counter[str] = Counter()
        async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
            for i in range(200):
                if i == 50:
                    victim.kill()
                r = await client.get("/x")
                statuses[r.status_code] += 1
                if i >= 60:
                    servers[r.headers.get("x-server", "?")] += 1
        assert statuses == {200: 200}  # no client saw an error: connects were retried
        assert servers == {"a": 140}
        out = lb.output()
        assert "ejected" in out or "unhealthy" in out
    finally:
        victim.kill()


async def test_all_endpoints_down_gives_503_with_retry_after(wslb: Callable[..., Wslb]) -> None:
    lb = wslb(
        http_config(
            [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"],
            backend={
                "retry_after": 7,
                "health": {
                    "enabled": True,
                    "interval": 0.1,
                    "timeout": 0.5,
                    "unhealthy_threshold": 1,
                },
            },
        )
    )
    async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
        # first requests: connect refused on both -> 502 (one retry, then give up)
        r = await client.get("/x")
        assert r.status_code in (502, 503)
        # once both are known down: 503 with Retry-After
        for _ in range(int(scaled(100))):
            r = await client.get("/x")
            if r.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "7"


async def test_endpoint_comes_back_after_healthy_threshold(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    port = _free_port()
    lb = wslb(
        http_config(
            [f"127.0.0.1:{port}"],
            backend={
                "health": {
                    "type": "http",
                    "path": "/healthz",
                    "interval": 0.1,
                    "timeout": 0.5,
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 2,
                },
                "passive": {"max_fails": 1, "fail_timeout": 0.2},
            },
        )
    )
    async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
        r = await client.get("/x")
        assert r.status_code in (502, 503)
        back = start_backend("late", tmp_path, port=port)
        try:
            for _ in range(int(scaled(100))):
                r = await client.get("/x")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 200
            assert r.headers["x-server"] == "late"
        finally:
            back.stop()
    assert "healthy again" in lb.output()
