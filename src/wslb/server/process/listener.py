"""Listening sockets: bind (SO_REUSEPORT, so workers share a port), accept, TLS, PROXY header.

Without PROXY protocol the event loop's own server accepts connections (``create_server``). With
it, wslb accepts itself, reads exactly the PROXY header off the socket (peeking, so a TLS
ClientHello right behind it stays on the socket), then hands the socket to the loop with TLS.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from wslb.proto import proxy_protocol
from wslb.proto.proxy_protocol import ProxyInfo, ProxyProtocolError
from wslb.server.downstream.h1 import DownstreamHTTP
from wslb.server.state.listener import ListenerState
from wslb.server.state.runtime import Runtime
from wslb.server.tunnel.tcp import TCPDownstream

log = logging.getLogger("wslb.server")
BACKLOG = 4096


def bind_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def protocol_factory(
    runtime: Runtime, state: ListenerState
) -> Callable[[ProxyInfo | None], asyncio.Protocol]:
    if state.spec.protocol == "tcp":
        return lambda info: TCPDownstream(runtime, state, info)
    return lambda info: DownstreamHTTP(runtime, state, info)


class Listener:
    def __init__(self, runtime: Runtime, state: ListenerState, sock: socket.socket) -> None:
        self.runtime = runtime
        self.state = state
        self.sock = sock
        self.server: asyncio.AbstractServer | None = None
        self.accept_task: asyncio.Task[None] | None = None
        self.pending: set[asyncio.Task[None]] = set()
        self.port = sock.getsockname()[1]
        state.port_bytes = str(self.port).encode()
        self.factory = protocol_factory(runtime, state)

    def swap(self, state: ListenerState) -> None:
        """A reload: connections accepted from now on are served by ``state`` (same socket,
        protocol and TLS; only routes, limits and the like changed)."""
        state.port_bytes = str(self.port).encode()
        self.state = state
        self.factory = protocol_factory(self.runtime, state)

    async def start(self) -> None:
        loop = self.runtime.loop
        if self.state.spec.proxy_protocol:
            self.sock.listen(BACKLOG)
            self.accept_task = loop.create_task(self._accept_loop())
        else:
            self.server = await loop.create_server(
                lambda: self.factory(None),
                sock=self.sock,
                ssl=self.state.ssl_context,
                backlog=BACKLOG,
                ssl_handshake_timeout=self.state.client.header_timeout if self.state.tls else None,
            )

    def close(self) -> None:
        """Stop accepting; open connections are left to the drain."""
        if self.server is not None:
            self.server.close()
        if self.accept_task is not None:
            self.accept_task.cancel()
        for t in self.pending:
            t.cancel()
        try:
            self.sock.close()
        except OSError:
            pass

    async def _accept_loop(self) -> None:
        loop = self.runtime.loop
        while True:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                log.warning("listener %s: accept failed: %s", self.state.name, exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._handshake(conn, addr, self.factory))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _handshake(
        self,
        conn: socket.socket,
        addr: tuple[str, int],
        factory: Callable[[ProxyInfo | None], asyncio.Protocol],
    ) -> None:
        state = self.state
        if state.trusted and not state.is_trusted(addr[0]):
            log.warning("listener %s: PROXY header from untrusted %s refused", state.name, addr[0])
            conn.close()
            return
        conn.setblocking(False)
        try:
            async with asyncio.timeout(state.client.header_timeout):
                info = await read_proxy_header(self.runtime.loop, conn)
        except (TimeoutError, ProxyProtocolError, OSError) as exc:
            log.warning(
                "listener %s: bad or missing PROXY header from %s: %s",
                state.name,
                addr[0],
                exc or "timeout",
            )
            conn.close()
            return
        except asyncio.CancelledError:
            conn.close()
            raise
        try:
            await self.runtime.loop.connect_accepted_socket(
                lambda: factory(info),
                conn,
                ssl=state.ssl_context,
                ssl_handshake_timeout=state.client.header_timeout if state.tls else None,
            )
        except (OSError, ConnectionError) as exc:
            log.info("listener %s: connection from %s failed: %s", state.name, addr[0], exc)
            conn.close()


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def read_proxy_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> ProxyInfo:
    """Consume exactly one PROXY v1/v2 header from ``sock``, leaving what follows unread."""
    got = b""
    while True:
        await _readable(loop, sock)
        try:
            peek = sock.recv(proxy_protocol.V2_MAX, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not peek:
            raise ProxyProtocolError("connection closed before the PROXY header")
        view = got + peek
        total = proxy_protocol.header_length(view)
        # Consume only bytes that certainly belong to the header.
        take = len(peek) if total is None else min(len(peek), total - len(got))
        got += sock.recv(take)
        if total is not None and len(got) >= total:
            return proxy_protocol.parse(got)
