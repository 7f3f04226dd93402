"""HTTP/2 connections (RFC 9113) on ``ngh2`` (libnghttp2): the session and streams both sides
share (the client side is ``upstream/h2.py``, the server side ``downstream/h2.py``). This is the
only module that names the library; the sides see wslb's own small interface: stream methods
(``send_headers``, ``write``, ``end``, ``reset``...), hooks (``on_request``, ``on_response``,
``on_data``...) and the names re-exported here (``ErrorCodes``).

``H2Session`` feeds received bytes to libnghttp2, dispatches its events to the streams, and sends
what it produced once per event-loop iteration (with the other writes of that iteration, see
``core/output.py``). libnghttp2 does the framing, HPACK, the stream states, RFC 9113 section 8's
checks of a message (pseudo-header fields, connection-specific fields, ``content-length``
against the DATA received: a stream that fails them is reset with PROTOCOL_ERROR) and its own
flood limits, configured in :func:`_configuration`. On top of them the session keeps wslb's
"glitch" budget, spent by PING and SETTINGS frames, empty DATA frames and streams the peer
resets before their response (rapid reset, CVE-2023-44487) and refilled over time; a peer that
overspends it gets GOAWAY ENHANCE_YOUR_CALM. While the transport cannot take more output, the
session stops reading, so nothing a peer sends can make it buffer without bound.

``H2Stream`` is one stream, usable as an asyncio transport (``write``, ``write_eof``,
``pause_reading``...), so that a WebSocket carried on a stream (RFC 8441) goes through the same
:class:`~wslb.server.tunnel.Tunnel` as one on a TCP connection:

- sending: libnghttp2 queues DATA beyond the stream's and the connection's send windows and
  sends it as WINDOW_UPDATEs arrive; past ``HIGH_WATER`` bytes waiting the producer is paused
  (``pause_writing``), as a transport's write buffer would, and resumed under ``LOW_WATER``;
- receiving: window updates are wslb's (``auto_window_update=False``): data is acknowledged once
  handed on; ``pause_reading`` holds the acknowledgements back, so a slow consumer stalls only
  its own stream, never the others.

A stream lives until libnghttp2 reports it closed (both END_STREAMs sent and received, or a
reset): what waits for send window still goes after the producer ended.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, cast

import ngh2

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

ErrorCodes = ngh2.ErrorCode
Errors = (ngh2.NGH2Error, ValueError)  # an operation refused (the stream or connection is gone)
MAX_STREAM_ID = 2**31 - 1
_MAX_CONCURRENT = ngh2.Setting.MAX_CONCURRENT_STREAMS
_CONNECT_PROTOCOL = ngh2.Setting.ENABLE_CONNECT_PROTOCOL

_DataReceived = ngh2.DataReceived
_RequestReceived = ngh2.RequestReceived
_ResponseReceived = ngh2.ResponseReceived
_StreamClosed = ngh2.StreamClosed
_WindowUpdated = ngh2.WindowUpdated


def _configuration(max_header_list: int, max_header_count: int) -> ngh2.Configuration:
    """libnghttp2's limits, as wslb runs it (the values are libnghttp2's defaults unless said):
    RST_STREAM frames a peer may send (a burst of 1000, then 33 a second: the rapid-reset
    defence), CONTINUATION frames after one HEADERS (8: CVE-2024-27316's flood), entries in one
    SETTINGS frame (32), SETTINGS and PING acknowledgements queued unsent (1000), its glitch
    counter (invalid or useless frames: 10000, then 330 a second), and the decoded header list
    (the listener's size, a list over it ends the connection)."""
    return ngh2.Configuration(
        auto_window_update=False,
        stream_reset_rate_limit=(1000, 33),
        max_continuations=8,
        max_settings=32,
        max_outbound_ack=1000,
        glitch_rate_limit=(10000, 330),
        max_inbound_header_list_size=max_header_list,
        max_inbound_header_count=max_header_count,
    )


class H2Stream:
    """One stream: flow-controlled sending, acknowledgement-controlled receiving, and the
    transport interface a tunnel relays through."""

    __slots__ = (
        "blocked",
        "conn",
        "ending",
        "error",
        "local_closed",
        "lost",
        "protocol",
        "read_paused",
        "remote_closed",
        "reset_after_end",
        "reset_sent",
        "rx_bytes",
        "session",
        "sid",
        "tx_bytes",
        "unacked",
    )

    def __init__(self, session: H2Session, sid: int) -> None:
        self.session = session
        self.conn = session.conn
        self.sid = sid  # 0 until an outbound stream's HEADERS are submitted
        self.reset_after_end = False  # then RST_STREAM NO_ERROR: the rest of the request is moot
        self.local_closed = False  # END_STREAM (or RST_STREAM) submitted
        self.remote_closed = False
        self.ending = False  # close() was called
        self.reset_sent = False
        self.lost = False
        self.error: Exception | None = None  # why the stream ended early (a reset)
        self.unacked = 0  # received bytes not yet given back
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
        """The response's HEADERS (server side) or the request's (client side)."""
        if self.local_closed:
            return
        if not self.session.submit_head(self, headers, end_stream):
            return
        if end_stream:
            self.local_closed = True
            self._after_end()

    def send_interim(self, headers: list[Header]) -> None:
        """A 1xx response (server side)."""
        if self.local_closed:
            return
        try:
            self.conn.send_informational_response(self.sid, headers)
        except Errors as exc:
            self._failed(exc)
            return
        self.session.mark()

    def write(self, data: bytes) -> None:
        if self.local_closed or not data:
            return
        self.tx_bytes += len(data)
        conn = self.conn
        try:
            conn.send_data(self.sid, data)
        except Errors as exc:
            self._failed(exc)
            return
        self.session.mark()
        if (  # (what is queued is at most what was ever written)
            self.tx_bytes > HIGH_WATER
            and conn.queued_body_size(self.sid) > HIGH_WATER
            and self.waiting() > HIGH_WATER
        ):
            self._block(B_WINDOW)
            self.session.window_blocked.add(self)

    def waiting(self) -> int:
        """Bytes queued that the send windows do not let go yet."""
        conn = self.conn
        try:
            window = min(conn.stream_remote_window_size(self.sid), conn.remote_window_size)
            return conn.queued_body_size(self.sid) - max(window, 0)
        except Errors:
            return 0

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def end(self, trailers: list[Header] | None = None) -> None:
        """END_STREAM (with trailers, if any) after what is queued."""
        if self.local_closed:
            return
        try:
            if trailers:
                self.conn.send_trailers(self.sid, trailers)
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
            self.session.reset_when_sent(self)

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        if self.reset_sent or self.lost:
            return
        self.reset_sent = True
        self.local_closed = self.remote_closed = True
        if self.sid:
            try:
                self.conn.reset_stream(self.sid, code)
            except Errors:
                pass
            self.session.mark()
        else:  # never opened: nothing to tell the peer
            self.session.unopened(self)
            self._done(None)

    def _failed(self, exc: BaseException) -> None:
        """libnghttp2 refused an operation: the stream is gone (reset, or the connection
        closed)."""
        log.debug("[%s] stream %d: %r", self.session.cid, self.sid, exc)
        self.local_closed = self.remote_closed = True
        if self.error is None:
            self.error = ConnectionResetError(str(exc))
        if self.sid:
            try:
                self.conn.reset_stream(self.sid, ErrorCodes.INTERNAL_ERROR)
            except Errors:
                self._done(self.error)  # libnghttp2 knows the stream no more
                return
            self.reset_sent = True
            self.session.mark()
        else:
            self._done(self.error)

    # ------------------------------------------------------------------ receiving
    def on_data(self, data: bytes) -> None:
        n = len(data)
        if self.read_paused:
            self.unacked += n
        else:
            self.session.ack(n, self.sid)
        self.rx_bytes += n
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

    def on_response(self, headers: list[Header]) -> None:
        """The response's head arrived (client side)."""

    def on_informational(self, headers: list[Header]) -> None:
        """A 1xx response arrived (client side)."""

    def on_trailers(self, headers: list[Header]) -> None:
        """Trailers from the peer (a tunnel has none)."""

    def on_reset(self, code: int) -> None:
        """The peer reset the stream (a StreamClosed follows)."""
        self.local_closed = self.remote_closed = True
        if self.error is None:
            self.error = ConnectionResetError(f"stream reset by peer ({_code_name(code)})")

    def on_closed(self, code: int) -> None:
        """libnghttp2 closed the stream: both ends done, or a reset (either side's, or a GOAWAY
        refusing it)."""
        if self.unacked:
            n, self.unacked = self.unacked, 0
            self.session.ack(n, self.sid)  # the connection's window, held for this stream
        if code and self.error is None and not self.reset_sent:
            self.error = ConnectionResetError(f"stream closed ({_code_name(code)})")
        self.local_closed = self.remote_closed = True
        self._done(self.error)

    def connection_gone(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.local_closed = self.remote_closed = True
        self._done(exc or ConnectionResetError("connection closed"))

    def _done(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.session.stream_closed(self)
        self.finished(exc)

    def finished(self, exc: Exception | None) -> None:
        """The stream is closed (both directions, or reset)."""
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
        return self.local_closed or self.ending

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.end()

    def close(self) -> None:
        """End the stream after what is queued; stop the peer's side if it is still open."""
        if self.ending or self.lost or self.reset_sent:
            return
        self.ending = True
        self.reset_after_end = True
        if self.local_closed:
            if not self.remote_closed:
                self.session.reset_when_sent(self)
            return
        if self.waiting() > 0:
            self.reset(ErrorCodes.CANCEL)  # the peer does not take what waits: give up
            return
        if self.remote_closed:
            # Both directions are done: RST_STREAM NO_ERROR once the queue is sent closes the
            # stream as END_STREAM would, and spares servers that forget a stream once they
            # ended it (Hypercorn fails the whole connection on a DATA frame for such a stream).
            self.local_closed = True
            self.session.reset_when_sent(self)
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
        try:
            return self.conn.queued_body_size(self.sid) if self.sid else 0
        except Errors:
            return 0


class H2Session(asyncio.Protocol):
    """One HTTP/2 connection, either side."""

    cid = "h2"

    def __init__(
        self,
        runtime: Worker,
        *,
        client_side: bool,
        stream_window: int,
        connection_window: int,
        max_header_list: int,
        max_header_count: int = 1024,
        max_concurrent_streams: int | None = None,
        connect_protocol: bool = False,
    ) -> None:
        self.runtime = runtime
        self.loop = runtime.loop
        self.client_side = client_side
        role = ngh2.Role.CLIENT if client_side else ngh2.Role.SERVER
        self.conn = ngh2.Connection(role, _configuration(max_header_list, max_header_count))
        settings = {
            ngh2.Setting.INITIAL_WINDOW_SIZE: stream_window,
            ngh2.Setting.MAX_HEADER_LIST_SIZE: max_header_list,
        }
        if client_side:
            settings[ngh2.Setting.ENABLE_PUSH] = 0
        if max_concurrent_streams is not None:
            settings[_MAX_CONCURRENT] = max_concurrent_streams
        if connect_protocol:
            settings[_CONNECT_PROTOCOL] = 1
        self.settings = settings
        self.connection_window = connection_window
        self.streams: dict[int, H2Stream] = {}
        self.window_blocked: set[H2Stream] = set()  # producers paused by the send windows
        self.resets: list[H2Stream] = []  # RST_STREAM NO_ERROR once their queue is sent
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.write_paused = False
        self.write_paused_since = 0.0
        self.closed = False
        self.goaway_sent = False
        self.goaway_received = False
        self.peer_settings = False  # the peer's first SETTINGS arrived
        self.glitches = 0.0
        self.glitch_at = 0.0

    # ------------------------------------------------------------------ output
    def mark(self) -> None:
        """Something was given to libnghttp2 to send: send it at the end of this iteration."""
        if not self.dirty:
            self.dirty = True
            self.runtime.batch.add(self)

    def flush(self) -> None:
        self.dirty = False
        if self.closed:
            return
        conn = self.conn
        try:
            data = conn.data_to_send()
            if self.resets:
                self._send_resets()
                data += conn.data_to_send()
        except ngh2.NGH2Error as exc:
            self.protocol_error(exc)
            return
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)
        if self.window_blocked:
            for stream in list(self.window_blocked):
                if stream.lost or stream.waiting() <= LOW_WATER:
                    self.window_blocked.discard(stream)
                    stream._unblock(B_WINDOW)
        events = conn.events()
        if events:
            self._dispatch(events)

    def _send_resets(self) -> None:
        """RST_STREAM NO_ERROR for the streams whose END_STREAM (or last DATA) has gone."""
        conn = self.conn
        waiting = []
        for stream in self.resets:
            if stream.lost or stream.reset_sent:
                continue
            try:
                queued = conn.queued_body_size(stream.sid)
            except Errors:
                continue
            if queued:
                waiting.append(stream)
            else:
                stream.reset(ErrorCodes.NO_ERROR)
        self.resets = waiting

    def reset_when_sent(self, stream: H2Stream) -> None:
        if stream not in self.resets:
            self.resets.append(stream)
        self.mark()

    def ack(self, n: int, sid: int) -> None:
        try:
            self.conn.acknowledge_received_data(n, sid)
        except Errors:
            return
        self.mark()

    def submit_head(self, stream: H2Stream, headers: list[Header], end_stream: bool) -> bool:
        """Submit a stream's HEADERS; an outbound stream gets its id here."""
        try:
            if self.client_side:
                try:
                    sid = self.conn.send_request(headers, end_stream=end_stream)
                finally:
                    self.unopened(stream)
                stream.sid = sid
                self.streams[sid] = stream
            else:
                self.conn.send_response(stream.sid, headers, end_stream=end_stream)
        except Errors as exc:
            stream._failed(exc)
            return False
        self.mark()
        return True

    def unopened(self, stream: H2Stream) -> None:
        """An outbound stream was given its id, or dropped before it had one."""

    # ------------------------------------------------------------------ asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.conn.initiate_connection(self.settings)
        if self.connection_window > 65535:
            self.conn.set_local_window_size(self.connection_window)
        self.mark()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            conn.receive_data(data)
        except ngh2.NGH2Error as exc:
            self.protocol_error(exc)
            return
        events = conn.events()
        try:
            self._dispatch(events)
        except Exception:
            # A bug of wslb's must not take the other streams down with it.
            log.exception("[%s] failed handling %r", self.cid, events)
            self.close_transport()
            return
        self.mark()

    def _dispatch(self, events: list[ngh2.Event]) -> None:
        streams = self.streams
        for ev in events:
            t = type(ev)
            if t is _DataReceived:
                ev = cast(ngh2.DataReceived, ev)
                sid = ev.stream_id
                stream = streams.get(sid)
                data = ev.data
                if stream is None:
                    if data:
                        self.ack(len(data), sid)  # a stream we dropped: keep the window
                    continue
                if data:
                    stream.on_data(data)
                elif not ev.end_stream:
                    self.glitch("empty DATA frame")
                if ev.end_stream:
                    stream.on_end()
            elif t is _RequestReceived:
                ev = cast(ngh2.RequestReceived, ev)
                self.on_request(ev.stream_id, ev.headers, ev.end_stream)
            elif t is _ResponseReceived:
                ev = cast(ngh2.ResponseReceived, ev)
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream.on_response(list(ev.headers))
                    if ev.end_stream and not stream.lost:
                        stream.on_end()
            elif t is _StreamClosed:
                ev = cast(ngh2.StreamClosed, ev)
                stream = streams.get(ev.stream_id)
                if stream is not None:
                    stream.on_closed(ev.error_code)
            elif t is _WindowUpdated:
                pass  # libnghttp2 sends what waits; flush() resumes the producers
            else:
                self.other_event(ev)
            if self.closed:
                return

    def other_event(self, ev: ngh2.Event) -> None:
        t = type(ev)
        streams = self.streams
        if t is ngh2.StreamReset:
            ev = cast(ngh2.StreamReset, ev)
            stream = streams.get(ev.stream_id)
            if stream is not None:
                self.stream_reset_by_peer(stream)
                stream.on_reset(ev.error_code)
        elif t is ngh2.TrailersReceived:
            ev = cast(ngh2.TrailersReceived, ev)
            stream = streams.get(ev.stream_id)
            if stream is not None:
                stream.on_trailers(list(ev.headers))
                stream.on_end()  # trailers end the stream
        elif t is ngh2.InformationalResponseReceived:
            ev = cast(ngh2.InformationalResponseReceived, ev)
            stream = streams.get(ev.stream_id)
            if stream is not None:
                stream.on_informational(list(ev.headers))
        elif t is ngh2.SettingsReceived:
            self.glitch("SETTINGS frame")
            self.peer_settings = True
            self.settings_changed()
        elif t is ngh2.PingReceived:
            self.glitch("PING frame")
        elif t is ngh2.GoAwayReceived:
            ev = cast(ngh2.GoAwayReceived, ev)
            self.goaway(ev.error_code, ev.last_stream_id)
        elif t is ngh2.ConnectionClosed:
            ev = cast(ngh2.ConnectionClosed, ev)
            if ev.error_code:
                log.info(
                    "[%s] HTTP/2 connection closed: %s %s",
                    self.cid,
                    _code_name(ev.error_code),
                    ev.debug_data.decode("latin-1"),
                )
            self.close_transport()
        elif t is ngh2.PriorityUpdateReceived:
            self.glitch("PRIORITY_UPDATE frame", 0.1)

    def on_request(self, sid: int, headers: tuple[Header, ...], end_stream: bool) -> None:
        """A request's HEADERS arrived (server side)."""

    def settings_changed(self) -> None:
        """The peer's SETTINGS arrived (or changed)."""

    def stream_reset_by_peer(self, stream: H2Stream) -> None:
        self.glitch("stream reset by the peer")

    def goaway(self, code: int, last_stream_id: int) -> None:
        """The peer sent GOAWAY: streams above ``last_stream_id`` were not processed
        (libnghttp2 closes ours with REFUSED_STREAM); the others may finish (RFC 9113 6.8)."""
        self.goaway_received = True
        if code != 0:
            log.info("[%s] peer sent GOAWAY %s", self.cid, _code_name(code))
            self.close_transport()
            return
        if not self.streams:
            self.close_transport()

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
        self.window_blocked.discard(stream)
        if not self.streams and (self.goaway_sent or self.goaway_received):
            self.close_transport()

    def protocol_error(self, exc: ngh2.NGH2Error) -> None:
        if isinstance(exc, ngh2.DenialOfServiceError):
            log.warning("[%s] HTTP/2 peer over a limit: %s", self.cid, exc)
        else:
            log.info("[%s] HTTP/2 protocol error: %s", self.cid, exc)
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
                self.conn.terminate_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            except ngh2.NGH2Error:
                pass
            self.close_transport()

    def send_goaway(self) -> None:
        """A graceful GOAWAY (RFC 9113 6.8) naming the last stream taken: those finish, newer
        ones are refused."""
        if self.goaway_sent or self.closed or self.transport is None:
            return
        self.goaway_sent = True
        try:
            self.conn.send_goaway(ErrorCodes.NO_ERROR)
        except ngh2.NGH2Error:
            pass
        self.flush()
        if not self.streams:
            self.close_transport()

    def close_transport(self) -> None:
        if self.closed:
            return
        try:
            data = self.conn.data_to_send()  # a GOAWAY libnghttp2 prepared, say
        except ngh2.NGH2Error:
            data = b""
        self.closed = True
        transport = self.transport
        if transport is not None:
            if data and not transport.is_closing():
                transport.write(data)
            transport.close()
        for stream in list(self.streams.values()):
            stream.connection_gone(None)
        self.streams.clear()

    # ------------------------------------------------------------------ the peer's settings
    def peer_max_concurrent_streams(self) -> int:
        """What the peer lets us open (100 until its SETTINGS say, as libnghttp2 assumes)."""
        if not self.peer_settings:
            return 100
        return self.conn.remote_settings.get(_MAX_CONCURRENT, MAX_STREAM_ID)

    def peer_connect_protocol(self) -> bool:
        return bool(self.conn.remote_settings.get(_CONNECT_PROTOCOL, 0))

    def next_stream_id(self) -> int:
        return self.conn.next_stream_id


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)
