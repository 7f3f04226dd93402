"""HTTP/2 connections (RFC 9113) on the ``h2`` library: the session and streams both sides share
(the client side is ``upstream/h2.py``, the server side ``downstream/h2.py``).

``H2Session`` is what both sides share: it feeds received bytes to ``h2``, dispatches the
events to its streams, and sends what ``h2`` produced once per event-loop iteration (with the
other writes of that iteration, see ``core/output.py``). It also keeps the connection-level
defences:
a "glitch" budget spent by PING and SETTINGS frames, empty DATA frames and streams the peer
resets (rapid reset, CVE-2023-44487) and refilled over time; a peer that overspends it gets
GOAWAY ENHANCE_YOUR_CALM. While the transport cannot take more output, the session stops
reading, so nothing a peer sends can make it buffer without bound.

``H2Stream`` is one stream, usable as an asyncio transport (``write``, ``write_eof``,
``pause_reading``...), so that a WebSocket carried on a stream (RFC 8441) goes through the same
:class:`~wslb.server.tunnel.Tunnel` as one on a TCP connection:

- sending: DATA goes out as far as the stream's and the connection's send windows allow; the
  rest waits for WINDOW_UPDATE, and past ``HIGH_WATER`` bytes waiting the producer is paused
  (``pause_writing``), as a transport's write buffer would;
- receiving: data is acknowledged (window given back) once handed on; ``pause_reading`` holds
  the acknowledgements back, so a slow consumer stalls only its own stream, never the others.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from wslb.proto.http2 import Header
from wslb.server.core.worker import Worker

log = logging.getLogger("wslb.http2")

HIGH_WATER = 64 * 1024  # bytes waiting for send window before the producer is paused
LOW_WATER = 16 * 1024  # ... and resumed
# producer blocked because of (a bit mask)
B_WINDOW = 1  # the stream's send window
B_TRANSPORT = 2  # the connection's transport

# Glitches (frames that cost work and carry no request): the budget and its refill rate.
GLITCH_LIMIT = 500.0
GLITCH_RATE = 100.0  # per second

Errors = (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, KeyError)
ErrorCodes = h2.errors.ErrorCodes


class H2Stream:
    """One stream: flow-controlled sending, acknowledgement-controlled receiving, and the
    transport interface a tunnel relays through."""

    __slots__ = (
        "blocked",
        "conn",
        "end_after",
        "ending",
        "local_closed",
        "lost",
        "pending",
        "pending_size",
        "protocol",
        "read_paused",
        "remote_closed",
        "reset_after_end",
        "rx_bytes",
        "session",
        "sid",
        "trailers_after",
        "tx_bytes",
        "unacked",
    )

    def __init__(self, session: H2Session, sid: int) -> None:
        self.session = session
        self.conn = session.conn
        self.sid = sid
        self.pending: list[bytes] = []  # DATA waiting for send window
        self.pending_size = 0
        self.end_after = False  # END_STREAM once what is pending has gone
        self.trailers_after: list[Header] | None = None
        self.reset_after_end = False  # then RST_STREAM NO_ERROR: the rest of the request is moot
        self.local_closed = False
        self.remote_closed = False
        self.ending = False  # close() was called
        self.lost = False
        self.unacked = 0  # received flow-controlled bytes not yet given back
        self.read_paused = False
        self.blocked = B_TRANSPORT if session.write_paused else 0
        self.protocol: asyncio.BaseProtocol | None = None  # a tunnel's relay, once upgraded
        self.rx_bytes = 0
        self.tx_bytes = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sid}>"

    @property
    def write_paused(self) -> bool:
        return bool(self.blocked)

    # ------------------------------------------------------------------ sending
    def send_headers(self, headers: list[Header], end_stream: bool = False) -> None:
        if self.local_closed:
            return
        try:
            self.conn.send_headers(self.sid, headers, end_stream=end_stream)
        except Errors as exc:
            self._failed(exc)
            return
        self.session.mark()
        if end_stream:
            self.local_closed = True
            self._after_end()

    def write(self, data: bytes) -> None:
        if self.local_closed or self.end_after or not data:
            return
        self.tx_bytes += len(data)
        if self.pending:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > HIGH_WATER:
                self._block(B_WINDOW)
            return
        self._push(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _push(self, data: bytes) -> None:
        """Send as much of ``data`` as the windows allow; keep the rest, in order."""
        conn = self.conn
        try:
            window = conn.local_flow_control_window(self.sid)
            n = len(data)
            if n <= window and n <= conn.max_outbound_frame_size:
                conn.send_data(self.sid, data)
                self.session.mark()
                return
            limit = conn.max_outbound_frame_size
            off = 0
            while off < n and window > 0:
                size = min(n - off, window, limit)
                conn.send_data(self.sid, data[off : off + size])
                off += size
                window -= size
        except Errors as exc:
            self._failed(exc)
            return
        self.session.mark()
        if off < n:
            rest = data[off:]
            self.pending.append(rest)
            self.pending_size += len(rest)
            if self.pending_size > HIGH_WATER:
                self._block(B_WINDOW)

    def window_opened(self) -> None:
        """The send window grew: send what waits."""
        if not self.pending:
            if self.end_after:
                self._send_end()
            return
        waiting, self.pending, self.pending_size = self.pending, [], 0
        for i, chunk in enumerate(waiting):
            self._push(chunk)
            if self.pending or self.local_closed:
                rest = waiting[i + 1 :]
                self.pending += rest
                self.pending_size += sum(len(c) for c in rest)
                break
        if not self.pending and self.end_after:
            self._send_end()
        if self.pending_size <= LOW_WATER:
            self._unblock(B_WINDOW)

    def end(self, trailers: list[Header] | None = None) -> None:
        """END_STREAM (with trailers, if any) after what is waiting."""
        if self.local_closed or self.end_after:
            return
        self.trailers_after = trailers
        if self.pending:
            self.end_after = True
            return
        self._send_end()

    def _send_end(self) -> None:
        self.end_after = False
        trailers, self.trailers_after = self.trailers_after, None
        try:
            if trailers:
                self.conn.send_headers(self.sid, trailers, end_stream=True)
            else:
                self.conn.end_stream(self.sid)
        except Errors as exc:
            self._failed(exc)
            return
        self.local_closed = True
        self.session.mark()
        self._after_end()

    def _after_end(self) -> None:
        if not self.remote_closed and self.reset_after_end:
            self.reset(ErrorCodes.NO_ERROR)
            return
        self._maybe_done(None)

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        if self.local_closed and self.remote_closed:
            return
        try:
            self.conn.reset_stream(self.sid, code)
        except Errors:
            pass
        self.session.mark()
        self._closed_both()
        self._maybe_done(None)

    def _closed_both(self) -> None:
        self.local_closed = self.remote_closed = True
        self.end_after = False
        if self.pending:
            self.pending, self.pending_size = [], 0

    def _failed(self, exc: BaseException) -> None:
        """h2 refused an operation: the stream is gone (reset, or the connection closed)."""
        log.debug("[%s] stream %d: %r", self.session.cid, self.sid, exc)
        self._closed_both()
        self._maybe_done(ConnectionResetError(str(exc)))

    # ------------------------------------------------------------------ receiving
    def on_data(self, data: bytes, flow_len: int) -> None:
        if flow_len:
            if self.read_paused:
                self.unacked += flow_len
            else:
                self.session.ack(flow_len, self.sid)
        if data:
            self.rx_bytes += len(data)
            self.deliver(data)

    def deliver(self, data: bytes) -> None:
        p = self.protocol
        if p is not None:
            cast(asyncio.Protocol, p).data_received(data)

    def on_end(self) -> None:
        self.remote_closed = True
        p = self.protocol
        if p is not None and not cast(asyncio.Protocol, p).eof_received():
            self.close()
        self._maybe_done(None)

    def on_trailers(self, headers: list[Header]) -> None:
        """Trailers from the peer (a tunnel has none)."""

    def on_reset(self, code: int) -> None:
        self._closed_both()
        self._maybe_done(ConnectionResetError(f"stream reset by peer ({code})"))

    def connection_gone(self, exc: Exception | None) -> None:
        if self.local_closed and self.remote_closed and self.lost:
            return
        self._closed_both()
        self._maybe_done(exc or ConnectionResetError("connection closed"))

    def _maybe_done(self, exc: Exception | None) -> None:
        if not (self.local_closed and self.remote_closed) or self.lost:
            return
        self.lost = True
        self.session.stream_closed(self)
        self.finished(exc)

    def finished(self, exc: Exception | None) -> None:
        """Both directions are closed (or the stream was reset)."""
        p = self.protocol
        if p is not None:
            self.session.loop.call_soon(p.connection_lost, exc)

    # ------------------------------------------------------------------ producer control
    def _block(self, reason: int) -> None:
        was = self.blocked
        self.blocked |= reason
        if not was:
            self.pause_producer()

    def _unblock(self, reason: int) -> None:
        if self.blocked & reason:
            self.blocked &= ~reason
            if not self.blocked:
                self.resume_producer()

    def pause_producer(self) -> None:
        p = self.protocol
        if p is not None:
            p.pause_writing()

    def resume_producer(self) -> None:
        p = self.protocol
        if p is not None:
            p.resume_writing()

    # ------------------------------------------------------------------ transport interface
    def is_closing(self) -> bool:
        return self.local_closed or self.end_after or self.ending

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.end()

    def close(self) -> None:
        """End the stream after what waits; stop the peer's side if it is still open."""
        if self.ending or (self.local_closed and self.remote_closed):
            return
        self.ending = True
        self.reset_after_end = True
        if self.local_closed:
            if not self.remote_closed:
                self.reset(ErrorCodes.NO_ERROR)
            return
        if self.pending:
            self.window_opened()
        if self.pending:
            self.reset(ErrorCodes.CANCEL)  # the peer does not take what waits: give up
            return
        if self.remote_closed:
            # Both directions are done: RST_STREAM NO_ERROR closes the stream as END_STREAM
            # would, and spares servers that forget a stream once they ended it (Hypercorn
            # fails the whole connection on a DATA frame for such a stream).
            self.reset(ErrorCodes.NO_ERROR)
            return
        self.end()

    def abort(self) -> None:
        self.reset(ErrorCodes.CANCEL)

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        if not self.read_paused:
            return
        self.read_paused = False
        if self.unacked:
            n, self.unacked = self.unacked, 0
            self.session.ack(n, self.sid)

    def is_reading(self) -> bool:
        return not self.read_paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "h2_stream":
            return self.sid
        transport = self.session.transport
        if name in ("peername", "sockname") and transport is not None:
            return transport.get_extra_info(name, default)
        return default  # no ssl_object: a stream can half-close

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self.protocol

    def get_write_buffer_size(self) -> int:
        return self.pending_size


class H2Session(asyncio.Protocol):
    """One HTTP/2 connection, either side."""

    cid = "h2"

    def __init__(
        self,
        runtime: Worker,
        config: h2.config.H2Configuration,
        settings: dict[h2.settings.SettingCodes, int],
        connection_window: int,
    ) -> None:
        self.runtime = runtime
        self.loop = runtime.loop
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=config.client_side, initial_values=settings
        )
        self.connection_window = connection_window
        self.streams: dict[int, H2Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.write_paused = False
        self.write_paused_since = 0.0
        self.closed = False
        self.goaway_sent = False
        self.goaway_received = False
        self.glitches = 0.0
        self.glitch_at = 0.0

    # ------------------------------------------------------------------ output
    def mark(self) -> None:
        """Something was given to h2 to send: send it at the end of this loop iteration."""
        if not self.dirty:
            self.dirty = True
            self.runtime.batch.add(self)

    def flush(self) -> None:
        self.dirty = False
        data = self.conn.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def ack(self, n: int, sid: int) -> None:
        try:
            self.conn.acknowledge_received_data(n, sid)
        except Errors:
            return
        self.mark()

    # ------------------------------------------------------------------ asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.conn.initiate_connection()
        extra = self.connection_window - 65535
        if extra > 0:
            self.conn.increment_flow_control_window(extra)
        self.mark()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.protocol_error(exc)
            return
        try:
            self._dispatch(events)
        except Exception:
            # A bug of wslb's must not take the other streams down with it.
            log.exception("[%s] failed handling %r", self.cid, events)
            self.close_transport()
            return
        self.mark()

    def _dispatch(self, events: list[h2.events.Event]) -> None:
        streams = self.streams
        for ev in events:
            t = type(ev)
            if t is h2.events.DataReceived:
                ev = cast(h2.events.DataReceived, ev)
                sid = ev.stream_id
                stream = streams.get(sid)
                flow = ev.flow_controlled_length
                if stream is None:
                    if flow:
                        self.ack(flow, sid)  # a stream we dropped: keep the connection window
                    continue
                if not flow and ev.stream_ended is None:
                    self.glitch("empty DATA frame")
                stream.on_data(ev.data, flow)
            elif t is h2.events.StreamEnded:
                stream = streams.get(cast(h2.events.StreamEnded, ev).stream_id)
                if stream is not None:
                    stream.on_end()
            else:
                self.other_event(ev)
            if self.closed:
                return

    def other_event(self, ev: h2.events.Event) -> None:
        t = type(ev)
        streams = self.streams
        if t is h2.events.WindowUpdated:
            sid = cast(h2.events.WindowUpdated, ev).stream_id
            if sid:
                stream = streams.get(sid)
                if stream is not None and (stream.pending or stream.end_after):
                    stream.window_opened()
            else:
                self._all_windows_opened()
        elif t is h2.events.StreamReset:
            ev = cast(h2.events.StreamReset, ev)
            stream = streams.get(ev.stream_id)
            if stream is not None:
                if ev.remote_reset:
                    self.stream_reset_by_peer(stream)
                stream.on_reset(ev.error_code)
        elif t is h2.events.TrailersReceived:
            ev = cast(h2.events.TrailersReceived, ev)
            stream = streams.get(ev.stream_id)
            if stream is not None:
                stream.on_trailers(ev.headers)
        elif t is h2.events.RemoteSettingsChanged:
            self.glitch("SETTINGS frame")
            changed = cast(h2.events.RemoteSettingsChanged, ev).changed_settings
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed:
                self._all_windows_opened()
            self.settings_changed()
        elif t is h2.events.PingReceived:
            self.glitch("PING frame")
        elif t is h2.events.ConnectionTerminated:
            ev = cast(h2.events.ConnectionTerminated, ev)
            self.goaway(ev.error_code or 0, ev.last_stream_id or 0)
        elif t is h2.events.PriorityUpdated:
            self.glitch("PRIORITY frame", 0.1)
        else:
            self.event(ev)

    def event(self, ev: h2.events.Event) -> None:
        """Events only one side handles (requests, responses)."""

    def settings_changed(self) -> None:
        """The peer's SETTINGS arrived (or changed)."""

    def stream_reset_by_peer(self, stream: H2Stream) -> None:
        self.glitch("stream reset by the peer")

    def goaway(self, code: int, last_stream_id: int) -> None:
        """The peer sent GOAWAY: streams above ``last_stream_id`` were not processed."""
        self.goaway_received = True
        if code != 0:
            log.info("[%s] peer sent GOAWAY %s", self.cid, _code_name(code))
            self.close_transport()
            return
        # h2 closes its state machine on GOAWAY and would refuse the frames of the streams
        # the peer still finishes (RFC 9113 6.8 lets it): reopen it, and open no new stream.
        state = h2.connection.ConnectionState
        open_state = state.CLIENT_OPEN if self.conn.config.client_side else state.SERVER_OPEN
        self.conn.state_machine.state = open_state
        for sid, stream in list(self.streams.items()):
            if sid > last_stream_id and sid % 2 == (1 if self.conn.config.client_side else 0):
                stream.on_reset(ErrorCodes.REFUSED_STREAM)
        if not self.streams:
            self.close_transport()

    def _all_windows_opened(self) -> None:
        for stream in list(self.streams.values()):
            if stream.pending or stream.end_after:
                stream.window_opened()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_since = self.loop.time()
        if self.transport is not None:
            self.transport.pause_reading()  # no more input until the peer reads what we sent
        for stream in list(self.streams.values()):
            stream._block(B_TRANSPORT)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_paused_since = 0.0
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            stream._unblock(B_TRANSPORT)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for stream in list(self.streams.values()):
            stream.connection_gone(exc)
        self.streams.clear()

    # ------------------------------------------------------------------ ends
    def stream_closed(self, stream: H2Stream) -> None:
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]
        if not self.streams and (self.goaway_sent or self.goaway_received):
            self.close_transport()

    def protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        log.info("[%s] HTTP/2 protocol error: %s", self.cid, exc)
        self.flush()  # h2 prepared a GOAWAY
        self.close_transport()

    def glitch(self, what: str, cost: float = 1.0) -> None:
        now = self.loop.time()
        spent = self.glitches - (now - self.glitch_at) * GLITCH_RATE
        self.glitches = (spent if spent > 0.0 else 0.0) + cost
        self.glitch_at = now
        if self.glitches > GLITCH_LIMIT:
            log.warning("[%s] too many frames without requests (%s): GOAWAY", self.cid, what)
            self.glitches = 0.0
            try:
                self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            except h2.exceptions.ProtocolError:
                pass
            self.flush()
            self.close_transport()

    def send_goaway(self) -> None:
        """A graceful GOAWAY (RFC 9113 6.8): the streams taken so far finish, no new ones.
        Written with hyperframe, because h2 stops the connection when it sends one."""
        if self.goaway_sent or self.closed or self.transport is None:
            return
        self.goaway_sent = True
        self.flush()
        last = self.conn.highest_inbound_stream_id
        frame = GoAwayFrame(0, last_stream_id=last, error_code=0)
        if not self.transport.is_closing():
            self.transport.write(frame.serialize())
        if not self.streams:
            self.close_transport()

    def close_transport(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.dirty:
            self.flush()
        if self.transport is not None:
            self.transport.close()
        for stream in list(self.streams.values()):
            stream.connection_gone(None)
        self.streams.clear()


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


# ======================================================================== server side
def h2_config(*, client_side: bool) -> h2.config.H2Configuration:
    """How wslb runs ``h2``: header fields as bytes; what a peer sends is validated and
    normalised, what wslb sends is not again (it builds its fields lowercase, without
    connection-specific ones, from heads its parsers already checked)."""
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
