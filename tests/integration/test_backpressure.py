"""Backpressure both ways: a client (or backend) that does not read cannot grow wslb's memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable

import psutil
import websockets
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb, scaled

MiB = 1024 * 1024
BIG = 256 * MiB
BOUND = 40 * MiB  # allowed RSS growth; the transfer is more than 6x that


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def test_slow_reader_keeps_memory_bounded(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"), limit=64 * 1024)
    # warm up, then take the baseline
    writer.write(b"GET /bytes/1000 HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(1000)
    base = _rss(lb.pid)
    writer.write(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % BIG)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    # A client that stops reading: the backend could push 256 MiB in well under a second.
    peak = base
    for _ in range(20):
        await asyncio.sleep(0.1)  # the client is slow on purpose
        peak = max(peak, _rss(lb.pid))
    assert peak - base < BOUND, f"RSS grew by {(peak - base) / MiB:.1f} MiB"
    # and everything still arrives, intact
    h = hashlib.sha256()
    got = 0
    async with asyncio.timeout(scaled(120)):
        while got < BIG:
            chunk = await reader.read(1024 * 1024)
            assert chunk
            got += len(chunk)
            h.update(chunk)
    block = bytes(range(256)) * 256
    want = hashlib.sha256(block * (BIG // len(block))).hexdigest()
    assert got == BIG and h.hexdigest() == want
    writer.close()


async def test_slow_backend_keeps_upload_memory_bounded(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1]), listener={"client": {"max_body_size": 0}}))
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    base = _rss(lb.pid)
    size = 128 * MiB
    # The backend sleeps 2 s before it reads the body.
    writer.write(b"POST /slow?delay=2 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
    piece = b"z" * MiB
    peak = base

    async def send() -> None:
        for _ in range(size // MiB):
            writer.write(piece)
            await writer.drain()

    sender = asyncio.create_task(send())
    for _ in range(15):
        await asyncio.sleep(0.1)
        peak = max(peak, _rss(lb.pid))
    assert peak - base < BOUND, f"RSS grew by {(peak - base) / MiB:.1f} MiB"
    async with asyncio.timeout(scaled(120)):
        await sender
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = json.loads(await reader.readexactly(length))
    assert body["body_size"] == size
    assert body["body_sha256"] == hashlib.sha256(piece * (size // MiB)).hexdigest()
    writer.close()


async def test_websocket_slow_reader_keeps_memory_bounded(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    async with connect(
        f"ws://127.0.0.1:{lb.port('web')}/ws", max_size=None, compression=None, max_queue=1
    ) as ws:
        await ws.send("whoami")
        await ws.recv()
        base = _rss(lb.pid)
        # ask the backend for 100 x 2 MiB and do not read for a while
        for _ in range(100):
            await ws.send(f"bytes:{2 * MiB}")
        peak = base
        for _ in range(15):
            await asyncio.sleep(0.1)
            peak = max(peak, _rss(lb.pid))
        assert peak - base < BOUND, f"RSS grew by {(peak - base) / MiB:.1f} MiB"
        async with asyncio.timeout(scaled(120)):
            for _ in range(100):
                msg = await ws.recv()
                assert len(msg) == 2 * MiB
    assert isinstance(ws.close_code, int) or ws.close_code is None
    _ = websockets
