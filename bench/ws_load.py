"""WebSocket load for the benchmark: N connections, each a closed loop of send-then-await-echo.

    python bench/ws_load.py --port P --connections 50 --size 64 --seconds 10
        prints JSON: messages, msgs_per_s, p50_us, p99_us
    python bench/ws_load.py --port P --idle 5000
        opens 5000 WebSockets, prints "ready", holds them until stdin closes

Frames are pre-built (masked, as a client must) and echoes are counted by length, so the load
generator itself stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time

import uvloop
from websockets.speedups import apply_mask  # type: ignore[attr-defined]

HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(size: int) -> bytes:
    mask = os.urandom(4)
    payload = apply_mask(os.urandom(size), mask)
    if size < 126:
        head = bytes((0x82, 0x80 | size))
    elif size < 65536:
        head = bytes((0x82, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x82, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + mask + payload


def echo_length(size: int) -> int:
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


class Client(asyncio.Protocol):
    def __init__(
        self, frame: bytes, expect: int, stats: Stats, ready: asyncio.Future[None]
    ) -> None:
        self.frame = frame
        self.expect = expect
        self.stats = stats
        self.ready = ready
        self.open = False
        self.head = b""
        self.got = 0
        self.t0 = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(HANDSHAKE.format(key=key).encode())

    def start(self) -> None:
        assert self.transport is not None
        self.t0 = time.perf_counter()
        self.transport.write(self.frame)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                if not self.ready.done():
                    self.ready.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            self.open = True
            data = self.head[end + 4 :]
            if not self.ready.done():
                self.ready.set_result(None)
            if not data:
                return
        self.got += len(data)
        stats = self.stats
        while self.got >= self.expect:
            self.got -= self.expect
            now = time.perf_counter()
            if stats.recording:
                stats.latencies.append(now - self.t0)
            if stats.running:
                self.t0 = now
                assert self.transport is not None
                self.transport.write(self.frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        self.stats.lost += 1


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.running = True
        self.recording = False
        self.lost = 0


async def connect_all(port: int, n: int, size: int, stats: Stats) -> list[Client]:
    loop = asyncio.get_running_loop()
    frame = client_frame(size)
    expect = echo_length(size)
    clients: list[Client] = []
    sem = asyncio.Semaphore(200)

    async def one() -> None:
        async with sem:
            ready: asyncio.Future[None] = loop.create_future()
            _, c = await loop.create_connection(
                lambda: Client(frame, expect, stats, ready), "127.0.0.1", port
            )
            await ready
            clients.append(c)

    await asyncio.gather(*(one() for _ in range(n)))
    return clients


async def run_load(port: int, n: int, size: int, seconds: float, warmup: float) -> dict[str, float]:
    stats = Stats()
    clients = await connect_all(port, n, size, stats)
    for c in clients:
        c.start()
    await asyncio.sleep(warmup)
    print("start", flush=True)  # the harness samples the proxy's CPU time here
    stats.recording = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    stats.recording = False
    elapsed = time.perf_counter() - t0
    print("stop", flush=True)
    stats.running = False
    lat = sorted(stats.latencies)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    count = len(lat)
    return {
        "messages": count,
        "msgs_per_s": count / elapsed,
        "p50_us": lat[count // 2] * 1e6 if count else 0.0,
        "p99_us": lat[int(count * 0.99)] * 1e6 if count else 0.0,
        "lost": stats.lost,
    }


async def hold_idle(port: int, n: int) -> None:
    stats = Stats()
    stats.running = False
    clients = await connect_all(port, n, 1, stats)
    print(json.dumps({"ready": len(clients)}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for c in clients:
        if c.transport is not None:
            c.transport.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--idle", type=int, default=0)
    args = ap.parse_args()
    if args.idle:
        uvloop.run(hold_idle(args.port, args.idle))
        return
    result = uvloop.run(run_load(args.port, args.connections, args.size, args.seconds, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
