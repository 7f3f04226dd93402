"""Connections to endpoints: opening them (TCP, TLS, PROXY header) and the HTTP/1.1 client side.

``UpstreamHTTP`` belongs to at most one exchange (:class:`~wslb.server.upstream.base.Requester`)
at a time: it frames the request the exchange sends (chunked when the length is unknown) and
hands the parsed response to it; between exchanges it idles in a
:class:`~wslb.server.upstream.pool.Pool`, where any byte or EOF from the backend closes it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar, cast

from wslb.balancer.endpoints import EndpointState
from wslb.errors import BadGateway, HTTPError
from wslb.proto.headers import connection_tokens
from wslb.proto.http1 import (
    CRLF,
    LAST_CHUNK,
    Lines,
    ResponseHead,
    ResponseParser,
    chunk_header,
    field,
    request_head_bytes,
)
from wslb.server.core.output import OutBuffer, WriteBatch
from wslb.server.upstream.base import Requester, Target
from wslb.server.upstream.pool import Pool

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def open_upstream(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    backend: Target,
    endpoint: EndpointState,
    proxy_header: bytes | None,
) -> tuple[asyncio.Transport, P]:
    """Connect to ``endpoint`` as ``backend`` says (TLS or not)."""
    ctx = backend.ssl_context
    server_hostname = (backend.server_hostname or endpoint.host) if ctx is not None else None
    return await connect_endpoint(loop, factory, endpoint, ctx, server_hostname, proxy_header)


async def connect_endpoint(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    endpoint: EndpointState,
    ctx: ssl.SSLContext | None,
    server_hostname: str | None,
    proxy_header: bytes | None,
) -> tuple[asyncio.Transport, P]:
    """Connect to ``endpoint``; with a PROXY header, it goes first, before any TLS handshake."""
    if proxy_header is None:
        transport, proto = await loop.create_connection(
            factory, endpoint.host, endpoint.port, ssl=ctx, server_hostname=server_hostname
        )
        return transport, proto
    infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, addr)
        await loop.sock_sendall(sock, proxy_header)
        transport, proto = await loop.create_connection(
            factory, sock=sock, ssl=ctx, server_hostname=server_hostname
        )
    except BaseException:
        sock.close()
        raise
    return transport, proto


class UpstreamHTTP(asyncio.Protocol):
    __slots__ = (
        "chunked",
        "closed",
        "endpoint",
        "exchange",
        "idle_since",
        "out",
        "parser",
        "pool",
        "reused",
        "served",
        "transport",
        "write_paused",
    )

    def __init__(
        self, endpoint: EndpointState, pool: Pool[UpstreamHTTP] | None, batch: WriteBatch
    ) -> None:
        self.endpoint = endpoint
        self.out = OutBuffer(batch)  # every write of the request goes through here
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Requester | None = None
        self.parser = ResponseParser(self)
        self.served = 0
        self.idle_since = 0.0
        self.closed = True  # until connected
        self.write_paused = False
        self.reused = False
        self.chunked = False  # the request body being sent is chunked

    h2 = False

    @property
    def response_head(self) -> ResponseHead:
        return self.parser.head

    def park(self, now: float) -> bool:
        """Idle in the pool, for the next exchange (False: the pool does not take it)."""
        return self.pool is not None and self.pool.put(self, now)

    def attach(self, exchange: Requester) -> None:
        """Serve ``exchange``: the response parser reports to it directly."""
        self.exchange = exchange
        self.parser.sink = exchange
        self.served += 1
        self.chunked = False

    # ---- the request, as the exchange sends it
    def send_head(self, ex: Requester, lines: Lines) -> None:
        head = ex.head
        if ex.is_upgrade:
            lines.append(b"Connection: Upgrade\r\n")
            lines.append(field(b"Upgrade", head.upgrade or b"websocket"))
        else:
            te = None
            if head.version == "2" or b"te" in connection_tokens(head.connection):
                te = head.header(b"te")
            if te is not None and b"trailers" in te.lower():
                # The client takes trailers, and so does wslb: say so to the endpoint (TE is
                # hop-by-hop, named in Connection, RFC 9110 10.1.4).
                lines.append(b"TE: trailers\r\n")
                keep = self.pool is not None
                lines.append(b"Connection: TE\r\n" if keep else b"Connection: close, TE\r\n")
            elif self.pool is None:
                lines.append(b"Connection: close\r\n")
            if head.chunked:
                lines.append(b"Transfer-Encoding: chunked\r\n")
                self.chunked = True
            elif head.content_length is not None:
                lines.append(b"Content-Length: %d\r\n" % head.content_length)
        self.out.write(request_head_bytes(head.method, head.target, lines))

    def send_body(self, data: bytes) -> None:
        out = self.out
        if self.chunked:
            if not data:
                return  # an empty chunk would end the body
            out.write(chunk_header(len(data)))
            out.write(data)
            out.write(CRLF)
        else:
            out.write(data)

    def end_body(self, trailers: Lines | None) -> None:
        if self.chunked:
            self.out.write(b"".join((b"0\r\n", *trailers, CRLF)) if trailers else LAST_CHUNK)

    def forbid_reuse(self) -> None:
        self.served = 1 << 30

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def flush(self) -> None:
        self.out.flush()

    def detach(self) -> None:
        self.exchange = None
        self.parser.sink = self

    # ---- pool interface
    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # ---- asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self.out.transport = transport
        self.closed = False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # An idle pooled connection must stay silent: anything else makes it unusable.
            self.close()
            return
        ex.up_progress = True
        try:
            offset = self.parser.feed(data)
        except HTTPError as exc:
            ex = self.exchange
            if ex is not None:
                ex.upstream_failed(exc)
            self.close()
            return
        if offset is not None:
            ex = self.exchange
            if ex is None:
                self.close()
            else:
                ex.on_upstream_upgrade(self, data[offset:])
            return
        ex = self.exchange
        if ex is not None and ex.down.held:
            ex.down.flush_response()

    def eof_received(self) -> bool:
        ex = self.exchange
        if ex is not None:
            ex.upstream_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pool is not None:
            self.pool.discard(self)
        ex = self.exchange
        if ex is not None:
            self.detach()
            ex.upstream_lost(exc)
        self.release()

    def release(self) -> None:
        """Nothing calls this protocol again (closed, or its connection became a tunnel):
        break its cycles (transport, parser), so that it is freed now."""
        self.parser.release()
        self.transport = self.out.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None:
            ex.upstream_write_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        if ex is not None:
            ex.upstream_write_resumed()

    # ---- ResponseSink while no exchange is attached (attached, the exchange is the sink)
    def on_response_head(self, head: ResponseHead) -> None:
        raise BadGateway("unsolicited response on an idle connection")

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self) -> None:
        pass


class PendingUpstream(asyncio.Protocol):
    """Holds a raw upstream connection (tcp forwarding) until the tunnel takes it over."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
