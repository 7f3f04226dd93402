"""HTTP/1.1 proxy semantics: pipelining, 100-continue, headers, keep-alive pools, HTTP/1.0."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httptools
import httpx

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb, scaled
from tests.support.raw import OK, RecordedConnection, RecordingBackend


class _Responses:
    """Collects complete responses parsed from a byte stream."""

    def __init__(self) -> None:
        self.items: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.items.append((self.parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""


async def _read_responses(reader: asyncio.StreamReader, n: int) -> _Responses:
    out = _Responses()
    async with asyncio.timeout(scaled(15)):
        while len(out.items) < n:
            chunk = await reader.read(65536)
            assert chunk, "connection closed early"
            out.parser.feed_data(chunk)
    return out


async def test_pipelined_requests_are_answered_in_order(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends), backend={"keepalive": {"enabled": True}}))
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    # 10 requests in one write, some slow, some with bodies: answers must come back in order.
    batch = b""
    for i in range(10):
        if i % 3 == 0:
            batch += b"GET /slow?delay=0.%d&i=%d HTTP/1.1\r\nHost: a\r\n\r\n" % (3 - i % 3, i)
        elif i % 3 == 1:
            body = b"x" * (i * 1000)
            batch += b"POST /p?i=%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (
                i,
                len(body),
                body,
            )
        else:
            batch += b"GET /g?i=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i
    writer.write(batch)
    await writer.drain()
    got = await _read_responses(reader, 10)
    order = [json.loads(body)["query"].split("i=")[1] for _, _, body in got.items]
    assert order == [str(i) for i in range(10)]
    sizes = [json.loads(body)["body_size"] for _, _, body in got.items]
    assert sizes == [i * 1000 if i % 3 == 1 else 0 for i in range(10)]
    writer.close()


async def test_expect_100_continue(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    writer.write(
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(scaled(10)):
        interim = await reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    await writer.drain()
    got = await _read_responses(reader, 1)
    status, _, body = got.items[0]
    assert status == 200
    assert json.loads(body)["body_size"] == 5
    writer.close()


async def test_expect_100_continue_over_the_limit_is_refused_without_reading(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1]), listener={"client": {"max_body_size": 10}}))
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    writer.write(
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    got = await _read_responses(reader, 1)
    assert got.items[0][0] == 413
    writer.close()


async def test_hop_by_hop_removed_host_kept_forwarded_headers_set(
    wslb: Callable[..., Wslb],
) -> None:
    async with RecordingBackend() as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"]))
        reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
        writer.write(
            b"GET /path?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\n"
            b"Connection: keep-alive, X-Secret\r\n"
            b"X-Secret: drop me\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: x\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Other: kept\r\n\r\n"
        )
        await writer.drain()
        await _read_responses(reader, 1)
        writer.close()
        head = bytes(backend.connections[0].data).split(b"\r\n\r\n")[0].decode()
    lines = head.split("\r\n")
    assert lines[0] == "GET /path?q=1 HTTP/1.1"
    names = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in lines[1:]}
    assert names["host"] == "Example.COM:8080"
    for gone in ("x-secret", "keep-alive", "te", "proxy-connection"):
        assert gone not in names, gone
    assert names["connection"] == "close"  # keep-alive to backends is off by default (as DO)
    assert names["x-other"] == "kept"
    # the client is not trusted: its X-Forwarded-* are replaced, not appended to
    assert names["x-forwarded-for"] == "127.0.0.1"
    assert names["x-forwarded-proto"] == "http"
    assert names["x-forwarded-port"] == str(lb.port("web"))


async def test_forwarded_for_appended_only_from_trusted_peers(wslb: Callable[..., Wslb]) -> None:
    async with RecordingBackend() as backend:
        lb = wslb(
            http_config(
                [f"127.0.0.1:{backend.port}"], listener={"trusted_proxies": ["127.0.0.0/8"]}
            )
        )
        async with httpx.AsyncClient(base_url=lb.url("web")) as client:
            await client.get(
                "/", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
            )
        head = bytes(backend.connections[0].data).decode()
    assert "X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n" in head
    assert "X-Forwarded-Proto: https\r\n" in head


async def test_backend_keepalive_reuses_connections(wslb: Callable[..., Wslb]) -> None:
    async with RecordingBackend() as backend:
        lb = wslb(
            http_config([f"127.0.0.1:{backend.port}"], backend={"keepalive": {"enabled": True}})
        )
        async with httpx.AsyncClient(base_url=lb.url("web")) as client:
            for _ in range(20):
                assert (await client.get("/")).status_code == 200
        assert len(backend.connections) == 1
        assert bytes(backend.connections[0].data).count(b"GET / HTTP/1.1") == 20


async def test_without_keepalive_one_request_per_upstream_connection(
    wslb: Callable[..., Wslb],
) -> None:
    async with RecordingBackend() as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"]))
        async with httpx.AsyncClient(base_url=lb.url("web")) as client:
            for _ in range(5):
                assert (await client.get("/")).status_code == 200
        assert len(backend.connections) == 5


async def test_dead_pooled_connection_is_retried_transparently(wslb: Callable[..., Wslb]) -> None:
    """The backend closes idle connections without telling anyone (races a reuse)."""
    served = 0

    async def one_then_hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: RecordedConnection
    ) -> None:
        nonlocal served
        head = await reader.readuntil(b"\r\n\r\n")
        rec.data += head
        served += 1
        # answer keep-alive, then close as soon as the next request arrives, unanswered
        writer.write(OK)
        await writer.drain()
        nxt = await reader.read(65536)
        rec.data += nxt

    async with RecordingBackend(one_then_hang_up) as backend:
        lb = wslb(
            http_config([f"127.0.0.1:{backend.port}"], backend={"keepalive": {"enabled": True}})
        )
        async with httpx.AsyncClient(base_url=lb.url("web")) as client:
            for _ in range(6):
                r = await client.get("/")
                assert r.status_code == 200, r.text
    assert served == 6
    assert "Traceback" not in lb.output()


async def test_head_requests_and_no_body_statuses(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1]), backend={"keepalive": {"enabled": True}}))
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    writer.write(
        b"HEAD /bytes/100 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    await writer.drain()
    # HEAD responses carry Content-Length but no body: parse them as such.
    async with asyncio.timeout(scaled(10)):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100" in head
    got = await _read_responses(reader, 3)
    assert [s for s, _, _ in got.items] == [204, 304, 200]
    assert got.items[2][2] == b"\x00\x01\x02"
    writer.close()


async def test_http10_client(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
    writer.write(b"GET /bytes/10?chunked=1 HTTP/1.0\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(scaled(10)):
        data = await reader.read()  # an HTTP/1.0 response ends when the connection closes
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower()
    assert body == bytes(range(10))
    writer.close()


async def test_chunked_response_rechunked_for_http11_and_trailer_free(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1])))
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        r = await client.get("/bytes/200000", params={"chunked": "1"})
    assert r.headers["transfer-encoding"] == "chunked"
    assert len(r.content) == 200000
