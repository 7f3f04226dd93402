"""Byte tunnels: upgraded WebSockets and ``tcp`` forwarding rules.

After a ``101`` both transports get a :class:`Relay` protocol whose ``data_received`` writes the
bytes straight to the other transport: no frame parsing, no allocation beyond what the transport
does, no timer. Backpressure: when one side's write buffer passes its high-water mark, the other
side stops reading until it drains. Half-close: an EOF from one side becomes ``write_eof`` on the
other (where the transport can; TLS cannot, so the tunnel closes). Idle timeout: relays raise an
activity flag that the worker's sweeper reads; the tunnel closes after ``idle_timeout`` seconds
with no byte in either direction.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from wslb.balancer.endpoints import EndpointState
from wslb.proto.websocket import FrameTracker, close_frame
from wslb.server.core.holds import Holds
from wslb.server.observe import access_log
from wslb.server.state.runtime import Runtime

log = logging.getLogger("wslb.tunnel")


class Relay(asyncio.Protocol):
    __slots__ = ("eof", "nbytes", "peer", "tls", "transport", "tunnel")

    def __init__(
        self, tunnel: Tunnel, transport: asyncio.Transport, peer: asyncio.Transport
    ) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer = peer
        self.nbytes = 0
        self.eof = False
        self.tls = transport.get_extra_info("ssl_object") is not None

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)
        self.nbytes += len(data)
        self.tunnel.active = True

    def pause_writing(self) -> None:
        # Our transport cannot take more of what the peer sends: stop reading the peer.
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return self.tunnel.half_closed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.side_lost(self, exc)


class FramedRelay(Relay):
    """The endpoint-to-client side of a WebSocket tunnel. It follows where frames end (headers
    only, :class:`FrameTracker`), so that a Close frame can be sent to the client between two
    frames when the tunnel is drained; after that, what the endpoint sends is dropped (the
    client has been told the connection is over)."""

    __slots__ = ("close_with", "frames", "mode")

    def __init__(
        self, tunnel: Tunnel, transport: asyncio.Transport, peer: asyncio.Transport
    ) -> None:
        super().__init__(tunnel, transport, peer)
        self.frames = FrameTracker()
        self.close_with = b""
        self.mode = 0  # 0: relaying; 1: a Close waits for the frame under way; 2: Close sent

    def data_received(self, data: bytes) -> None:
        self.tunnel.active = True
        if self.mode:
            self._closing(data)
            return
        frames = self.frames
        n = len(data)
        rem = frames.remaining
        if rem >= n:  # inside a frame
            frames.remaining = rem - n
        elif rem or frames.head or not 2 <= n <= 127 or data[1] != n - 2:
            frames.feed(data)
        # else: exactly one small unmasked frame (the common case of chat messages)
        self.peer.write(data)
        self.nbytes += n

    def _closing(self, data: bytes) -> None:
        if self.mode == 2:
            return  # the client was told the connection is over: what follows goes nowhere
        k = self.frames.split(data)
        if k < 0:
            self.peer.write(data)
            self.nbytes += len(data)
            return
        self.peer.write(data[:k])
        self.nbytes += k
        self._send_close()

    def inject_close(self, frame: bytes) -> None:
        """Send ``frame`` (a Close) to the client as soon as a frame ends (now, if none is
        under way)."""
        self.close_with = frame
        self.mode = 1
        if self.frames.at_boundary:
            self._send_close()

    def _send_close(self) -> None:
        self.mode = 2
        if not self.peer.is_closing():
            self.peer.write(self.close_with)


class Tunnel:
    __slots__ = (
        "active",
        "backend",
        "cid",
        "client",
        "close_by",
        "closed",
        "down",
        "endpoint",
        "holds",
        "idle_timeout",
        "kind",
        "last",
        "lost",
        "reason",
        "request",
        "runtime",
        "started",
        "up",
    )

    def __init__(
        self,
        runtime: Runtime,
        cid: str,
        kind: str,
        endpoint: EndpointState,
        idle_timeout: float,
        backend: str = "",
    ) -> None:
        self.runtime = runtime
        self.backend = backend
        self.cid = cid
        self.kind = kind
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self.active = False
        self.last = runtime.loop.time()
        self.started = time.monotonic()
        self.closed = False
        self.lost = 0
        self.reason = ""
        self.client = ""  # for the access log: who, and what opened it
        self.request = ""
        self.close_by = 0.0  # drained: the time by which it closes anyway
        self.down: Relay | None = None
        self.up: Relay | None = None
        self.holds = Holds()  # given back once, when the tunnel ends (the endpoint's count...)
        endpoint.tunnels += 1
        if runtime.stats is not None:
            runtime.stats.tunnel_opened(self)

    def start(
        self,
        down: asyncio.Transport,
        up: asyncio.Transport,
        *,
        up_write_paused: bool,
        down_write_paused: bool,
        client_bytes: bytes = b"",
        upstream_bytes: bytes = b"",
    ) -> None:
        """Swap both transports over to relays; ``*_bytes`` were read before the swap."""
        self.down = Relay(self, down, up)
        self.up = (FramedRelay if self.kind.startswith("websocket") else Relay)(self, up, down)
        down.set_protocol(self.down)
        up.set_protocol(self.up)
        self.runtime.register(self)
        self.runtime.sweeper.add(self)
        if down.is_closing() or up.is_closing():
            self.close("peer closed before the tunnel started")
            return
        # Reading on each side is paused exactly when the other side's write buffer is full.
        if up_write_paused:
            down.pause_reading()
        else:
            down.resume_reading()
        if down_write_paused:
            up.pause_reading()
        else:
            up.resume_reading()
        if client_bytes:
            self.down.nbytes += len(client_bytes)
            up.write(client_bytes)
        if upstream_bytes:
            self.up.nbytes += len(upstream_bytes)
            down.write(upstream_bytes)

    # ---- timeouts and draining
    def sweep(self, now: float) -> None:
        if self.close_by and now >= self.close_by:
            self.close(self.reason)
            return
        if self.active:
            self.active = False
            self.last = now
        elif now - self.last >= self.idle_timeout:
            self.close("idle timeout")

    def busy(self) -> bool:
        return True

    def drain(self) -> None:
        """Tunnels are left alone while a worker drains; ``force_close`` ends them."""

    def force_close(self, reason: str) -> None:
        self.close(reason)

    def close_gracefully(self, code: int, why: str, linger: float = 10.0) -> None:
        """A drain: the client gets a Close frame ``code`` between two frames, its Close
        reply goes to the endpoint, and whoever closes first ends the tunnel; after
        ``linger`` seconds it is closed regardless. A tcp tunnel just closes."""
        if self.closed or self.close_by:
            return
        up = self.up
        if not isinstance(up, FramedRelay):
            self.close(why)
            return
        self.reason = f"{why} (Close {code})"
        self.close_by = self.runtime.loop.time() + linger
        up.inject_close(close_frame(code, why))

    def abandon(self, reason: str) -> None:
        """Never started (a side closed before the swap): give back what it holds."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self._finished()

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = self.reason or reason
        for relay in (self.down, self.up):
            if relay is not None:
                relay.transport.close()

    # ---- relay callbacks
    def half_closed(self, relay: Relay) -> bool:
        other = self.up if relay is self.down else self.down
        assert other is not None
        if other.eof:
            self.reason = self.reason or "both sides closed"
            self.close("both sides closed")
            return False
        peer = relay.peer
        if not relay.tls and peer.can_write_eof() and not peer.is_closing():
            try:
                peer.write_eof()
            except (OSError, RuntimeError):
                self.close("write_eof failed")
                return False
            return True
        self.reason = self.reason or ("client closed" if relay is self.down else "upstream closed")
        self.close(self.reason)
        return False

    def side_lost(self, relay: Relay, exc: Exception | None) -> None:
        if not self.reason:
            who = "client" if relay is self.down else "upstream"
            if exc is None:
                self.reason = f"{who} closed"
            elif isinstance(exc, ssl.SSLError):
                self.reason = f"{who} TLS error"
            else:
                self.reason = f"{who} reset"
        self.lost += 1
        if self.lost == 1:
            self.close(self.reason)
            return
        self._finished()

    def _finished(self) -> None:
        self.endpoint.tunnels -= 1
        self.holds.release_all()
        self.runtime.sweeper.discard(self)
        self.runtime.unregister(self)
        from_client = self.down.nbytes if self.down else 0
        from_upstream = self.up.nbytes if self.up else 0
        if self.runtime.stats is not None:
            self.runtime.stats.tunnel_closed(self, from_client, from_upstream)
        if self.runtime.access_log:
            access_log.tunnel(self, from_client, from_upstream)
        # Both sides are gone: break the tunnel's cycles (relays, transports) now.
        for relay in (self.down, self.up):
            if relay is not None:
                del relay.tunnel, relay.transport, relay.peer
        self.down = self.up = None
