"""HTTP/2 towards endpoints: multiplexed connections per endpoint, one stream per exchange.

A backend with ``protocol: http2`` (TLS, ALPN ``h2``) or ``h2c`` (clear text, prior knowledge)
keeps, per endpoint, the HTTP/2 connections it opened (:class:`H2Connections`). An exchange
takes a stream on a connection that has room under the endpoint's
``SETTINGS_MAX_CONCURRENT_STREAMS``; only when none has room is another connection opened, and
exchanges arriving meanwhile wait for that one connect instead of each opening their own.

A WebSocket handshake becomes an extended CONNECT (RFC 8441) when the endpoint's SETTINGS
advertise ``SETTINGS_ENABLE_CONNECT_PROTOCOL``; otherwise it goes as an HTTP/1.1 Upgrade on a
connection of its own (TLS with ALPN ``http/1.1``). A connection leaves service after
``keepalive.max_requests`` streams, on GOAWAY, or after ``keepalive.idle_timeout`` without
streams. Streams refused by a GOAWAY (above its last stream id) count as failed on a reused
connection, so idempotent requests are retried as with a dead pooled HTTP/1.1 connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from wslb.balancer.endpoints import EndpointState
from wslb.errors import HTTPError
from wslb.proto.http1 import Lines, ResponseHead
from wslb.proto.http2 import (
    Header,
    fields_from_lines,
    request_headers,
    response_head,
    trailer_lines,
)
from wslb.server.core.h2session import MAX_STREAM_ID, ErrorCodes, H2Session, H2Stream
from wslb.server.core.worker import Worker
from wslb.server.upstream.base import Requester, Target, Upstream
from wslb.server.upstream.h1 import UpstreamHTTP, connect_endpoint

log = logging.getLogger("wslb.http2")
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_HEADER_LIST = 64 * 1024


class UpstreamStream(H2Stream):
    """One request to an endpoint: the :class:`~wslb.server.upstream.base.Upstream` of an exchange,
    then maybe the upstream side of a tunnel (extended CONNECT)."""

    __slots__ = ("endpoint", "exchange", "head_ended", "response", "reused", "tunnel_request")

    h2 = True

    def __init__(self, session: H2Upstream, reused: bool) -> None:
        super().__init__(session, 0)  # its id comes with its HEADERS (send_head)
        self.endpoint = session.endpoint
        self.reused = reused
        self.exchange: Requester | None = None
        self.response = ResponseHead()
        self.head_ended = False
        self.tunnel_request = False

    @property
    def transport(self) -> asyncio.Transport:
        return cast(asyncio.Transport, self)

    @property
    def response_head(self) -> ResponseHead:
        return self.response

    # ---- Upstream interface
    def park(self, now: float) -> bool:
        return False  # a stream ends with its exchange (its connection stays multiplexed)

    def attach(self, exchange: Requester) -> None:
        self.exchange = exchange

    def detach(self) -> None:
        self.exchange = None

    def close(self) -> None:
        if self.protocol is not None:
            self.write_eof()
        elif not (self.local_closed and self.remote_closed):
            self.reset(ErrorCodes.CANCEL)  # the exchange is done with it (or never sent it)

    def write_eof(self) -> None:
        """The client is done with the WebSocket: what waits goes, then RST_STREAM NO_ERROR
        rather than END_STREAM. The close handshake happened in the WebSocket's own frames,
        so nothing is lost, and servers that forget a WebSocket stream once their application
        returned (Hypercorn up to 0.18 at least) fail their whole connection, every other
        stream with it, on a frame for that stream, but take a reset."""
        if self.lost or self.reset_sent or self.ending:
            return
        self.ending = True
        if self.waiting() > 0:
            self.reset(ErrorCodes.CANCEL)
            return
        self.local_closed = True
        self.session.reset_when_sent(self)

    def send_head(self, ex: Requester, lines: Lines) -> None:
        head = ex.head
        session = cast(H2Upstream, self.session)
        self.tunnel_request = ws = ex.is_upgrade
        end = ex.req_done and not ex.buffered and not ws
        headers = request_headers(
            head.method, head.target, session.scheme, lines, head.content_length, ws
        )
        te = head.header(b"te")
        if te is not None and b"trailers" in te.lower():
            headers.append((b"te", b"trailers"))
        self.head_ended = end
        self.send_headers(headers, end_stream=end)

    def send_body(self, data: bytes) -> None:
        self.write(data)

    def end_body(self, trailers: Lines | None) -> None:
        if self.head_ended or self.tunnel_request:
            return
        self.end(fields_from_lines(trailers) if trailers else None)

    def flush(self) -> None:
        pass

    def forbid_reuse(self) -> None:
        pass

    # ---- the response
    def on_response(self, headers: list[Header]) -> None:
        ex = self.exchange
        if ex is None:
            self.reset(ErrorCodes.CANCEL)
            return
        ex.up_progress = True
        try:
            rh = response_head(headers)
        except HTTPError as exc:
            self.detach()
            self.reset(ErrorCodes.PROTOCOL_ERROR)
            ex.upstream_failed(exc)
            return
        self.response = rh
        if self.tunnel_request and 200 <= rh.status < 300:
            ex.on_upstream_upgrade(self, b"")  # RFC 8441 5: a 2xx opens the tunnel
            return
        ex.on_response_head(rh)

    def on_informational(self, headers: list[Header]) -> None:
        ex = self.exchange
        if ex is None:
            return
        try:
            rh = response_head(headers)
        except HTTPError:
            return
        ex.on_response_head(rh)
        ex.on_response_end()

    def deliver(self, data: bytes) -> None:
        if self.protocol is not None:
            super().deliver(data)
            return
        ex = self.exchange
        if ex is not None:
            ex.up_progress = True
            ex.on_response_body(data)

    def on_end(self) -> None:
        if self.protocol is not None:
            super().on_end()
            return
        self.remote_closed = True
        ex = self.exchange
        if ex is not None:
            ex.on_response_end()

    def on_trailers(self, headers: list[Header]) -> None:
        self.response.trailers = trailer_lines(headers)

    def finished(self, exc: Exception | None) -> None:
        if self.protocol is not None:
            super().finished(exc)
            return
        ex = self.exchange
        if ex is not None and exc is not None:
            self.exchange = None
            ex.upstream_lost(exc)

    def pause_producer(self) -> None:
        if self.protocol is not None:
            super().pause_producer()
        elif self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_producer(self) -> None:
        if self.protocol is not None:
            super().resume_producer()
        elif self.exchange is not None:
            self.exchange.upstream_write_resumed()


class H2Upstream(H2Session):
    """One HTTP/2 connection to an endpoint (client side)."""

    def __init__(self, owner: H2Connections, runtime: Worker, endpoint: EndpointState) -> None:
        super().__init__(
            runtime,
            client_side=True,
            stream_window=STREAM_WINDOW,
            connection_window=CONNECTION_WINDOW,
            max_header_list=MAX_HEADER_LIST,
        )
        self.owner = owner
        self.endpoint = endpoint
        self.cid = f"{endpoint.address}/h2"
        self.scheme = b"https" if owner.ssl_context is not None else b"http"
        self.settings_ready: asyncio.Future[None] = self.loop.create_future()
        self.connect_protocol = False
        self.opened = 0
        self.reserved = 0  # streams handed out whose HEADERS are not submitted yet
        self.idle_since = self.loop.time()

    def usable(self) -> bool:
        if self.closed or self.goaway_received or self.goaway_sent:
            return False
        if self.opened >= self.owner.max_requests:
            return False
        taken = len(self.streams) + self.reserved
        if taken >= self.peer_max_concurrent_streams():
            return False
        return self.next_stream_id() + 2 * self.reserved < MAX_STREAM_ID - 1024

    def open_stream(self) -> UpstreamStream:
        stream = UpstreamStream(self, reused=self.opened > 0)
        self.opened += 1
        self.reserved += 1
        return stream

    def unopened(self, stream: H2Stream) -> None:
        self.reserved -= 1

    def settings_changed(self) -> None:
        self.connect_protocol = self.peer_connect_protocol()
        if not self.settings_ready.done():
            self.settings_ready.set_result(None)

    def stream_reset_by_peer(self, stream: H2Stream) -> None:
        pass  # an endpoint refusing or cancelling a stream is not an attack on wslb

    def stream_closed(self, stream: H2Stream) -> None:
        super().stream_closed(stream)
        if not self.streams:
            self.idle_since = self.loop.time()
            if not self.usable() and not self.closed:
                self.send_goaway()
                self.close_transport()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.runtime.sweeper.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.runtime.sweeper.discard(self)
        self.owner.remove(self)
        if not self.settings_ready.done():
            self.settings_ready.set_exception(ConnectionResetError("connection closed"))
            self.settings_ready.exception()  # retrieved: nobody may be waiting
        super().connection_lost(exc)

    def close_transport(self) -> None:
        self.owner.remove(self)
        super().close_transport()

    def sweep(self, now: float) -> None:
        if not self.streams and now - self.idle_since >= self.owner.idle_timeout:
            self.send_goaway()
            self.close_transport()


class H2Connections:
    """The HTTP/2 connections of one backend, per endpoint."""

    def __init__(self, backend: Target, ssl_context: ssl.SSLContext | None) -> None:
        self.backend = backend
        self.ssl_context = ssl_context
        ka = backend.spec.keepalive
        self.max_requests = ka.max_requests
        self.idle_timeout = ka.idle_timeout
        self.conns: dict[EndpointState, list[H2Upstream]] = {}
        self.connecting: dict[EndpointState, asyncio.Task[H2Upstream]] = {}

    def ready(self, ep: EndpointState) -> H2Upstream | None:
        for conn in self.conns.get(ep, ()):
            if conn.usable():
                return conn
        return None

    def remove(self, conn: H2Upstream) -> None:
        conns = self.conns.get(conn.endpoint)
        if conns is not None and conn in conns:
            conns.remove(conn)

    def stream_now(self, ep: EndpointState, ex: Requester) -> UpstreamStream | None:
        """A stream on a connection that is ready, without waiting; else None."""
        conn = self.ready(ep)
        if conn is None:
            return None
        if ex.is_upgrade and not (conn.settings_ready.done() and conn.connect_protocol):
            return None
        return conn.open_stream()

    async def stream(self, ep: EndpointState, ex: Requester) -> Upstream:
        """A stream for ``ex`` (or, for a WebSocket to an endpoint without extended CONNECT,
        an HTTP/1.1 connection); connects when no connection has room."""
        runtime = ex.down.runtime
        for _ in range(8):
            conn = self.ready(ep)
            if conn is None:
                task = self.connecting.get(ep)
                if task is None:
                    task = runtime.loop.create_task(self._connect(runtime, ep))
                    self.connecting[ep] = task
                    task.add_done_callback(lambda t: self._connected(ep, t))
                await asyncio.shield(task)
                continue
            if ex.is_upgrade:
                await asyncio.shield(conn.settings_ready)
                if not conn.connect_protocol:
                    return await self._http1(runtime, ep)
                if not conn.usable():
                    continue
            return conn.open_stream()
        raise ConnectionError(f"{ep.address}: no HTTP/2 connection with room for a stream")

    def _connected(self, ep: EndpointState, task: asyncio.Task[H2Upstream]) -> None:
        if self.connecting.get(ep) is task:
            del self.connecting[ep]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter gets it through the shield

    async def _connect(self, runtime: Worker, ep: EndpointState) -> H2Upstream:
        backend = self.backend
        transport, conn = await connect_endpoint(
            runtime.loop,
            lambda: H2Upstream(self, runtime, ep),
            ep,
            self.ssl_context,
            backend.server_hostname or ep.host if self.ssl_context is not None else None,
            None,
        )
        if self.ssl_context is not None:
            sslobj = transport.get_extra_info("ssl_object")
            alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
            if alpn != "h2":
                transport.close()
                raise ConnectionError(f"{ep.address} did not agree to HTTP/2 (ALPN {alpn})")
        self.conns.setdefault(ep, []).append(conn)
        return conn

    async def _http1(self, runtime: Worker, ep: EndpointState) -> UpstreamHTTP:
        backend = self.backend
        _, up = await connect_endpoint(
            runtime.loop,
            lambda: UpstreamHTTP(ep, None, runtime.batch),
            ep,
            backend.ssl_context,
            backend.server_hostname or ep.host if backend.ssl_context is not None else None,
            None,
        )
        return up

    def close_all(self) -> None:
        for conns in self.conns.values():
            for conn in list(conns):
                conn.close_transport()
        self.conns.clear()
