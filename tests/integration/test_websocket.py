"""WebSockets with no configuration: tunnels, integrity, close codes, timeouts, refusals."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb, scaled
from tests.support.raw import raw_exchange, status_of


def _sizes(n: int, seed: int) -> list[int]:
    """Log-uniform sizes from 0 to 1 MiB, with both ends included."""
    rng = random.Random(seed)
    sizes = [int(2 ** rng.uniform(0, 20)) for _ in range(n)]
    sizes[0], sizes[1], sizes[-1] = 0, 1024 * 1024, 1024 * 1024
    return sizes


@pytest.mark.parametrize("entry", ["http", "https"])
async def test_thousand_messages_each_way_intact_and_in_order(
    entry: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    server_cert: tuple[str, str],
    ca_file: str,
) -> None:
    listener = (
        {"tls": {"certificate": server_cert[0], "key": server_cert[1]}} if entry == "https" else {}
    )
    lb = wslb(http_config(endpoints(backends[:1]), listener=listener, protocol=entry))
    scheme = "wss" if entry == "https" else "ws"
    ctx = ssl.create_default_context(cafile=ca_file) if entry == "https" else None
    sizes = _sizes(1000, seed=7)
    payloads = [random.Random(i).randbytes(s) for i, s in enumerate(sizes)]
    async with connect(
        f"{scheme}://127.0.0.1:{lb.port('web')}/ws",
        ssl=ctx,
        max_size=None,
        compression=None,
        open_timeout=scaled(10),
    ) as ws:

        async def sender() -> None:
            for p in payloads:
                await ws.send(p)

        received: list[bytes] = []

        async def receiver() -> None:
            while len(received) < len(payloads):
                msg = await ws.recv()
                assert isinstance(msg, bytes)
                received.append(msg)

        async with asyncio.timeout(scaled(120)):
            await asyncio.gather(sender(), receiver())
        assert len(received) == len(payloads)
        for i, (want, got) in enumerate(zip(payloads, received, strict=True)):
            assert got == want, f"message {i} differs"
        # text frames too
        await ws.send("héllo")
        assert await ws.recv() == "héllo"


@pytest.mark.parametrize("code", [1000, 1001, 4000, 4999])
async def test_close_codes_pass_through(
    code: int, wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws") as ws:
        await ws.send(f"close:{code}")
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == code


async def test_client_close_code_reaches_backend_and_back(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws") as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
        await ws.close(code=4321, reason="bye")
    # the server echoes the close frame: the close handshake completed through the tunnel
    assert ws.close_code == 4321


async def test_idle_tunnel_closed_at_tunnel_timeout_while_active_one_stays(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    tunnel = 1.5
    lb = wslb(
        http_config(
            endpoints(backends[:1]),
            backend={"timeouts": {"tunnel": tunnel, "read": 0.5}},
            listener={"client": {"keepalive_timeout": 0.5}},
        )
    )
    url = f"ws://127.0.0.1:{lb.port('web')}/ws"
    async with connect(url, ping_interval=None) as idle, connect(url, ping_interval=None) as active:
        start = time.monotonic()
        # Keep one tunnel busy well past the HTTP read and keep-alive timeouts and past the
        # tunnel timeout itself; the other stays silent.
        while time.monotonic() - start < tunnel * 2.5:
            await active.send("tick")
            assert await active.recv() == "tick"
            await asyncio.sleep(0.1)
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(scaled(5)):
                await idle.recv()
        closed_after = time.monotonic() - start
        assert closed_after >= tunnel
        await active.send("still here")
        assert await active.recv() == "still here"


async def test_idle_keepalive_connection_closed_at_its_own_timeout(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    keepalive = 0.6
    lb = wslb(
        http_config(
            endpoints(backends[:1]),
            listener={"client": {"keepalive_timeout": keepalive}},
            backend={"timeouts": {"tunnel": 30}},
        )
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    start = time.monotonic()
    async with asyncio.timeout(scaled(10)):
        rest = await reader.read()  # body, then EOF when wslb closes the idle connection
    elapsed = time.monotonic() - start
    assert rest.endswith(b"}")
    assert keepalive * 0.9 <= elapsed < keepalive + scaled(3)
    writer.close()


async def test_non_101_answer_is_relayed_as_a_normal_response(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    # uvicorn answers 403 to a WebSocket handshake the app refuses before accepting
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws-refuse"):
            pass
    assert info.value.response.status_code == 403
    # and the connection goes on serving HTTP afterwards
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    writer.write(
        b"GET /ws-refuse HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(scaled(10)):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        head2 = await reader.readuntil(b"\r\n\r\n")
    assert head2.startswith(b"HTTP/1.1 200")
    writer.close()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        # wrong version: 426 naming the supported one
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n", 426),
        # no key
        (b"Sec-WebSocket-Version: 13\r\n", 400),
        # key that is not 16 bytes of base64
        (b"Sec-WebSocket-Key: bm9wZQ==\r\nSec-WebSocket-Version: 13\r\n", 400),
    ],
)
async def test_malformed_handshakes_are_refused_not_tunnelled(
    request_head: bytes, status: int, wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    resp = await raw_exchange(
        lb.port("web"),
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + request_head
        + b"\r\n",
        timeout=scaled(5),
    )
    assert status_of(resp) == status
    if status == 426:
        assert b"Sec-WebSocket-Version: 13" in resp
