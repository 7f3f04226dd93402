"""Header rewriting at the proxy boundary (RFC 9110 7.6.1), on bytes.

Hop-by-hop fields are dropped in both directions: the fixed set (``HOP_BY_HOP``) plus every
field the ``Connection`` header names. ``Host`` is kept as the client sent it.
``X-Forwarded-For``, ``-Proto`` and ``-Port`` are set from the downstream connection; a client's
own values are kept (and ``X-Forwarded-For`` appended to) only when the peer is a trusted proxy.

The parsers already sorted each field while parsing (``head.forward``), so the common case here
is a list copy plus three appends; only a ``Connection`` header naming other fields costs a pass.
"""

from __future__ import annotations

from wslb.proto.http1 import HOP_BY_HOP, Lines, RequestHead, ResponseHead

_NO_TOKENS: frozenset[bytes] = frozenset()
_COMMON = {
    b"keep-alive": frozenset({b"keep-alive"}),
    b"close": frozenset({b"close"}),
    b"upgrade": frozenset({b"upgrade"}),
}

__all__ = [
    "HOP_BY_HOP",
    "connection_tokens",
    "forward_request_headers",
    "forward_response_headers",
]


def connection_tokens(connection: bytes) -> frozenset[bytes]:
    """Lowercase tokens of a Connection header value (``b"keep-alive, Upgrade"``)."""
    if not connection:
        return _NO_TOKENS
    common = _COMMON.get(connection)
    if common is not None:
        return common
    return frozenset(t.strip().lower() for t in connection.split(b",") if t.strip())


def _extra_tokens(connection: bytes) -> frozenset[bytes]:
    """Fields the Connection header names beyond the standard hop-by-hop ones."""
    if not connection:
        return _NO_TOKENS
    return connection_tokens(connection) - HOP_BY_HOP


def _without(lines: Lines, names: frozenset[bytes]) -> Lines:
    return [line for line in lines if line[: line.index(b":")].lower() not in names]


def forward_request_headers(
    head: RequestHead, *, client_ip: bytes, proto: bytes, port: bytes, trusted: bool
) -> Lines:
    """The request header lines to send upstream, without framing or connection management."""
    extra = _extra_tokens(head.connection)
    out = _without(head.forward, extra) if extra else head.forward.copy()
    if trusted:
        xff = head.xff
        out.append(
            b"X-Forwarded-For: %s\r\n" % (client_ip if xff is None else xff + b", " + client_ip)
        )
        out.append(b"X-Forwarded-Proto: %s\r\n" % (head.xfproto or proto))
        out.append(b"X-Forwarded-Port: %s\r\n" % (head.xfport or port))
    else:
        out.append(b"X-Forwarded-For: " + client_ip + b"\r\n")
        out.append(b"X-Forwarded-Proto: " + proto + b"\r\n")
        out.append(b"X-Forwarded-Port: " + port + b"\r\n")
    return out


def forward_response_headers(head: ResponseHead) -> Lines:
    """Response header lines to relay: no hop-by-hop fields and no framing, which wslb
    re-decides. The result may be appended to."""
    extra = _extra_tokens(head.connection)
    return _without(head.forward, extra) if extra else head.forward
