"""Memory stays flat across 10,000 idle WebSockets opened and closed 10 times (and across 2,000
RFC 8441 streams opened and closed 5 times), and every descriptor comes back each time.

Two wslb workers (each holds half the tunnels, 2 descriptors each, within a 20,000-descriptor
limit), a minimal RFC 6455 backend (bench/ws_echo.py) in its own process, and lean clients made
of asyncio protocols in this one, so that the 100,000 handshakes take well under a minute.
``WSLB_IDLE_WEBSOCKETS`` and ``WSLB_IDLE_ROUNDS`` change the counts; with fewer descriptors
than the count needs, the count is lowered to what fits and said in the output.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import psutil
import pytest

from tests.support.h2client import H2Client, H2WebSocket
from tests.support.procs import ROOT, Wslb, scaled

MiB = 1024 * 1024
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
ACCEPT = b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class Client(asyncio.Protocol):
    """One WebSocket client that opens and then stays idle."""

    def __init__(self, opened: asyncio.Future[None]) -> None:
        self.opened = opened
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(HANDSHAKE)

    def data_received(self, data: bytes) -> None:
        if self.opened.done():
            return
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            if self.buf.startswith(b"HTTP/1.1 101 ") and ACCEPT in self.buf:
                self.opened.set_result(None)
            else:
                self.opened.set_exception(AssertionError(self.buf[:200]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the 101"))


async def _open_all(port: int, n: int) -> list[asyncio.Transport]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(256)
    out: list[asyncio.Transport] = []

    async def one() -> None:
        async with gate:
            opened: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(lambda: Client(opened), "127.0.0.1", port)
            await opened
            out.append(transport)

    await asyncio.gather(*(one() for _ in range(n)))
    return out


def _workers(lb: Wslb) -> list[psutil.Process]:
    return psutil.Process(lb.pid).children()


def _rss(procs: list[psutil.Process]) -> int:
    return sum(int(p.memory_info().rss) for p in procs)


def _fds(procs: list[psutil.Process]) -> int:
    return sum(p.num_fds() for p in procs)


def _echo_config(echo_port: int, **listener: Any) -> dict[str, Any]:
    """One plain listener (``listener`` adds to it) to bench/ws_echo.py on ``echo_port``."""
    web = {"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http", **listener}
    return {
        "listeners": [web],
        "backends": [
            {"name": "ws", "endpoints": [f"127.0.0.1:{echo_port}"], "health": {"enabled": False}}
        ],
        "routes": [{"backend": "ws"}],
    }


def _assert_flat(rss_open: list[int], rss_closed: list[int]) -> None:
    """Flat: after the first round (which grows the allocator's arenas once), neither the RSS
    with every WebSocket open nor the RSS after closing them grows further."""
    for rss in (rss_open, rss_closed):
        worst = max(rss[1:], default=rss[0])
        assert worst <= rss[0] * 1.05 + 8 * MiB, (worst, rss[0])


def _fit(wanted: int) -> int:
    """Raise this process's descriptor limit; the count of WebSockets that fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # this process holds one descriptor per client; each wslb worker two per tunnel (half the
    # tunnels each, within its own (limit - 64) / 2 connections); the backend one per tunnel
    return max(100, min(wanted, hard - 500))


@pytest.fixture
def echo_port() -> Iterator[int]:
    """bench/ws_echo.py on a port of its choosing."""
    backend = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "ws_echo.py"), "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert backend.stdout is not None
        line = backend.stdout.readline()  # "listening PORT", once bound
        yield int(line.split()[1])
    finally:
        backend.terminate()
        backend.wait(10)


async def test_memory_flat_across_idle_websockets(
    wslb: Callable[..., Wslb], echo_port: int
) -> None:
    n = _fit(int(os.environ.get("WSLB_IDLE_WEBSOCKETS", "10000")))
    rounds = int(os.environ.get("WSLB_IDLE_ROUNDS", "10"))

    lb = wslb({"server": {"workers": 2}, **_echo_config(echo_port)})
    port = lb.port("web")
    workers = _workers(lb)
    assert len(workers) == 2
    fds_idle = _fds(workers)
    rows = []
    for rnd in range(rounds):
        t0 = time.monotonic()
        async with asyncio.timeout(scaled(300)):
            clients = await _open_all(port, n)
        opened_in = time.monotonic() - t0
        rss_open = _rss(workers)
        fds_open = _fds(workers)
        for t in clients:
            t.close()
        clients.clear()
        # every descriptor comes back (bounded wait on wslb seeing the closes)
        deadline = time.monotonic() + scaled(60)
        while _fds(workers) > fds_idle:
            assert time.monotonic() < deadline, f"round {rnd + 1}: descriptors not released"
            await asyncio.sleep(0.05)
        rows.append((rnd + 1, opened_in, rss_open, fds_open, _rss(workers), _fds(workers)))
    print(f"\n{n} idle WebSockets through 2 wslb workers, {rounds} rounds")
    print("round  open(s)  RSS open (MiB)  fds open  RSS closed (MiB)  fds closed")
    for rnd, secs, r_open, f_open, r_closed, f_closed in rows:
        print(
            f"{rnd:5d}  {secs:7.1f}  {r_open / MiB:14.1f}  {f_open:8d}  "
            f"{r_closed / MiB:16.1f}  {f_closed:10d}"
        )
    assert all(row[3] >= fds_idle + 2 * n for row in rows), "not every tunnel was open"
    _assert_flat([r[2] for r in rows], [r[4] for r in rows])


async def _open_streams(port: int, conns: int, per_conn: int) -> list[H2Client]:
    """``conns`` h2c connections, each with ``per_conn`` RFC 8441 WebSockets open (at most 200
    handshakes in flight, as browsers open them over time)."""
    gate = asyncio.Semaphore(200)

    async def one(client: H2Client) -> None:
        async with gate:
            await client.websocket(b"/ws")

    clients = [await H2Client.connect("127.0.0.1", port) for _ in range(conns)]
    await asyncio.gather(*(one(c) for c in clients for _ in range(per_conn)))
    return clients


async def test_memory_flat_across_idle_rfc8441_streams(
    wslb: Callable[..., Wslb], echo_port: int
) -> None:
    """The same over HTTP/2: WebSockets as extended-CONNECT streams (RFC 8441), 100 to a
    connection; whatever a stream leaves behind (in wslb's session or in libnghttp2) would grow
    the RSS round after round, and every upstream descriptor comes back."""
    per_conn = 100
    conns = max(1, _fit(int(os.environ.get("WSLB_IDLE_STREAMS", "2000"))) // per_conn)
    n = conns * per_conn
    rounds = int(os.environ.get("WSLB_IDLE_ROUNDS", "5"))
    lb = wslb(_echo_config(echo_port, http2=True))
    port = lb.port("web")
    proc = [psutil.Process(lb.pid)]
    fds_idle = _fds(proc)
    rows = []
    for rnd in range(rounds):
        async with asyncio.timeout(scaled(300)):
            clients = await _open_streams(port, conns, per_conn)
            # a tunnel relays: one echo on the last stream opened
            ws = H2WebSocket(clients[-1], max(clients[-1].streams), [])
            await ws.send(b"ping %d" % rnd)
            assert await ws.recv() == b"ping %d" % rnd
        rss_open, fds_open = _rss(proc), _fds(proc)
        for c in clients:
            await c.close()
        deadline = time.monotonic() + scaled(60)
        while _fds(proc) > fds_idle:
            assert time.monotonic() < deadline, f"round {rnd + 1}: descriptors not released"
            await asyncio.sleep(0.05)
        rows.append((rss_open, fds_open, _rss(proc)))
    print(f"\n{n} idle RFC 8441 streams on {conns} connections, {rounds} rounds")
    for rnd, (r_open, f_open, r_closed) in enumerate(rows, 1):
        print(
            f"round {rnd}: RSS {r_open / MiB:.1f} MiB open ({f_open} fds), {r_closed / MiB:.1f} closed"
        )
    assert all(row[1] >= fds_idle + conns + n for row in rows), "not every tunnel was open"
    _assert_flat([r[0] for r in rows], [r[2] for r in rows])
