"""``H2Downstream`` is the server side of a client connection: each request stream becomes a
:class:`ServerStream`, the :class:`~wslb.server.exchange.base.Downstream` of an exchange, so
routing, middlewares and upstreams are the same as over HTTP/1.1. It advertises
``SETTINGS_ENABLE_CONNECT_PROTOCOL`` (RFC 8441 3): an extended CONNECT for ``websocket``
becomes an HTTP/1.1 Upgrade (or an extended CONNECT) towards the endpoint, and the stream then
carries the WebSocket's bytes. Shutdown and drain send a graceful GOAWAY naming the last stream
taken, let the open streams finish, and refuse new ones.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from wslb.errors import HTTPError
from wslb.proto.http1 import Lines
from wslb.proto.http2 import (
    CONNECTION_SPECIFIC,
    Header,
    fields_from_lines,
    request_head,
    response_headers,
    trailer_lines,
)
from wslb.proto.proxy_protocol import ProxyInfo
from wslb.server.core.capacity import Slot
from wslb.server.core.h2session import ErrorCodes, H2Session, H2Stream
from wslb.server.exchange.base import ExchangeBase
from wslb.server.exchange.contract import PENDING_BODY_LIMIT, S_DONE, addresses
from wslb.server.exchange.exchange import Exchange
from wslb.server.state.listener import ListenerState
from wslb.server.state.runtime import Runtime
from wslb.server.tunnel.relay import Tunnel
from wslb.server.upstream.base import Upstream

log = logging.getLogger("wslb.http2")


class ServerStream(H2Stream):
    """A request stream: the downstream of one :class:`Exchange`, then maybe a tunnel's
    client side (RFC 8441)."""

    __slots__ = (
        "cid",
        "client_addr",
        "client_ip",
        "exchange",
        "listener",
        "local_addr",
        "loop",
        "paused",
        "runtime",
        "tail",
        "tail_size",
        "trusted",
    )

    held = b""
    makes_ws_key = True

    def __init__(self, session: H2Downstream, sid: int) -> None:
        super().__init__(session, sid)
        self.cid = f"{session.cid}.{sid}"
        self.loop = session.loop
        self.runtime: Runtime = session.runtime
        self.listener = session.listener
        self.client_addr = session.client_addr
        self.client_ip = session.client_ip
        self.local_addr = session.local_addr
        self.trusted = session.trusted
        self.exchange: Exchange | None = None
        self.paused = 0
        self.tail: list[bytes] = []  # WebSocket bytes that came before the upstream's answer
        self.tail_size = 0

    closing = False  # what an HTTP/1.1 connection says when it will close after a response

    # ---- receiving
    def deliver(self, data: bytes) -> None:
        if self.protocol is not None:
            cast(asyncio.Protocol, self.protocol).data_received(data)
            return
        ex = self.exchange
        if ex is None:
            return
        if ex.is_upgrade:
            self.tail.append(data)
            self.tail_size += len(data)
            if self.tail_size > PENDING_BODY_LIMIT:
                self.pause_reading()
            return
        ex.on_body(data)

    def on_end(self) -> None:
        if self.protocol is None:
            ex = self.exchange
            self.remote_closed = True
            if ex is not None and not ex.is_upgrade:
                ex.on_body_end()
            return
        super().on_end()

    def on_trailers(self, headers: list[Header]) -> None:
        ex = self.exchange
        if ex is not None:
            ex.head.trailers = trailer_lines(headers)

    def finished(self, exc: Exception | None) -> None:
        ex = self.exchange
        if ex is not None and self.protocol is None:
            if exc is not None and ex.state != S_DONE:
                # Reset by the client (or the connection went): the exchange stops here.
                self.exchange = None
                log.info("[%s] stream closed before its response ended: %s", self.cid, exc)
                ex.client_gone()
            return
        super().finished(exc)

    # ---- Downstream interface, for the exchange
    def pause(self, reason: int) -> None:
        self.paused |= reason
        self.read_paused = True

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused:
                self.resume_reading()

    def pause_producer(self) -> None:
        if self.protocol is not None:
            super().pause_producer()
            return
        ex = self.exchange
        if ex is not None and ex.up is not None:
            ex.up.pause_reading()

    def resume_producer(self) -> None:
        if self.protocol is not None:
            super().resume_producer()
            return
        ex = self.exchange
        if ex is not None and ex.up is not None:
            ex.up.resume_reading()

    def start_response(
        self,
        status: int,
        reason: bytes,
        lines: Lines,
        length: int | None,
        no_body: bool,
        close: bool,
    ) -> bool:
        if no_body and status in (204, 304):
            length = None
        self.send_headers(response_headers(status, lines, length), end_stream=no_body)
        return False

    def response_data(self, data: bytes) -> None:
        self.write(data)

    def end_response(self, trailers: Lines | None = None) -> None:
        self.end(fields_from_lines(trailers) if trailers else None)

    def flush_response(self) -> None:
        pass

    def interim_response(self, status: int, reason: bytes, lines: Lines) -> None:
        if status != 101:
            self.send_interim(response_headers(status, lines))

    def switching_protocols(self, reason: bytes, lines: Lines, upgrade: bytes) -> None:
        # RFC 8441 5: the extended CONNECT succeeded: 200, without the HTTP/1.1 handshake's
        # Accept (the stream is the connection).
        headers = [(b":status", b"200")]
        headers += fields_from_lines(lines, _WS_RESPONSE_SKIP)
        self.send_headers(headers)

    def local_response(
        self, status: int, reason: bytes, lines: Lines, body: bytes, length: int, close: bool
    ) -> None:
        headers = response_headers(status, lines, length if status not in (204, 304) else None)
        self.send_headers(headers, end_stream=not body)
        if body:
            self.write(body)
            self.end()

    def exchange_finished(self, ex: ExchangeBase) -> None:
        if self.exchange is ex:
            self.exchange = None
        self.paused = 0
        self.resume_reading()
        if not self.remote_closed:
            # The response is complete before the request: ask the client to stop sending
            # (RFC 9113 8.1, RST_STREAM NO_ERROR after END_STREAM).
            self.reset_after_end = True
            if self.local_closed:
                self.session.reset_when_sent(self)

    def abort_response(self) -> None:
        """The response cannot be completed: the client must not take it as whole."""
        self.reset(ErrorCodes.INTERNAL_ERROR)

    def become_tunnel(self, ex: ExchangeBase, tunnel: Tunnel, up: Upstream, tail: bytes) -> None:
        assert up.transport is not None
        self.exchange = None
        self.paused = 0
        client_bytes = b"".join(self.tail)
        self.tail, self.tail_size = [], 0
        session = cast(H2Downstream, self.session)
        session.websocket_streams += 1
        log.info(
            "[%s] WebSocket over HTTP/2 stream %d (RFC 8441) to %s",
            session.cid,
            self.sid,
            tunnel.endpoint.address,
        )
        up.flush()
        tunnel.kind = "websocket (HTTP/2 stream)"
        if self.read_paused:
            self.resume_reading()
        tunnel.start(
            cast(asyncio.Transport, self),
            up.transport,
            up_write_paused=up.write_paused,
            down_write_paused=self.write_paused,
            client_bytes=client_bytes,
            upstream_bytes=tail,
        )
        relay = cast(asyncio.Protocol | None, self.protocol)
        if self.remote_closed and relay is not None and not relay.eof_received():
            self.close()  # the client ended its side before the tunnel started


_WS_RESPONSE_SKIP = CONNECTION_SPECIFIC | {b"sec-websocket-accept"}


class H2Downstream(H2Session):
    """The server side of an HTTP/2 client connection (after ALPN ``h2``, or the connection
    preface on a plain listener with h2c)."""

    runtime: Runtime  # the worker (H2Session knows only its Worker protocol)

    def __init__(
        self,
        runtime: Runtime,
        listener: ListenerState,
        proxy: ProxyInfo | None = None,
        slot: Slot | None = None,
    ) -> None:
        client = listener.client
        super().__init__(
            runtime,
            client_side=False,
            stream_window=client.stream_window,
            connection_window=client.max_concurrent_streams * client.stream_window,
            max_header_list=client.max_header_size,
            # fields past max_headers are a 431 (request_head); far past, the connection ends
            max_header_count=max(1024, 2 * client.max_headers),
            max_concurrent_streams=client.max_concurrent_streams,
            connect_protocol=True,
        )
        self.listener = listener
        self.proxy = proxy
        self.cid = runtime.next_id()
        self.client_addr: tuple[str, int] = ("0.0.0.0", 0)
        self.local_addr: tuple[str, int] = ("0.0.0.0", 0)
        self.client_ip = b"0.0.0.0"
        self.trusted = False
        self.deadline = 0.0
        self.requests = 0
        self.websocket_streams = 0  # RFC 8441 tunnels opened on this connection
        self.slot = slot  # its place under the connection limits (h2c: taken over HTTP/1.1)

    def __repr__(self) -> str:
        return f"<H2Downstream {self.cid} {self.client_addr}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client_addr, self.local_addr, self.trusted = addresses(
            transport, self.listener, self.proxy
        )
        self.client_ip = self.client_addr[0].encode()
        if self.slot is None:
            self.slot = self.runtime.admit(self.listener, self.client_addr[0])
            if self.slot is None:  # refused: no HTTP/2 to answer in yet
                transport.close()
                return
        super().connection_made(transport)
        self.deadline = self.loop.time() + self.listener.client.header_timeout
        self.runtime.register(self)
        self.runtime.sweeper.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slot is None:  # refused in connection_made
            return
        self.slot.release()
        self.runtime.sweeper.discard(self)
        self.runtime.unregister(self)
        super().connection_lost(exc)

    def on_request(self, sid: int, headers: tuple[Header, ...], ended: bool) -> None:
        # (after a GOAWAY, libnghttp2 drops the HEADERS of streams above its last stream id)
        self.requests += 1
        self.deadline = 0.0
        stream = ServerStream(self, sid)
        stream.remote_closed = ended
        self.streams[sid] = stream
        key = None
        try:
            client = self.listener.client
            head, key = request_head(
                headers,
                end_stream=ended,
                max_uri_size=client.max_uri_size,
                max_headers=client.max_headers,
            )
        except HTTPError as exc:
            ex = Exchange(stream, None)
            ex.error = exc
        else:
            ex = Exchange(stream, head)
            ex.ws_key = key
        stream.exchange = ex
        ex.req_done = ended or key is not None  # a tunnel's bytes are not a request body
        ex.activate()

    def stream_reset_by_peer(self, stream: H2Stream) -> None:
        ex = cast(ServerStream, stream).exchange
        if ex is not None and ex.state != S_DONE:
            self.glitch("stream reset before its response")  # rapid reset

    def stream_closed(self, stream: H2Stream) -> None:
        super().stream_closed(stream)
        if not self.streams:
            self.deadline = self.loop.time() + self.listener.client.keepalive_timeout

    # ---- timers
    def sweep(self, now: float) -> None:
        if self.closed:
            return
        if self.deadline and now >= self.deadline and not self.streams:
            self.send_goaway()  # idle (or no request in time): close quietly
            self.close_transport()
            return
        if (
            self.write_paused_since
            and now - self.write_paused_since >= self.listener.client.send_timeout
        ):
            log.warning("[%s] client stopped reading; closing", self.cid)
            self.close_transport()
            return
        for stream in list(self.streams.values()):
            ex = cast(ServerStream, stream).exchange
            if ex is not None:
                ex.sweep(now)

    # ---- draining (Closable)
    def busy(self) -> bool:
        return bool(self.streams)

    def drain(self) -> None:
        self.send_goaway()

    def force_close(self, reason: str) -> None:
        self.close_transport()
