"""HTTP/1.1 downstream connections (RFC 9112).

``DownstreamHTTP`` is the asyncio protocol of one client connection. It parses requests with
``httptools`` (pipelined requests queue up as
:class:`~wslb.server.exchange.exchange.Exchange` objects and are answered in order), hands the
responses they give it to its framing (``downstream/framing.py``: Content-Length kept, else
chunked to HTTP/1.1 clients and until-close to HTTP/1.0 ones), and owns the client-side timers:
header and body timeouts, keep-alive idle, send timeout and the lingering close after an error.

Backpressure: a full upstream write buffer pauses reading from the client and vice versa, so a
slow reader or writer never makes wslb buffer more than the transports' high-water marks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import cast

from wslb.errors import BadRequest, HTTPError, RequestTimeout
from wslb.proto.http1 import (
    RequestHead,
    RequestParser,
)
from wslb.proto.http2 import PREFACE
from wslb.proto.proxy_protocol import ProxyInfo
from wslb.proto.websocket import is_websocket
from wslb.server.core.capacity import REFUSED, Slot
from wslb.server.core.output import OutBuffer
from wslb.server.downstream.framing import M_NONE, ResponseFraming
from wslb.server.downstream.h2 import H2Downstream
from wslb.server.exchange.base import ExchangeBase
from wslb.server.exchange.contract import (
    P_DONE,
    P_QUEUE,
    P_UPGRADE,
    PENDING_BODY_LIMIT,
    S_QUEUED,
    addresses,
)
from wslb.server.exchange.exchange import Exchange
from wslb.server.state.listener import ListenerState
from wslb.server.state.runtime import Runtime
from wslb.server.tunnel.relay import Tunnel
from wslb.server.upstream.base import Upstream

log = logging.getLogger("wslb.http")
CRLF = b"\r\n"
PIPELINE_LIMIT = 16  # queued requests before reading from the client pauses

# downstream timer kinds
T_NONE, T_FIRST, T_HEAD, T_BODY, T_KEEPALIVE, T_LINGER = range(6)
# After an error reply with request bytes possibly unread, wslb half-closes and reads (and
# drops) what the client still sends for up to this long before closing: closing with unread
# data would make the kernel send a reset that can destroy the reply (nginx: lingering_close).
LINGER_TIME = 2.0
LINGER_BYTES = 1024 * 1024


class DownstreamHTTP(ResponseFraming, asyncio.Protocol):
    __slots__ = (
        "cid",
        "client_addr",
        "client_eof",
        "client_ip",
        "closed",
        "closing",
        "deadline",
        "lingering",
        "listener",
        "local_addr",
        "loop",
        "makes_ws_key",
        "out",
        "parser",
        "paused",
        "proxy",
        "queue",
        "receiving",
        "runtime",
        "rx_progress",
        "slot",
        "tail",
        "tail_size",
        "timer",
        "transport",
        "trusted",
        "upgrading",
        "version11",
        "write_paused",
        "write_paused_since",
    )

    def __init__(
        self, runtime: Runtime, listener: ListenerState, proxy: ProxyInfo | None = None
    ) -> None:
        self.runtime = runtime
        self.loop = runtime.loop
        self.listener = listener
        self.proxy = proxy
        self.cid = runtime.next_id()
        self.parser = self._new_parser()
        self.out = OutBuffer(runtime.batch)  # every write to the client goes through here
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Exchange] = deque()
        self.receiving: Exchange | None = None
        self.paused = 0
        self.write_paused = False
        self.write_paused_since = 0.0
        self.closing = False
        self.closed = False
        self.client_eof = False
        self.upgrading: Exchange | None = None
        self.tail: list[bytes] = []
        self.tail_size = 0
        self.timer = T_FIRST
        self.deadline = 0.0
        self.rx_progress = False
        self.linger = False
        self.lingering = 0
        self.held = b""  # a response head waiting for its first body bytes
        self.mode = M_NONE  # how the current response body is framed
        self.version11 = True
        self.makes_ws_key = False  # the client sends its own Sec-WebSocket-Key
        self.client_ip = b"0.0.0.0"
        self.client_addr: tuple[str, int] = ("0.0.0.0", 0)
        self.local_addr: tuple[str, int] = ("0.0.0.0", 0)
        self.trusted = False
        self.slot: Slot | None = None  # this connection's place under the connection limits

    def __repr__(self) -> str:
        return f"<DownstreamHTTP {self.cid} {self.client_addr}>"

    # ------------------------------------------------------------------ asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        if self.listener.http2 and self.listener.tls:
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
                self._hand_over(b"")  # HTTP/2 takes its own place under the limits
                return
        self.out.transport = transport
        self.client_addr, self.local_addr, self.trusted = addresses(
            transport, self.listener, self.proxy
        )
        self.client_ip = self.client_addr[0].encode()
        slot = self.runtime.admit(self.listener, self.client_addr[0])
        if slot is None:
            # Refused: a 503 without reading the request, then the lingering close.
            transport.write(REFUSED)
            self.timer = T_NONE
            self.runtime.sweeper.add(self)
            self.closing = self.linger = True
            self.close()
            return
        self.slot = slot
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.deadline = self.loop.time() + self.listener.client.header_timeout
        self.runtime.register(self)
        self.runtime.sweeper.add(self)

    def data_received(self, data: bytes) -> None:
        self.rx_progress = True
        if self.lingering:
            self.lingering += len(data)
            if self.lingering > LINGER_BYTES and self.transport is not None:
                self.transport.close()
            return
        if self.upgrading is not None:
            self._hold_tail(data)
            return
        if self.closing and not self.queue:
            return
        timer = self.timer
        if timer == T_FIRST and self.listener.h2c:
            # HTTP/2 with prior knowledge starts with the connection preface.
            seen = b"".join((*self.tail, data))
            n = min(len(seen), len(PREFACE))
            if seen[:n] == PREFACE[:n]:
                if n < len(PREFACE):
                    self.tail = [seen]
                    return
                self.runtime.sweeper.discard(self)
                self.runtime.unregister(self)
                self._hand_over(seen)
                return
            self.tail = []
            data = seen
        if timer == T_KEEPALIVE or timer == T_NONE or timer == T_FIRST:
            # bytes of a new request: its head must be complete within header_timeout
            self.timer = T_HEAD
            self.deadline = self.loop.time() + self.listener.client.header_timeout
        try:
            offset = self.parser.feed(data)
        except HTTPError as exc:
            self._parse_failed(exc)
            return
        if offset is not None:
            self._upgrade_requested(data[offset:])

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.lingering:
            return False
        if not self.queue and self.upgrading is None:
            return False
        # The client half-closed after sending its request(s): answer, then close.
        return self.listener.ssl_context is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closing = True
        if self.slot is not None:
            self.slot.release()
        self.runtime.sweeper.discard(self)
        self.runtime.unregister(self)
        for ex in list(self.queue):
            ex.client_gone()
        self.queue.clear()
        self._release()

    def _release(self) -> None:
        """Nothing will call this protocol again: break its reference cycles (transport,
        parser), so that it is freed now rather than by a full garbage collection."""
        self.parser.release()
        self.transport = self.out.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_since = self.loop.time()
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.up is not None and ex.up.transport is not None:
            ex.up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_paused_since = 0.0
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.up is not None and ex.up.transport is not None:
            ex.up.transport.resume_reading()

    # ------------------------------------------------------------------ flow control
    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ RequestSink
    def on_request_head(self, head: RequestHead) -> None:
        self.version11 = head.version == "1.1"
        ex = Exchange(self, head)
        self.queue.append(ex)
        if head.chunked or head.content_length:
            self.receiving = ex
            self.timer = T_BODY
            self.rx_progress = False
            self.deadline = self.loop.time() + self.listener.client.body_timeout
        else:
            ex.req_done = True  # on_request_end follows at once; nothing to stream
            self.receiving = None
            self.timer = T_NONE
        if len(self.queue) == 1:
            ex.activate()
        elif len(self.queue) > PIPELINE_LIMIT:
            self.pause(P_QUEUE)

    def on_request_body(self, data: bytes) -> None:
        ex = self.receiving
        if ex is not None:
            ex.on_body(data)

    def on_request_end(self) -> None:
        ex = self.receiving
        if self.timer == T_BODY:
            self.timer = T_NONE
        if ex is not None:
            self.receiving = None
            ex.on_body_end()

    # ------------------------------------------------------------------ errors, upgrades
    def _parse_failed(self, exc: HTTPError) -> None:
        """The parser refused the bytes: answer the requests before them in order, then the
        error, then close."""
        if self.paused & P_DONE and not self.closing:
            return  # already failed: the error is queued
        self.pause(P_DONE)
        ex = self.receiving
        if ex is not None and not ex.req_done:
            self.closing = True
            self.receiving = None
            ex.fail(exc)
            return
        if not self.queue:
            self.closing = True
        # else the requests before it are answered as usual (keep-alive); the error's own
        # answer closes the connection
        self._queue_error(exc)

    def _new_parser(self) -> RequestParser:
        client = self.listener.client
        return RequestParser(
            self,
            max_uri_size=client.max_uri_size,
            max_header_size=client.max_header_size,
            max_headers=client.max_headers,
        )

    def _queue_error(self, exc: HTTPError) -> None:
        """Answer ``exc`` after the responses already queued, then close."""
        err = Exchange(self, None)
        err.error = exc
        err.req_done = True
        err.close_after = True
        self.queue.append(err)
        if len(self.queue) == 1:
            err.activate()

    def _upgrade_requested(self, tail: bytes) -> None:
        ex = self.queue[-1] if self.queue else None
        if ex is None:
            return
        self.receiving = None
        if is_websocket(ex.head):
            self.upgrading = ex
            self.pause(P_UPGRADE)
            self.timer = T_NONE
            if tail:
                self._hold_tail(tail)
            return
        # Another protocol (h2c, say): serve the request as plain HTTP, ignore the upgrade.
        ex.head.upgrade = None
        if ex.head.has_body:
            ex.fail(BadRequest("Upgrade request with a body"))
            return
        self.parser = self._new_parser()
        if tail:
            self.data_received(tail)

    def _hold_tail(self, data: bytes) -> None:
        self.tail.append(data)
        self.tail_size += len(data)
        if self.tail_size > PENDING_BODY_LIMIT:
            self.pause(P_UPGRADE)

    def become_tunnel(
        self, ex: ExchangeBase, tunnel: Tunnel, up: Upstream, upstream_tail: bytes
    ) -> None:
        assert self.transport is not None and up.transport is not None
        self.queue.clear()
        self.upgrading = None
        self.runtime.sweeper.discard(self)
        self.runtime.unregister(self)
        if self.transport.is_closing() or up.transport.is_closing():
            # A side went away as the 101 came. Over TLS its connection_lost is already on
            # its way to the protocol it had: relays would never hear of it. No tunnel; each
            # connection ends as itself (this one's connection_lost gives its place back).
            self.out.flush()
            up.transport.close()
            self.transport.close()
            tunnel.abandon("closed before the tunnel started")
            return
        client_bytes = b"".join(self.tail)
        self.tail = []
        if self.slot is not None:  # the tunnel holds the connection's place now
            tunnel.holds.append(self.slot.release)
            self.slot = None
        # The relays write to the transports directly: what is held goes first.
        self.out.flush()
        up.flush()
        tunnel.start(
            self.transport,
            up.transport,
            up_write_paused=up.write_paused,
            down_write_paused=self.write_paused,
            client_bytes=client_bytes,
            upstream_bytes=upstream_tail,
        )
        # Both connections belong to the tunnel's relays now.
        self.closed = True
        self._release()

    # ------------------------------------------------------------------ lifecycle
    def exchange_finished(self, ex: ExchangeBase) -> None:
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if self.closed:
            return
        if ex.close_after or (self.client_eof and not self.queue and self.receiving is None):
            self.close()
            return
        if ex is self.upgrading:
            # The upstream refused the upgrade: go on with HTTP on this connection.
            self.upgrading = None
            self.parser = self._new_parser()
            tail = b"".join(self.tail)
            self.tail, self.tail_size = [], 0
            self.resume(P_UPGRADE)
            if tail:
                self.data_received(tail)
                if self.closed:
                    return
        if self.queue:
            self.queue[0].activate()
            return
        if self.closing:
            self.close()
            return
        if self.paused & P_QUEUE:
            self.resume(P_QUEUE)
        if self.parser.in_head:
            # part of the next head came with the last request: it has header_timeout
            if self.timer != T_HEAD:
                self.timer = T_HEAD
                self.deadline = self.loop.time() + self.listener.client.header_timeout
        elif self.timer != T_BODY:
            self.timer = T_KEEPALIVE
            self.deadline = self.loop.time() + self.listener.client.keepalive_timeout

    def _hand_over(self, data: bytes) -> None:
        """The client speaks HTTP/2: the connection goes to an H2Downstream."""
        transport = self.transport
        assert transport is not None
        self.closed = True
        session = H2Downstream(self.runtime, self.listener, self.proxy, self.slot)
        self.slot = None
        transport.set_protocol(session)
        session.connection_made(transport)
        if data:
            session.data_received(data)
        self._release()  # the connection is the HTTP/2 session's now

    def abort_response(self) -> None:
        """A response cannot be completed: closing the connection tells the client."""
        self.close()

    def close(self) -> None:
        if self.closed or self.lingering:
            return
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        self.out.flush()  # what was held for this loop iteration goes before the FIN
        if self.linger and self.listener.ssl_context is None and transport.can_write_eof():
            # Half-close after the reply and drain what the client still sends.
            self.lingering = 1
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                transport.close()
                return
            self.paused = 0
            transport.resume_reading()
            self.timer = T_LINGER
            self.deadline = self.loop.time() + LINGER_TIME
            return
        self.pause(P_DONE)
        transport.close()

    def sweep(self, now: float) -> None:
        timer = self.timer
        if timer == T_BODY:
            if self.rx_progress:
                self.rx_progress = False
                self.deadline = now + self.listener.client.body_timeout
            elif now >= self.deadline:
                self._client_timeout("request body", RequestTimeout("client sent no body bytes"))
                return
        elif timer != T_NONE and now >= self.deadline:
            if timer == T_HEAD:
                self._client_timeout("request head", RequestTimeout("request head not complete"))
            elif timer == T_LINGER:
                if self.transport is not None:
                    self.transport.close()
            else:
                self.close()  # idle: close quietly, as nginx and HAProxy do
            return
        if (
            self.write_paused_since
            and now - self.write_paused_since >= self.listener.client.send_timeout
        ):
            log.warning("[%s] client stopped reading the response; closing", self.cid)
            self.close()
            return
        if self.queue:
            self.queue[0].sweep(now)

    def _client_timeout(self, what: str, exc: HTTPError) -> None:
        self.timer = T_NONE
        ex = self.receiving
        if ex is not None and not ex.req_done and ex.state != S_QUEUED:
            ex.fail(exc)
            return
        if self.queue:
            self.close()
            return
        self.pause(P_DONE)
        self.closing = True
        self._queue_error(exc)

    # ---- draining (Closable)
    def busy(self) -> bool:
        return bool(self.queue) or self.upgrading is not None

    def drain(self) -> None:
        self.closing = True
        if not self.queue and self.upgrading is None:
            self.close()

    def force_close(self, reason: str) -> None:
        self.close()
