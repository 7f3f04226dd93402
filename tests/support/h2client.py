"""An HTTP/2 client for the tests, built from the protocol libraries of the python-hyper
project: ``h2`` for HTTP/2 and ``wsproto`` for the WebSocket frames of RFC 8441 streams.

No Python client library speaks WebSockets over HTTP/2, and the tests need more control than
``httpx`` gives (many streams on one connection, resets, raw frames). This client is a real peer:
it negotiates ALPN, honours flow control and masks its WebSocket frames.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

Header = tuple[bytes, bytes]


@dataclass
class Response:
    status: int
    headers: list[Header]
    body: bytes
    trailers: list[Header] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class _Stream:
    def __init__(self) -> None:
        self.headers: asyncio.Future[list[Header]] = asyncio.get_running_loop().create_future()
        self.data: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.trailers: list[Header] = []
        self.reset: int | None = None
        self.ended = False
        self.informational: list[list[Header]] = []


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, _Stream] = {}
        self.window = asyncio.Event()
        self.settings = asyncio.Event()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.goaway_seen = asyncio.Event()
        self.closed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.held: dict[int, int] = {}  # streams whose received data is not acknowledged

    @classmethod
    async def connect(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> H2Client:
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
        )
        if ssl_context is not None:
            alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            assert alpn == "h2", f"ALPN gave {alpn!r}"
        client = cls(reader, writer)
        client.conn.initiate_connection()
        client.conn.increment_flow_control_window(16 * 1024 * 1024)
        client.flush()
        client.task = asyncio.get_running_loop().create_task(client._read())
        await asyncio.wait_for(client.settings.wait(), 10)
        return client

    @property
    def authority(self) -> bytes:
        host, port = self.writer.get_extra_info("peername")[:2]
        return f"{host}:{port}".encode()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for ev in self.conn.receive_data(data):
                    self._event(ev)
                self.flush()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed.set()
            for s in self.streams.values():
                if not s.headers.done():
                    s.headers.set_exception(ConnectionError("connection closed"))
                    s.headers.exception()  # retrieved: no warning when nobody waits
                s.data.put_nowait(None)

    def _event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None and not s.headers.done():
                s.headers.set_result(list(ev.headers or []))
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.informational.append(list(ev.headers or []))
        elif isinstance(ev, h2.events.DataReceived):
            assert ev.stream_id is not None and ev.data is not None
            if ev.stream_id in self.held:
                self.held[ev.stream_id] += ev.flow_controlled_length
            elif ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.data.put_nowait(ev.data)
        elif isinstance(ev, h2.events.TrailersReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.trailers = list(ev.headers or [])
        elif isinstance(ev, h2.events.StreamEnded):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.ended = True
                s.data.put_nowait(None)
        elif isinstance(ev, h2.events.StreamReset):
            s = self.streams.get(ev.stream_id)
            if s is not None and s.ended and ev.error_code == 0:
                pass  # "stop sending" after a complete response (RFC 9113 8.1)
            elif s is not None:
                s.reset = ev.error_code
                if not s.headers.done():
                    s.headers.set_exception(ConnectionResetError(f"reset {ev.error_code}"))
                    s.headers.exception()
                s.data.put_nowait(None)
        elif isinstance(ev, h2.events.WindowUpdated):
            self.window.set()
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings.set()
            self.window.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            self.goaway_seen.set()
            # keep reading: streams below last_stream_id may still finish (RFC 9113 6.8)
            state = h2.connection.ConnectionState
            self.conn.state_machine.state = state.CLIENT_OPEN

    # ---- requests
    def start(
        self,
        method: bytes,
        path: bytes,
        headers: list[Header] | None = None,
        *,
        end_stream: bool = True,
        scheme: bytes = b"https",
        extra_pseudo: list[Header] | None = None,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = _Stream()
        hdrs: list[Header] = [
            (b":method", method),
            (b":scheme", scheme),
            (b":authority", self.authority),
            (b":path", path),
            *(extra_pseudo or []),
            *(headers or []),
        ]
        self.conn.send_headers(sid, hdrs, end_stream=end_stream)
        self.flush()
        return sid

    async def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        view = memoryview(data)
        while view:
            window = self.conn.local_flow_control_window(sid)
            if window <= 0:
                self.window.clear()
                await asyncio.wait_for(self.window.wait(), 20)
                continue
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(sid, bytes(view[:size]))
            view = view[size:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def hold(self, sid: int) -> None:
        """Stop giving back window for ``sid``: a reader that does not read."""
        self.held.setdefault(sid, 0)

    def release(self, sid: int) -> None:
        n = self.held.pop(sid, 0)
        if n:
            self.conn.acknowledge_received_data(n, sid)
            self.flush()

    def reset(self, sid: int, code: int = 8) -> None:
        self.conn.reset_stream(sid, code)
        self.flush()

    async def response(self, sid: int, timeout: float = 20) -> Response:
        s = self.streams[sid]
        headers = await asyncio.wait_for(s.headers, timeout)
        chunks = []
        while True:
            chunk = await asyncio.wait_for(s.data.get(), timeout)
            if chunk is None:
                break
            chunks.append(chunk)
        if s.reset is not None:
            raise ConnectionResetError(f"stream {sid} reset ({s.reset})")
        status = int(dict(headers)[b":status"])
        return Response(status, headers, b"".join(chunks), s.trailers)

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: list[Header] | None = None,
        body: bytes = b"",
        trailers: list[Header] | None = None,
        timeout: float = 20,
    ) -> Response:
        sid = self.start(method, path, headers, end_stream=not body and not trailers)
        if body:
            await self.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.conn.send_headers(sid, trailers, end_stream=True)
            self.flush()
        return await self.response(sid, timeout)

    async def websocket(
        self, path: bytes, headers: list[Header] | None = None, timeout: float = 20
    ) -> H2WebSocket:
        """RFC 8441: an extended CONNECT, then RFC 6455 frames on the stream."""
        assert self.conn.remote_settings.enable_connect_protocol == 1, "no RFC 8441 offered"
        sid = self.start(
            b"CONNECT",
            path,
            [(b"sec-websocket-version", b"13"), *(headers or [])],
            end_stream=False,
            extra_pseudo=[(b":protocol", b"websocket")],
        )
        s = self.streams[sid]
        got = await asyncio.wait_for(s.headers, timeout)
        status = int(dict(got)[b":status"])
        if status != 200:
            raise ConnectionRefusedError(f"extended CONNECT answered {status}")
        return H2WebSocket(self, sid, got)

    async def close(self) -> None:
        try:
            self.conn.close_connection()
            self.flush()
        except h2.exceptions.ProtocolError:
            pass
        self.writer.close()
        if self.task is not None:
            self.task.cancel()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


class H2WebSocket:
    def __init__(self, client: H2Client, sid: int, headers: list[Header]) -> None:
        self.client = client
        self.sid = sid
        self.headers = headers
        self.ws = Connection(ConnectionType.CLIENT)
        self.buffer: list[Any] = []
        self.close_code: int | None = None

    async def send(self, message: str | bytes) -> None:
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        await self.client.send_data(self.sid, self.ws.send(event))

    async def recv(self, timeout: float = 20) -> str | bytes:
        parts: list[Any] = []
        while True:
            while self.buffer:
                ev = self.buffer.pop(0)
                if isinstance(ev, Message):
                    parts.append(ev.data)
                    if ev.message_finished:
                        return "".join(parts) if isinstance(ev, TextMessage) else b"".join(parts)
                elif isinstance(ev, CloseConnection):
                    self.close_code = ev.code
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self.client.send_data(self.sid, self.ws.send(ev.response()))
                    raise ConnectionAbortedError(f"closed {ev.code}")
                elif isinstance(ev, Ping):
                    await self.client.send_data(self.sid, self.ws.send(ev.response()))
            chunk = await asyncio.wait_for(self.client.streams[self.sid].data.get(), timeout)
            if chunk is None:
                raise ConnectionResetError("stream ended")
            self.ws.receive_data(chunk)
            self.buffer.extend(self.ws.events())

    async def close(self, code: int = 1000, timeout: float = 20) -> int | None:
        """Close handshake, then the stream ends both ways."""
        await self.client.send_data(self.sid, self.ws.send(CloseConnection(code=code)))
        try:
            while True:
                await self.recv(timeout)
        except ConnectionAbortedError:
            pass
        except ConnectionResetError:
            pass
        stream = self.client.streams[self.sid]
        if stream.reset is None:
            try:
                self.client.conn.end_stream(self.sid)
                self.client.flush()
            except h2.exceptions.StreamClosedError:
                pass
        return self.close_code
