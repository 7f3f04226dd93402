"""WebSocket load for the benchmark: N connections, each a closed loop of send-then-await-echo.

    python bench/ws_load.py --port P --connections 50 --size 64 --seconds 10
        prints JSON: messages, msgs_per_s, p50_us, p99_us
    python bench/ws_load.py --port P --idle 5000
        opens 5000 WebSockets, prints "ready", holds them until stdin closes
    python bench/ws_load.py --port P --handshakes 50 --seconds 10
        50 clients in a loop: connect, upgrade, 101, Close, close; prints JSON: handshakes,
        per_s, p50_us, p99_us (a reconnect storm's unit of work)
    --h2 10: the WebSockets are RFC 8441 streams (extended CONNECT, h2c with prior knowledge),
        10 on each HTTP/2 connection: --connections 50 --h2 10 is 50 streams on 5 connections

Frames are pre-built (masked, as a client must) and echoes are counted by length, so the load
generator itself stays cheap; the HTTP/2 client is ngh2 (libnghttp2), for the same reason.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from functools import partial

import ngh2
import uvloop
from websockets.speedups import apply_mask  # type: ignore[attr-defined]

HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


HANDSHAKES = 200  # WebSocket handshakes in flight at most, over HTTP/1.1 or HTTP/2


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


class H2Stream:
    """One RFC 8441 WebSocket on an H2Client's connection; the same closed loop as Client."""

    def __init__(self, conn: H2Client, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.got = 0
        self.t0 = 0.0
        self.transport = None  # closed with its connection

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.conn.send(self.sid, self.conn.frame)

    def received(self, n: int) -> None:
        self.got += n
        stats = self.conn.stats
        expect = self.conn.expect
        while self.got >= expect:
            self.got -= expect
            now = time.perf_counter()
            if stats.recording:
                stats.latencies.append(now - self.t0)
            if stats.running:
                self.t0 = now
                self.conn.send(self.sid, self.conn.frame)


CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/ws"),
    (b":authority", b"bench"),
    (b"sec-websocket-version", b"13"),
]


class H2Client(asyncio.Protocol):
    """One h2c connection carrying ``n`` extended-CONNECT WebSockets, opened once the server's
    SETTINGS allow it, at most ``ramp`` handshakes at a time (as the HTTP/1.1 clients are
    opened at most HANDSHAKES at a time); ``ready`` is set when every stream has its 200."""

    def __init__(
        self,
        n: int,
        frame: bytes,
        expect: int,
        stats: Stats,
        ready: asyncio.Future[None],
        ramp: int,
    ) -> None:
        self.n = n
        self.ramp = ramp
        self.frame = frame
        self.expect = expect
        self.stats = stats
        self.ready = ready
        self.conn = ngh2.Connection(ngh2.Role.CLIENT, ngh2.Configuration())
        self.streams: dict[int, H2Stream] = {}
        self.pending: set[int] = set()
        self.transport: asyncio.Transport | None = None
        self.flushing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection(
            {ngh2.Setting.ENABLE_PUSH: 0, ngh2.Setting.INITIAL_WINDOW_SIZE: 1 << 20}
        )
        self.flush()

    def send(self, sid: int, data: bytes) -> None:
        self.conn.send_data(sid, data)
        if not self.flushing:  # one write per loop iteration, as a real client batches
            self.flushing = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flushing = False
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
        except ngh2.NGH2Error as exc:
            self.fail(f"HTTP/2 error: {exc}")
            return
        for ev in self.conn.events():
            if isinstance(ev, ngh2.DataReceived):
                self.streams[ev.stream_id].received(len(ev.data))
            elif isinstance(ev, ngh2.SettingsReceived) and not self.streams and not self.pending:
                self.open_more()
            elif isinstance(ev, ngh2.ResponseReceived):
                status = dict(ev.headers).get(b":status")
                if status != b"200":
                    self.fail(f"stream refused: {status!r}")
                    return
                self.pending.discard(ev.stream_id)
                self.streams[ev.stream_id] = H2Stream(self, ev.stream_id)
                self.open_more()
                if not self.pending and not self.ready.done():
                    self.ready.set_result(None)
            elif isinstance(ev, (ngh2.StreamReset, ngh2.StreamClosed)) and (
                ev.stream_id in self.pending
            ):
                self.fail(f"stream {ev.stream_id} closed before its response")
                return
        self.flush()

    def open_more(self) -> None:
        while len(self.pending) < self.ramp and len(self.pending) + len(self.streams) < self.n:
            self.pending.add(self.conn.send_request(CONNECT))

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"closed during handshake: {exc}")
        self.stats.lost += len(self.streams)


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.running = True
        self.recording = False
        self.lost = 0


async def connect_all(
    port: int, n: int, size: int, stats: Stats, h2: int = 0
) -> list[Client] | list[H2Stream]:
    loop = asyncio.get_running_loop()
    frame = client_frame(size)
    expect = echo_length(size)
    clients: list[Client] = []
    sem = asyncio.Semaphore(HANDSHAKES)
    if h2:
        conns: list[H2Client] = []

        async def h2conn(streams: int) -> None:
            async with sem:
                ready: asyncio.Future[None] = loop.create_future()
                _, c = await loop.create_connection(
                    lambda: H2Client(streams, frame, expect, stats, ready, ramp),
                    "127.0.0.1",
                    port,
                )
                await ready
                conns.append(c)

        sizes = [h2] * (n // h2) + ([n % h2] if n % h2 else [])
        ramp = max(1, HANDSHAKES // len(sizes))  # handshakes in flight: HANDSHAKES in all
        await asyncio.gather(*(h2conn(k) for k in sizes))
        return [s for c in conns for s in c.streams.values()]

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


async def run_load(
    port: int, n: int, size: int, seconds: float, warmup: float, h2: int = 0
) -> dict[str, float]:
    stats = Stats()
    clients = await connect_all(port, n, size, stats, h2)
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
    close(clients)
    count = len(lat)
    return {
        "messages": count,
        "msgs_per_s": count / elapsed,
        "p50_us": lat[count // 2] * 1e6 if count else 0.0,
        "p99_us": lat[int(count * 0.99)] * 1e6 if count else 0.0,
        "lost": stats.lost,
    }


def close(clients: list[Client] | list[H2Stream]) -> None:
    for c in clients:
        t = c.conn.transport if isinstance(c, H2Stream) else c.transport
        if t is not None:
            t.close()


CLOSE = bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big")  # masked, zero key


class Handshaker(asyncio.Protocol):
    """One WebSocket's life: the upgrade, its 101, a Close, the server's Close, the end."""

    def __init__(self, done: asyncio.Future[bool]) -> None:
        self.done = done
        self.buf = b""
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(HANDSHAKE.format(key=key).encode())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.buf.startswith(b"HTTP/1.1 101")
            self.buf = self.buf[end + 4 :]
            if not ok:
                self.finish(False)
                return
            self.open = True
            assert self.transport is not None
            self.transport.write(CLOSE)
        if len(self.buf) >= 2 and self.buf[0] & 0x0F == 0x8:  # the server's Close
            self.finish(True)

    def finish(self, ok: bool) -> None:
        if not self.done.done():
            self.done.set_result(ok)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(False)


async def run_handshakes(
    port: int, clients: int, seconds: float, warmup: float
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failed = 0
    state = {"recording": False, "running": True}

    async def client() -> None:
        nonlocal failed
        while state["running"]:
            t0 = time.perf_counter()
            done: asyncio.Future[bool] = loop.create_future()
            try:
                await loop.create_connection(partial(Handshaker, done), "127.0.0.1", port)
                ok = await done
            except OSError:
                ok = False
            if state["recording"]:
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failed += 1

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(warmup)
    print("start", flush=True)
    state["recording"] = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    state["recording"] = False
    elapsed = time.perf_counter() - t0
    print("stop", flush=True)
    state["running"] = False
    await asyncio.gather(*tasks)
    lat = sorted(latencies)
    count = len(lat)
    return {
        "messages": count,  # (run_ws's name for what is divided by: here, handshakes)
        "handshakes": count,
        "per_s": count / elapsed,
        "p50_us": lat[count // 2] * 1e6 if count else 0.0,
        "p99_us": lat[int(count * 0.99)] * 1e6 if count else 0.0,
        "failed": failed,
    }


async def hold_idle(port: int, n: int, h2: int = 0) -> None:
    stats = Stats()
    stats.running = False
    clients = await connect_all(port, n, 1, stats, h2)
    print(json.dumps({"ready": len(clients)}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    close(clients)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--idle", type=int, default=0)
    ap.add_argument("--h2", type=int, default=0, help="RFC 8441 streams per h2c connection")
    ap.add_argument("--handshakes", type=int, default=0, help="clients opening and closing")
    args = ap.parse_args()
    if args.handshakes:
        print(
            json.dumps(
                uvloop.run(run_handshakes(args.port, args.handshakes, args.seconds, args.warmup))
            )
        )
        return
    if args.idle:
        uvloop.run(hold_idle(args.port, args.idle, args.h2))
        return
    result = uvloop.run(
        run_load(args.port, args.connections, args.size, args.seconds, args.warmup, args.h2)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
