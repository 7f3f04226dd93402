"""WebSocket opening handshake checks (RFC 6455 section 4), sans I/O.

wslb never parses frames in the data path: after a ``101 Switching Protocols`` both connections
become a byte tunnel. What it checks is the handshake, so that nothing that is not a WebSocket
handshake is ever tunnelled: GET, ``Upgrade: websocket``, ``Connection: upgrade``,
``Sec-WebSocket-Version: 13`` (else 426 naming the version, RFC 6455 4.4) and a key that is the
base64 of 16 bytes (else 400).
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
