"""Engine.IO (v3 and v4) as far as sid-aware routing needs it, sans I/O.

Socket.IO clients start a session with a polling handshake (``GET ...?EIO=4&transport=polling``);
the server answers with an *open* packet ``0{"sid": ..., "upgrades": [...], ...}`` and every later
request of the session carries ``sid=...`` in its query (polling GET and POST, the WebSocket
upgrade). wslb rewrites the sid in that open packet to carry a tag naming the endpoint, and
strips the tag from later requests.

Polling payload framings:

* v4: packets separated by ``\\x1e`` (record separator); the open packet comes first.
* v3, text: ``<length>:<packet>`` repeated (``97:0{...}2:40``), length in characters.
* v3, binary (XHR2): ``\\x00`` + length as decimal digits in bytes 0-9 + ``\\xff`` + packet.

Specification: https://socket.io/docs/v4/engine-io-protocol/
"""

from __future__ import annotations

import json
from collections.abc import Callable

MAX_OPEN_PACKET = 4096  # an open packet is ~130 bytes; more means this is not one


class NotAnOpenPacket(ValueError):
    pass


def query_params(query: bytes) -> dict[bytes, bytes]:
    """The parameters wslb looks at (EIO, transport, sid); cheap, no percent-decoding needed:
    their values are plain tokens."""
    out: dict[bytes, bytes] = {}
    for part in query.split(b"&"):
        k, _, v = part.partition(b"=")
        if k in (b"EIO", b"transport", b"sid"):
            out[k] = v
    return out


def replace_sid(target: bytes, wire: bytes, sid: bytes) -> bytes:
    """The request target with ``sid=<wire>`` replaced by ``sid=<sid>``."""
    path, sep, query = target.partition(b"?")
    parts = [b"sid=" + sid if p == b"sid=" + wire else p for p in query.split(b"&")]
    return path + sep + b"&".join(parts)


def _rewrite_packet(packet: bytes, tag_sid: Callable[[str], str]) -> bytes:
    if not packet.startswith(b"0{"):
        raise NotAnOpenPacket("the first packet is not an open packet")
    try:
        data = json.loads(packet[1:])
    except (ValueError, UnicodeDecodeError):
        raise NotAnOpenPacket("the open packet is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        raise NotAnOpenPacket("the open packet has no sid")
    data["sid"] = tag_sid(data["sid"])
    return b"0" + json.dumps(data, separators=(",", ":")).encode()


def rewrite_open_packet(
    buf: bytes, version: bytes, tag_sid: Callable[[str], str], complete: bool
) -> tuple[bytes, int] | None:
    """Rewrite the sid of the open packet at the start of a polling handshake body.

    Returns ``(replacement, consumed)``: the first ``consumed`` bytes of ``buf`` are to be sent
    as ``replacement``. None: the open packet is not complete yet (and ``complete`` is False,
    i.e. more body is coming). Raises NotAnOpenPacket when ``buf`` does not hold one."""
    if version == b"3" and buf[:1] == b"\x00":
        end = buf.find(b"\xff")
        if end < 0:
            if len(buf) > 16:
                raise NotAnOpenPacket("bad binary length")
            return None if not complete else _fail()
        digits = buf[1:end]
        if not digits or any(d > 9 for d in digits):
            raise NotAnOpenPacket("bad binary length")
        n = int("".join(str(d) for d in digits))
        if len(buf) < end + 1 + n:
            return None if not complete else _fail()
        new = _rewrite_packet(buf[end + 1 : end + 1 + n], tag_sid)
        prefix = b"\x00" + bytes(int(c) for c in str(len(new))) + b"\xff"
        return prefix + new, end + 1 + n
    if version == b"3":
        colon = buf.find(b":")
        if colon < 0:
            if len(buf) > 10:
                raise NotAnOpenPacket("bad length prefix")
            return None if not complete else _fail()
        if not buf[:colon].isdigit():
            raise NotAnOpenPacket("bad length prefix")
        n = int(buf[:colon])
        if len(buf) < colon + 1 + n:
            return None if not complete else _fail()
        new = _rewrite_packet(buf[colon + 1 : colon + 1 + n], tag_sid)
        return str(len(new)).encode() + b":" + new, colon + 1 + n
    # v4: up to the first record separator, or the whole body
    end = buf.find(b"\x1e")
    if end < 0:
        if not complete:
            if len(buf) > MAX_OPEN_PACKET:
                raise NotAnOpenPacket("open packet too long")
            return None
        end = len(buf)
    return _rewrite_packet(buf[:end], tag_sid), end


def _fail() -> tuple[bytes, int]:
    raise NotAnOpenPacket("the body ended inside the open packet")


UNKNOWN_SESSION = b'{"code":1,"message":"Session ID unknown"}'
