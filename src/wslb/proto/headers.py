"""Header rewriting at the proxy boundary (RFC 9110 7.6.1), on bytes.

Hop-by-hop fields are dropped in both directions: the fixed set below plus every field the
``Connection`` header names. ``Host`` is kept as the client sent it. ``X-Forwarded-For``,
``-Proto`` and ``-Port`` are set from the downstream connection; a client's own values are kept
(and ``X-Forwarded-For`` appended to) only when the peer is a trusted proxy.
"""

from __future__ import annotations

from wslb.proto.http1 import Headers

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port"})
# Response fields that wslb sets itself from the framing it chooses.
_RESPONSE_FRAMING = HOP_BY_HOP | {b"content-length"}


def connection_tokens(connection: bytes) -> frozenset[bytes]:
    """Lowercase tokens of a Connection header value (``b"keep-alive, Upgrade"``)."""
    if not connection:
        return frozenset()
    return frozenset(t.strip().lower() for t in connection.split(b",") if t.strip())


def forward_request_headers(
    headers: Headers,
    connection: bytes,
    *,
    client_ip: bytes,
    proto: bytes,
    port: bytes,
    trusted: bool,
) -> Headers:
    """The request headers to send upstream, without framing or connection management."""
    drop = HOP_BY_HOP | connection_tokens(connection) if connection else HOP_BY_HOP
    out: Headers = []
    xff: bytes | None = None
    xfproto: bytes | None = None
    xfport: bytes | None = None
    for name, value in headers:
        lname = name.lower()
        if lname in drop or lname == b"content-length":
            continue
        if lname in _FORWARDED:
            if trusted:
                if lname == b"x-forwarded-for":
                    xff = value if xff is None else xff + b", " + value
                elif lname == b"x-forwarded-proto":
                    xfproto = value
                else:
                    xfport = value
            continue
        out.append((name, value))
    out.append((b"X-Forwarded-For", client_ip if xff is None else xff + b", " + client_ip))
    out.append((b"X-Forwarded-Proto", xfproto or proto))
    out.append((b"X-Forwarded-Port", xfport or port))
    return out


def forward_response_headers(headers: Headers) -> Headers:
    """Response headers to relay, without hop-by-hop fields and framing wslb re-decides."""
    connection = b""
    for name, value in headers:
        if name.lower() == b"connection":
            connection = value if not connection else connection + b"," + value
    drop = _RESPONSE_FRAMING | connection_tokens(connection) if connection else _RESPONSE_FRAMING
    return [(n, v) for n, v in headers if n.lower() not in drop]
