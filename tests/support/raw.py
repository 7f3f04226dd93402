"""Hand-driven peers for tests that need to see or send exact bytes.

``RecordingBackend`` is a real TCP server on loopback that records every byte each connection
sends it and answers each request with a fixed response (or follows a script). ``raw_exchange``
sends bytes to a server and reads until it closes or a timeout, for malformed-request tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass
class RecordedConnection:
    data: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, RecordedConnection], Awaitable[None]
]


async def answer_each_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: RecordedConnection
) -> None:
    """Read request heads (no bodies) and answer each with ``OK``, keeping the connection. A
    PROXY header first is recorded and skipped (v2's signature holds a CRLFCRLF)."""
    buf = b""
    header_done = False
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        rec.data += chunk
        buf += chunk
        if not header_done:
            if buf.startswith(PROXY_V2_SIGNATURE[: len(buf)]) and len(buf) < 16:
                continue
            if buf.startswith(PROXY_V2_SIGNATURE):
                end = 16 + int.from_bytes(buf[14:16], "big")
            elif buf.startswith(b"PROXY "):
                end = buf.find(b"\r\n") + 2 if b"\r\n" in buf else 0
            else:
                end = -1
            if end == 0 or end > len(buf):
                continue  # the header is not all in yet
            if end > 0:
                buf = buf[end:]
            header_done = True
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            writer.write(OK)
            await writer.drain()


class RecordingBackend:
    def __init__(self, handler: Handler = answer_each_request) -> None:
        self.handler = handler
        self.connections: list[RecordedConnection] = []
        self.server: asyncio.Server | None = None
        self.new_connection = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> RecordingBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self._writers):
            w.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rec = RecordedConnection()
        self.connections.append(rec)
        self._writers.add(writer)
        self.new_connection.set()
        try:
            await self.handler(reader, writer, rec)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            rec.closed.set()
            self._writers.discard(writer)
            writer.close()


class _Done:
    def __init__(self) -> None:
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0, tls: object = None) -> bytes:
    """Send ``data``; return what the server sends until one whole response has arrived, the
    server closes, or ``timeout`` passes."""
    import httptools

    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)  # type: ignore[arg-type]
    writer.write(data)
    await writer.drain()
    out = b""
    done = _Done()
    parser = httptools.HttpResponseParser(done)
    try:
        async with asyncio.timeout(timeout):
            while not done.complete:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                out += chunk
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserUpgrade:
                    break
                except httptools.HttpParserError:
                    break
    except TimeoutError:
        pass
    finally:
        writer.close()
    return out


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
