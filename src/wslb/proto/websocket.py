"""WebSocket opening handshake checks (RFC 6455 section 4), and frame boundaries, sans I/O.

wslb does not parse messages in the data path: after a ``101 Switching Protocols`` both
connections become a byte tunnel. What it checks is the handshake, so that nothing that is not a
WebSocket handshake is ever tunnelled: GET, ``Upgrade: websocket``, ``Connection: upgrade``,
``Sec-WebSocket-Version: 13`` (else 426 naming the version, RFC 6455 4.4) and a key that is the
base64 of 16 bytes (else 400).

On the endpoint-to-client direction it follows frame *headers* only (:class:`FrameTracker`):
where each frame ends, never what it carries, so that a Close frame can be put between two
frames when an endpoint drains (a control frame may come between the fragments of a message,
RFC 6455 5.4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from wslb.errors import BadRequest, HTTPError
from wslb.proto.http1 import RequestHead

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class UpgradeRequired(HTTPError):
    status = 426
    reason = "Upgrade Required"


def is_websocket(head: RequestHead) -> bool:
    """True for a request asking to upgrade to WebSocket (before validation)."""
    up = head.upgrade
    return up is not None and b"websocket" in up.lower()


def validate_handshake(head: RequestHead) -> None:
    """Raise an HTTPError unless ``head`` is a well-formed WebSocket opening handshake."""
    if head.method != b"GET":
        raise BadRequest("WebSocket upgrade on a method other than GET")
    if head.version not in ("1.1", "2"):  # "2": an extended CONNECT (RFC 8441), mapped
        raise BadRequest("WebSocket upgrade needs HTTP/1.1")
    if head.has_body:
        raise BadRequest("WebSocket handshake with a body")
    version = head.header(b"sec-websocket-version")
    if version is None or version.strip() != b"13":
        raise UpgradeRequired(
            "unsupported Sec-WebSocket-Version", headers=[(b"Sec-WebSocket-Version", b"13")]
        )
    key = head.header(b"sec-websocket-key")
    if key is None:
        raise BadRequest("WebSocket handshake without Sec-WebSocket-Key")
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("malformed Sec-WebSocket-Key") from None
    if len(raw) != 16:
        raise BadRequest("Sec-WebSocket-Key is not 16 bytes")


def accept_value(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


class FrameTracker:
    """Where the frames of a byte stream end. ``remaining`` counts the bytes of the current
    frame still to come (header included once the header is complete); ``head`` holds the
    first bytes of a header split across reads."""

    __slots__ = ("head", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.head = b""

    @property
    def at_boundary(self) -> bool:
        return self.remaining == 0 and not self.head

    def feed(self, data: bytes) -> None:
        """Account for all of ``data``."""
        rem = self.remaining
        if rem >= len(data):  # inside a frame: the common case for large messages
            self.remaining = rem - len(data)
        else:
            self._walk(data, False)

    def split(self, data: bytes) -> int:
        """The offset in ``data`` just after the first frame that ends in it (what is before
        it is accounted for), or -1 if none does (all of it is)."""
        rem = self.remaining
        if rem > len(data):
            self.remaining = rem - len(data)
            return -1
        if rem > 0:
            self.remaining = 0
            return rem
        return self._walk(data, True)  # -1 for empty ``data``: the loop does not run

    def _walk(self, data: bytes, stop: bool) -> int:
        n = len(data)
        pos = self.remaining
        self.remaining = 0
        while pos < n:
            head = self.head
            avail = head + data[pos : pos + 14] if head else data[pos : pos + 14]
            if len(avail) < 2:
                self.head = avail
                return -1
            b1 = avail[1]
            size = b1 & 0x7F
            hlen = 2 if size < 126 else 4 if size == 126 else 10
            if b1 & 0x80:
                hlen += 4  # masking key
            if len(avail) < hlen:
                self.head = avail
                return -1
            if size == 126:
                size = int.from_bytes(avail[2:4], "big")
            elif size == 127:
                size = int.from_bytes(avail[2:10], "big")
            end = pos - len(head) + hlen + size  # where this frame ends, in ``data``
            self.head = b""
            if end > n:
                self.remaining = end - n
                return -1
            pos = end
            if stop:
                return pos
        return -1


def close_frame(code: int, reason: str = "") -> bytes:
    """An unmasked Close frame (from the server side), RFC 6455 5.5.1."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123]
    return bytes((0x88, len(payload))) + payload
