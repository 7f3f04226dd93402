"""Bad input and failing upstreams get the right status, a log line, and no traceback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb, scaled
from tests.support.raw import RecordedConnection, RecordingBackend, raw_exchange, status_of


@pytest.fixture
def lb(wslb: Callable[..., Wslb], backends: list[Proc]) -> Wslb:
    return wslb(
        http_config(
            endpoints(backends[:1]),
            listener={"client": {"header_timeout": 1.0, "max_body_size": 1000}},
            route={"host": "a"},
        )
    )


async def test_slow_head_gets_408(lb: Wslb) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    start = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")  # and then nothing: slowloris
    await writer.drain()
    async with asyncio.timeout(scaled(10)):
        resp = await reader.read()
    assert status_of(resp) == 408
    assert time.monotonic() - start >= 0.9
    writer.close()


async def test_slowloris_dribbling_headers_still_gets_408(lb: Wslb) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
    resp = b""
    async with asyncio.timeout(scaled(10)):
        for i in range(100):
            try:
                writer.write(b"X-%d: y\r\n" % i)
                await writer.drain()
            except ConnectionError:
                break
            try:
                async with asyncio.timeout(0.1):
                    resp = await reader.read()
                    break
            except TimeoutError:
                continue
    assert status_of(resp) == 408
    writer.close()


async def test_partial_head_pipelined_after_a_request_still_times_out(lb: Wslb) -> None:
    """The first byte of the next head came with a request: after that request's answer, the
    rest of the head has header_timeout, not forever (a slowloris that keeps its place)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    start = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nG")
    await writer.drain()
    async with asyncio.timeout(scaled(10)):
        got = await reader.read()  # until wslb closes
    assert got.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in got, got[-200:]
    assert time.monotonic() - start < scaled(5)
    writer.close()


async def test_idle_connection_without_bytes_is_closed_quietly(lb: Wslb) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    async with asyncio.timeout(scaled(10)):
        assert await reader.read() == b""
    writer.close()


async def test_huge_headers_get_431(lb: Wslb) -> None:
    big = b"X-Big: " + b"a" * (100 * 1024) + b"\r\n"
    resp = await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")
    assert status_of(resp) == 431


async def test_many_headers_get_431(lb: Wslb) -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(200))
    resp = await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert status_of(resp) == 431


async def test_long_uri_gets_414(lb: Wslb) -> None:
    resp = await raw_exchange(
        lb.port("web"), b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert status_of(resp) == 414


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",  # TLS to a plain port
        b"HELLO THERE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_requests_get_400(lb: Wslb, garbage: bytes) -> None:
    resp = await raw_exchange(lb.port("web"), garbage)
    assert status_of(resp) == 400, resp
    assert b"Traceback" not in resp


async def test_unknown_http_version_gets_505(lb: Wslb) -> None:
    resp = await raw_exchange(lb.port("web"), b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 505


async def test_no_route_gets_404(lb: Wslb) -> None:
    resp = await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: other\r\n\r\n")
    assert status_of(resp) == 404


async def test_body_over_limit_gets_413(lb: Wslb) -> None:
    resp = await raw_exchange(
        lb.port("web"),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
    )
    assert status_of(resp) == 413
    # chunked bodies are counted as they stream
    chunks = b"".join(b"%x\r\n%s\r\n" % (500, b"y" * 500) for _ in range(4)) + b"0\r\n\r\n"
    resp = await raw_exchange(
        lb.port("web"), b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    )
    assert status_of(resp) == 413


async def test_connect_method_is_refused(lb: Wslb) -> None:
    resp = await raw_exchange(
        lb.port("web"), b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert status_of(resp) in (400, 405)


async def test_errors_are_logged_once_with_connection_id(lb: Wslb) -> None:
    await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n")
    lines = [line for line in lb.output().splitlines() if "no route for nowhere" in line]
    assert len(lines) == 1
    assert "[c" in lines[0]
    assert "Traceback" not in lb.output()


async def test_slow_upstream_head_gets_504(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(http_config(endpoints(backends[:1]), backend={"timeouts": {"read": 0.5}}))
    resp = await raw_exchange(
        lb.port("web"), b"GET /slow?delay=3 HTTP/1.1\r\nHost: a\r\n\r\n", timeout=scaled(10)
    )
    assert status_of(resp) == 504


async def test_garbage_from_upstream_gets_502(wslb: Callable[..., Wslb]) -> None:
    async def garbage(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: RecordedConnection
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not http\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RecordingBackend(garbage) as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"]))
        resp = await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 502


async def test_101_to_a_plain_request_gets_502(wslb: Callable[..., Wslb]) -> None:
    async def switch(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: RecordedConnection
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    async with RecordingBackend(switch) as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"]))
        resp = await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 502


async def test_upstream_closing_before_response_gets_502(wslb: Callable[..., Wslb]) -> None:
    async def hangup(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: RecordedConnection
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with RecordingBackend(hangup) as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"]))
        resp = await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 502
    assert "Traceback" not in lb.output()
