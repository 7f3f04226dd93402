"""Connection limits that hold under attack: per listener, per client address, and the
file-descriptor limit (refuse new connections, keep the open ones, say it once, no busy loop)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import psutil

from tests.integration.conftest import endpoints, http_config
from tests.support.metrics import admin_url, metrics_until, total
from tests.support.procs import Proc, Wslb, scaled
from tests.support.raw import status_of

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
REFUSAL = "refusing new connections"


async def _open(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """One keep-alive request on an open connection; its status."""
    writer.write(GET)
    await writer.drain()
    async with asyncio.timeout(scaled(10)):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
    return status_of(head)


async def _refused(port: int, source: str = "127.0.0.1") -> bytes:
    """What a connection gets without sending anything; b"" if it was accepted (then closed)."""
    reader, writer = await _open(port, source)
    try:
        async with asyncio.timeout(0.5):
            return await reader.read()
    except TimeoutError:
        return b""
    finally:
        writer.close()


async def _served(port: int, source: str = "127.0.0.1") -> bool:
    reader, writer = await _open(port, source)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(scaled(10)):
            return status_of(await reader.read()) == 200
    finally:
        writer.close()


async def _eventually_served(port: int) -> None:
    """A closed connection's place is given back as soon as wslb sees the close."""
    deadline = time.monotonic() + scaled(10)
    while not await _served(port):
        assert time.monotonic() < deadline, "the freed place was not given back"
        await asyncio.sleep(0.05)


async def test_listener_connection_limit(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(
        http_config(endpoints(backends[:1]), listener={"client": {"max_connections": 5}}),
        extra=["--admin", "127.0.0.1:0"],
    )
    port = lb.port("web")
    held = [await _open(port) for _ in range(5)]
    for conn in held:
        assert await _request(*conn) == 200
    for _ in range(20):
        answer = await _refused(port)
        assert status_of(answer) == 503 and b"Retry-After: 1\r\n" in answer
    # the five open connections keep working
    for conn in held:
        assert await _request(*conn) == 200
    held.pop()[1].close()
    await _eventually_served(port)
    # said once for the 20 refusals (the next one would come a minute later at the earliest)
    assert lb.output().count(REFUSAL) == 1
    assert "max_connections" in lb.output()

    # and counted (workers publish their counters every moment: wait for it, bounded); 20,
    # and any the wait for the freed place met
    def refused(samples: dict[Any, float]) -> float:
        return total(samples, "wslb_connections_refused_total", listener="web", limit="listener")

    samples = await metrics_until(admin_url(lb), lambda s: refused(s) >= 20)
    assert refused(samples) >= 20, samples
    for _, w in held:
        w.close()


async def test_per_address_connection_limit(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(
        http_config(endpoints(backends[:1]), listener={"client": {"max_connections_per_ip": 3}})
    )
    port = lb.port("web")
    held = [await _open(port) for _ in range(3)]
    for conn in held:
        assert await _request(*conn) == 200
    assert status_of(await _refused(port)) == 503
    # another client address is not affected
    others = [await _open(port, "127.0.0.2") for _ in range(3)]
    for conn in others:
        assert await _request(*conn) == 200
    assert status_of(await _refused(port, "127.0.0.2")) == 503
    held.pop()[1].close()
    await _eventually_served(port)
    for _, w in held + others:
        w.close()


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def test_file_descriptor_limit(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    """With 128 descriptors a worker admits (128 - 64) / 2 = 32 client connections: each one
    can still get its upstream connection. The 33rd and after are refused with a 503, the 32
    keep working, the refusal is logged once, and wslb does not spin."""
    lb = wslb(http_config(endpoints(backends[:1])), nofile=128)
    port = lb.port("web")
    held = [await _open(port) for _ in range(32)]
    # every held connection has an upstream connection open at the same time
    statuses = await asyncio.gather(*(_request(*conn) for conn in held))
    assert statuses == [200] * 32
    cpu0 = _cpu_seconds(lb.pid)
    refused = []
    for _ in range(40):
        refused.append(status_of(await _refused(port)))
    assert refused == [503] * 40
    # held connections (with their upstream connections) keep working, also all at once
    assert await asyncio.gather(*(_request(*conn) for conn in held)) == [200] * 32
    # Idle with every place taken: no busy loop (2 s of wall time, well under 0.5 s of CPU).
    start = _cpu_seconds(lb.pid)
    await asyncio.sleep(2)
    idle_cpu = _cpu_seconds(lb.pid) - start
    assert idle_cpu < 0.5, f"{idle_cpu:.2f} s of CPU while idle at the limit"
    out = lb.output()
    assert out.count(REFUSAL) == 1 and "file-descriptor limit" in out
    assert "Too many open files" not in out and "Traceback" not in out
    held.pop()[1].close()
    await _eventually_served(port)
    print(
        f"fd limit 128: 32 connections held, 40 refused with 503, "
        f"CPU for the refusals {start - cpu0:.2f} s, idle at the limit {idle_cpu:.3f} s / 2 s; "
        f"open fds {len(os.listdir(f'/proc/{lb.pid}/fd'))}"
    )
    for _, w in held:
        w.close()


async def test_tcp_listener_refuses_by_closing(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    backend_port = int(endpoints(backends[:1])[0].rsplit(":", 1)[1])
    config = {
        "listeners": [
            {
                "name": "tcp",
                "address": "127.0.0.1",
                "port": 0,
                "protocol": "tcp",
                "backend": "raw",
                "client": {"max_connections": 2},
            }
        ],
        "backends": [
            {
                "name": "raw",
                "protocol": "tcp",
                "endpoints": [f"127.0.0.1:{backend_port}"],
                "health": {"enabled": False},
            }
        ],
    }
    lb = wslb(config)
    port = lb.port("tcp")
    held = [await _open(port) for _ in range(2)]
    for conn in held:
        assert await _request(*conn) == 200
    # the third is closed without a byte
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    assert sock.recv(100) == b""
    sock.close()
    held.pop()[1].close()
    deadline = time.monotonic() + scaled(10)
    while True:
        conn = await _open(port)
        try:
            if await _request(*conn) == 200:
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            conn[1].close()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert lb.output().count(REFUSAL) == 1
    for _, w in held:
        w.close()
