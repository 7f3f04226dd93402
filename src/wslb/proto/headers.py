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
# what _extra_tokens answers for those values, made once (frozenset difference allocates)
_COMMON_EXTRA = {value: tokens - HOP_BY_HOP for value, tokens in _COMMON.items()}

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
    extra = _COMMON_EXTRA.get(connection)
    if extra is not None:
        return extra
    return connection_tokens(connection) - HOP_BY_HOP


def _without(lines: Lines, names: frozenset[bytes]) -> Lines:
    return [line for line in lines if line[: line.index(b":")].lower() not in names]


def forward_request_headers(
    head: RequestHead, *, client_ip: bytes, proto: bytes, port: bytes, trusted: bool
) -> Lines:
    """The request header lines to send upstream, without framing or connection management."""
    connection = head.connection
    extra = _extra_tokens(connection) if connection else _NO_TOKENS  # (no call for no header)
    if trusted:
        xff = head.xff
        if xff is not None:
            client_ip = xff + b", " + client_ip
        if head.xfproto:
            proto = head.xfproto
        if head.xfport:
            port = head.xfport
    # the three fields in one list display: one allocation, not a copy and three appends
    if extra:
        out = _without(head.forward, extra)
        out += (
            b"X-Forwarded-For: %s\r\n" % client_ip,
            b"X-Forwarded-Proto: %s\r\n" % proto,
            b"X-Forwarded-Port: %s\r\n" % port,
        )
        return out
    return [
        *head.forward,
        b"X-Forwarded-For: %s\r\n" % client_ip,
        b"X-Forwarded-Proto: %s\r\n" % proto,
        b"X-Forwarded-Port: %s\r\n" % port,
    ]


def forward_response_headers(head: ResponseHead) -> Lines:
    """Response header lines to relay: no hop-by-hop fields and no framing, which wslb
    re-decides. The result may be appended to."""
    connection = head.connection
    if not connection:
        return head.forward
    extra = _extra_tokens(connection)
    return _without(head.forward, extra) if extra else head.forward
