"""HTTP/2 header lists (RFC 9113 section 8) <-> wslb's heads, and RFC 8441 <-> RFC 6455, sans I/O.

The HTTP/2 library (libnghttp2, see ``server/core/h2session.py``) does the framing, HPACK, flow
control, the stream states and RFC 9113 8's checks of a message; what is left is mapping its
header lists onto the heads the proxy works with (:class:`RequestHead` and
:class:`ResponseHead`, whose ``forward`` fields are serialised HTTP/1.1 lines) and back:

- requests: ``:method``/``:path``/``:authority`` become method, target and ``Host``; cookie
  crumbs are joined with ``"; "`` (RFC 9113 8.2.3); a body with no ``content-length`` is
  forwarded chunked to an HTTP/1.1 endpoint;
- an extended CONNECT with ``:protocol websocket`` (RFC 8441 section 4) becomes a WebSocket
  opening handshake (``GET`` + ``Upgrade: websocket``) whose ``Sec-WebSocket-Key`` wslb makes;
- responses: the status and the fields, minus connection-specific ones (RFC 9113 8.2.2), which
  HTTP/2 forbids.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence

from wslb.caches import remember
from wslb.errors import BadGateway, BadRequest, HeaderFieldsTooLarge, HTTPError, URITooLong
from wslb.proto.http1 import (
    _CONTENT_LENGTH,
    _EXPECT,
    _HOST,
    _KINDS,
    _XFF,
    _XFPORT,
    _XFPROTO,
    HOP_BY_HOP,
    REASON_PHRASES,
    Lines,
    RequestHead,
    ResponseHead,
)

Header = tuple[bytes, bytes]

# RFC 9113 8.2.2: connection-specific fields never appear in HTTP/2 messages ("te" is allowed
# with the value "trailers" only, which libnghttp2 checks on what it receives).
CONNECTION_SPECIFIC = HOP_BY_HOP | {b"host"}

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the client connection preface (RFC 9113 3.4)


class NotImplementedProtocol(HTTPError):
    status = 501
    reason = "Not Implemented"


def _content_length(value: bytes, error: type[HTTPError]) -> int:
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        raise error("invalid content-length")
    return int(value)


def request_head(
    headers: Sequence[Header],
    *,
    end_stream: bool,
    max_uri_size: int = 8192,
    max_headers: int = 100,
) -> tuple[RequestHead, bytes | None]:
    """The head of an HTTP/2 request; and, for an extended CONNECT for WebSocket, the
    ``Sec-WebSocket-Key`` made for the HTTP/1.1 handshake it becomes (else None). The limits
    are the listener's, as for HTTP/1.1: a longer ``:path`` is a 414, more fields a 431 (the
    size of the whole list is bounded by SETTINGS_MAX_HEADER_LIST_SIZE already)."""

    head = RequestHead()
    head.version = "2"
    fields = head.headers
    forward = head.forward
    method = path = authority = protocol = None
    cookies: list[bytes] = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":
                protocol = value
            continue  # :scheme: the listener says what the client used
        if name == b"cookie":
            cookies.append(value)
            continue
        fields.append((name, value))
        kind = _KINDS.get(name)
        if kind is None:
            forward.append(b"".join((name, b": ", value, b"\r\n")))
        elif kind == _HOST:
            if authority is None:
                authority = value
            elif value != authority:
                raise BadRequest("host and :authority differ")
        elif kind == _CONTENT_LENGTH:
            head.content_length = _content_length(value, BadRequest)
        elif kind == _EXPECT:
            head.expect_continue = value.strip().lower() == b"100-continue"
            forward.append(b"".join((name, b": ", value, b"\r\n")))
        elif kind == _XFF:
            head.xff = value if head.xff is None else head.xff + b", " + value
        elif kind == _XFPROTO:
            head.xfproto = value
        elif kind == _XFPORT:
            head.xfport = value
        # other connection-specific fields (te: trailers) are not forwarded
    if len(fields) + len(cookies) > max_headers:
        raise HeaderFieldsTooLarge(f"over {max_headers} header fields")
    if cookies:
        joined = b"; ".join(cookies)
        fields.append((b"cookie", joined))
        forward.append(b"cookie: " + joined + b"\r\n")
    if method is None:
        raise BadRequest("no :method")
    if authority is not None:
        head.host = authority.decode("latin-1")
        forward.insert(0, b"host: " + authority + b"\r\n")
    key = None
    if method == b"CONNECT":
        if protocol is None:
            head.method = method  # a plain CONNECT: refused by the proxy (405)
            return head, None
        if protocol.lower() != b"websocket":
            raise NotImplementedProtocol(f"extended CONNECT for {protocol[:40]!r}")
        # RFC 8441 5: the WebSocket opening handshake, in HTTP/1.1 terms.
        method = b"GET"
        key = base64.b64encode(os.urandom(16))
        head.upgrade = b"websocket"
        head.connection = b"upgrade"
        fields.append((b"sec-websocket-key", key))
        forward.append(b"sec-websocket-key: " + key + b"\r\n")
    elif protocol is not None:
        raise BadRequest(":protocol on a method other than CONNECT")
    if path is None or not path:
        raise BadRequest("no :path")
    if len(path) > max_uri_size:
        raise URITooLong(f"request target over {max_uri_size} bytes")
    head.method = method
    head.target = path
    if path[:1] == b"/":
        p, _, query = path.partition(b"?")
        head.path = p.decode("latin-1")
        head.query = query
    elif path == b"*" and method == b"OPTIONS":
        head.path = "*"
    else:
        raise BadRequest("invalid :path")
    # A body whose length is not announced goes chunked to an HTTP/1.1 endpoint.
    head.chunked = not end_stream and head.content_length is None and key is None
    return head, key


def response_headers(status: int, lines: Lines, length: int | None = None) -> list[Header]:
    """An HTTP/2 response header list from a status and serialised fields."""
    out: list[Header] = [(b":status", b"%d" % status)]
    out += fields_from_lines(lines)
    if length is not None:
        out.append((b"content-length", b"%d" % length))
    return out


def _field(line: bytes, skip: frozenset[bytes]) -> Header | None:
    i = line.find(b":")
    name = line[:i].lower()
    if name in skip or name == b"content-length":
        return None
    return (name, line[i + 1 : -2].strip())


# Response fields repeat from one response to the next (Server, Content-Type, Vary, a Date for
# a second): short lines are converted once. Bounded: emptied when full.
_FIELDS: dict[bytes, Header | None] = {}
_FIELDS_MAX = 1024
_FIELD_LINE_MAX = 128  # longer lines (cookies, tokens) are converted each time
_MISSING: Header = (b"", b"")


def fields_from_lines(lines: Lines, skip: frozenset[bytes] = CONNECTION_SPECIFIC) -> list[Header]:
    """Serialised HTTP/1.1 fields as an HTTP/2 field list: names lowercase, connection-specific
    fields (and whatever else ``skip`` names) left out."""
    out: list[Header] = []
    if skip is not CONNECTION_SPECIFIC:
        for line in lines:
            f = _field(line, skip)
            if f is not None:
                out.append(f)
        return out
    cache = _FIELDS
    for line in lines:
        f = cache.get(line, _MISSING)
        if f is _MISSING:
            f = _field(line, skip)
            if len(line) <= _FIELD_LINE_MAX:
                remember(cache, line, f, _FIELDS_MAX)
        if f is not None:
            out.append(f)
    return out


_WS_SKIP = CONNECTION_SPECIFIC | {b"sec-websocket-key", b"sec-websocket-accept"}


def request_headers(
    method: bytes, target: bytes, scheme: bytes, lines: Lines, length: int | None, websocket: bool
) -> list[Header]:
    """The HTTP/2 header list of a request to an endpoint. ``Host`` becomes ``:authority``; a
    WebSocket handshake becomes an extended CONNECT (RFC 8441 4) and loses its key."""
    authority = b""
    for line in lines:
        if line[:5].lower() == b"host:":
            authority = line[5:-2].strip()
            break
    if websocket:
        out: list[Header] = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", scheme),
            (b":authority", authority),
            (b":path", target),
        ]
        out += fields_from_lines(lines, _WS_SKIP)
        return out
    out = [(b":method", method), (b":scheme", scheme), (b":authority", authority)]
    if method != b"CONNECT":
        out.append((b":path", target))
    out += fields_from_lines(lines)
    if length is not None:
        out.append((b"content-length", b"%d" % length))
    return out


def response_head(headers: Sequence[Header]) -> ResponseHead:
    """The head of an HTTP/2 response from an endpoint."""
    head = ResponseHead()
    forward = head.forward
    status = None
    for name, value in headers:
        if name[:1] == b":":
            if name == b":status":
                status = value
            continue
        if name == b"content-length":
            head.content_length = _content_length(value, BadGateway)
        elif name not in CONNECTION_SPECIFIC:
            forward.append(b"".join((name, b": ", value, b"\r\n")))
    if status is None or not status.isdigit() or len(status) != 3:
        raise BadGateway("response without a valid :status")
    head.status = int(status)
    head.reason = REASON_PHRASES.get(head.status, b"Unknown")
    # The body ends with the stream, never with the connection.
    head.chunked = head.content_length is None
    return head


def trailer_lines(headers: Sequence[Header]) -> Lines:
    return [
        b"".join((n, b": ", v, b"\r\n"))
        for n, v in headers
        if n[:1] != b":" and n not in CONNECTION_SPECIFIC
    ]
