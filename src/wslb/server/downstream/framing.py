"""How an HTTP/1.1 connection frames the responses its exchanges hand it: Content-Length kept,
else chunked (HTTP/1.1 clients) or until close (HTTP/1.0 ones); a head waits for its first body
bytes (or the end of the upstream read) so that both usually leave in one write. Every write to
the client goes through the connection's :class:`~wslb.server.core.output.OutBuffer`."""

from __future__ import annotations

from wslb.proto.http1 import LAST_CHUNK, Lines, chunk_header, field, response_head_bytes
from wslb.server.core.output import OutBuffer

CRLF = b"\r\n"

SMALL = 4096  # a body piece this small is joined to its held head (cheaper than two writes)

# how the response body is framed towards the client
M_NONE, M_LENGTH, M_CHUNKED, M_CLOSE = range(4)


class ResponseFraming:
    """The response half of :class:`~wslb.server.downstream.h1.DownstreamHTTP`."""

    __slots__ = ("held", "linger", "mode")

    held: bytes  # a response head waiting for its first body bytes
    mode: int  # how the current response body is framed (M_*)
    linger: bool  # after this response: half-close and drain what the client still sends
    out: OutBuffer  # the connection's
    version11: bool
    closed: bool

    # The exchange says what to send; this connection frames it: Content-Length kept, else
    # chunked (HTTP/1.1) or until-close (HTTP/1.0). A head waits for its first body bytes (or
    # the end of the upstream read) so that both usually leave in one write.

    def start_response(
        self,
        status: int,
        reason: bytes,
        lines: list[bytes],
        length: int | None,
        no_body: bool,
        close: bool,
    ) -> bool:
        """Send (or hold) a response head; True when the connection must close after it."""
        if no_body:
            self.mode = M_NONE
            if length is not None and status != 204:
                lines.append(b"Content-Length: %d\r\n" % length)
        elif length is not None:
            self.mode = M_LENGTH
            lines.append(b"Content-Length: %d\r\n" % length)
        elif self.version11:
            self.mode = M_CHUNKED
            lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            self.mode = M_CLOSE
            close = True
        if close:
            lines.append(b"Connection: close\r\n")
        elif not self.version11:
            lines.append(b"Connection: keep-alive\r\n")
        head = response_head_bytes(status, reason, lines)
        if self.mode == M_NONE:
            self.write(head)
        else:
            self.held = head
        return close

    def response_data(self, data: bytes) -> None:
        if self.closed:
            return
        out = self.out
        mode = self.mode
        held = self.held
        if held:
            self.held = b""
            if mode != M_CHUNKED and len(data) <= SMALL:
                out.write(held + data)  # a small response: head and body in one piece
                return
            out.write(held)  # the batch of this loop iteration sends both together
        if mode == M_LENGTH or mode == M_CLOSE:
            out.write(data)
        elif mode == M_CHUNKED:
            out.write(chunk_header(len(data)))
            out.write(data)
            out.write(CRLF)

    def end_response(self, trailers: Lines | None = None) -> None:
        head = self.held
        if self.mode == M_CHUNKED:
            last = b"".join((b"0\r\n", *trailers, b"\r\n")) if trailers else LAST_CHUNK
            if head:
                self.held = b""
                self.write(head + last)
            else:
                self.write(last)
        elif head:
            self.held = b""
            self.write(head)
        self.mode = M_NONE

    def flush_response(self) -> None:
        if self.held:
            head, self.held = self.held, b""
            self.write(head)

    def interim_response(self, status: int, reason: bytes, lines: list[bytes]) -> None:
        if self.version11:
            self.write(response_head_bytes(status, reason, lines))

    def switching_protocols(self, reason: bytes, lines: list[bytes], upgrade: bytes) -> None:
        lines.append(b"Connection: Upgrade\r\n")
        lines.append(field(b"Upgrade", upgrade))
        self.write(response_head_bytes(101, reason, lines))

    def local_response(
        self,
        status: int,
        reason: bytes,
        lines: list[bytes],
        body: bytes,
        length: int,
        close: bool,
    ) -> None:
        if status not in (204, 304) or length:
            lines.append(b"Content-Length: %d\r\n" % length)
        if close:
            lines.append(b"Connection: close\r\n")
            self.linger = True
        self.mode = M_NONE
        self.held = b""
        self.write(response_head_bytes(status, reason, lines) + body)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.out.write(data)

    def writelines(self, data: tuple[bytes, ...]) -> None:
        if not self.closed:
            out = self.out
            for piece in data:
                out.write(piece)
