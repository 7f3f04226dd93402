"""HTTP/2 header lists <-> wslb heads, RFC 8441 <-> RFC 6455, and HTTP/1.1 trailers."""

from __future__ import annotations

import base64

import pytest

from wslb.errors import BadGateway, BadRequest, HeaderFieldsTooLarge, URITooLong
from wslb.proto import http2
from wslb.proto.http1 import RequestParser, ResponseParser, find_field
from wslb.proto.http2 import (
    NotImplementedProtocol,
    fields_from_lines,
    request_head,
    request_headers,
    response_head,
    response_headers,
    trailer_lines,
)
from wslb.proto.websocket import validate_handshake

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"app.example:8443")]


def test_request_head_from_pseudo_headers_and_fields() -> None:
    head, key = request_head(
        [
            *BASE,
            (b":path", b"/a/b?x=1&y=2"),
            (b"cookie", b"a=1"),
            (b"user-agent", b"t"),
            (b"cookie", b"b=2"),
            (b"x-forwarded-for", b"9.9.9.9"),
            (b"te", b"trailers"),
        ],
        end_stream=True,
    )
    assert key is None
    assert (head.method, head.target, head.path, head.query) == (
        b"GET",
        b"/a/b?x=1&y=2",
        "/a/b",
        b"x=1&y=2",
    )
    assert head.host == "app.example:8443" and head.version == "2"
    assert head.header(b"cookie") == b"a=1; b=2"  # crumbs joined (RFC 9113 8.2.3)
    assert head.forward[0] == b"host: app.example:8443\r\n"
    assert b"cookie: a=1; b=2\r\n" in head.forward
    assert not any(line.startswith((b"te:", b"x-forwarded")) for line in head.forward)
    assert head.xff == b"9.9.9.9"
    assert not head.has_body and not head.chunked


def test_request_body_of_unknown_length_is_chunked_towards_http11() -> None:
    head, _ = request_head(
        [*BASE[:1], (b":method", b"POST"), *BASE[1:], (b":path", b"/")], end_stream=False
    )
    assert head.chunked and head.content_length is None
    head, _ = request_head(
        [(b":method", b"POST"), *BASE[1:], (b":path", b"/"), (b"content-length", b"12")],
        end_stream=False,
    )
    assert not head.chunked and head.content_length == 12


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([*BASE], BadRequest),  # no :path
        ([*BASE, (b":path", b"x")], BadRequest),
        ([*BASE, (b":path", b"/"), (b"host", b"other.example")], BadRequest),
        ([*BASE, (b":path", b"/"), (b"content-length", b"1x")], BadRequest),
        ([*BASE, (b":path", b"/"), (b":protocol", b"websocket")], BadRequest),  # not CONNECT
        (
            [(b":method", b"CONNECT"), *BASE[1:], (b":path", b"/"), (b":protocol", b"smtp")],
            NotImplementedProtocol,
        ),
    ],
)
def test_malformed_requests(headers: list[tuple[bytes, bytes]], error: type[Exception]) -> None:
    with pytest.raises(error):
        request_head(headers, end_stream=True)


def test_listener_limits_apply_as_over_http11() -> None:
    path = [(b":path", b"/" + b"a" * 99)]
    request_head([*BASE, *path], end_stream=True, max_uri_size=100)
    with pytest.raises(URITooLong):
        request_head([*BASE, (b":path", b"/" + b"a" * 100)], end_stream=True, max_uri_size=100)
    fields = [(b"x-%d" % i, b"v") for i in range(10)]
    request_head([*BASE, *path, *fields], end_stream=True, max_headers=10)
    with pytest.raises(HeaderFieldsTooLarge):
        request_head([*BASE, *path, *fields, (b"x-more", b"v")], end_stream=True, max_headers=10)


def test_extended_connect_becomes_a_websocket_handshake() -> None:
    head, key = request_head(
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            *BASE[1:],
            (b":path", b"/chat?room=1"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-protocol", b"chat"),
        ],
        end_stream=False,
    )
    assert key is not None and len(base64.b64decode(key)) == 16
    assert head.method == b"GET" and head.upgrade == b"websocket"
    assert head.header(b"sec-websocket-key") == key
    assert not head.chunked  # the stream's bytes are the WebSocket's, not a body
    validate_handshake(head)  # what an HTTP/1.1 endpoint will be sent is a valid handshake
    _, key2 = request_head(
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *BASE[1:], (b":path", b"/")],
        end_stream=False,
    )
    assert key2 != key  # a fresh key each time


def test_plain_connect_is_left_for_the_proxy_to_refuse() -> None:
    head, key = request_head(
        [(b":method", b"CONNECT"), (b":authority", b"x:443")], end_stream=False
    )
    assert head.method == b"CONNECT" and key is None


def test_response_headers_drop_connection_specific_fields() -> None:
    lines = [
        b"Content-Type: text/plain\r\n",
        b"Connection: close\r\n",
        b"Keep-Alive: timeout=5\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Set-Cookie: a=1\r\n",
        b"Set-Cookie: b=2\r\n",
        b"Content-Length: 99\r\n",
    ]
    assert response_headers(200, lines, 5) == [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"5"),
    ]


def test_request_headers_towards_an_http2_endpoint() -> None:
    lines = [b"host: app.example\r\n", b"accept: */*\r\n", b"X-Forwarded-For: 1.2.3.4\r\n"]
    assert request_headers(b"POST", b"/p?q", b"http", lines, 3, websocket=False) == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"app.example"),
        (b":path", b"/p?q"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"content-length", b"3"),
    ]
    ws = request_headers(
        b"GET",
        b"/ws",
        b"https",
        [*lines, b"Sec-WebSocket-Key: abc\r\n", b"Sec-WebSocket-Version: 13\r\n"],
        None,
        websocket=True,
    )
    assert ws[:5] == [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":authority", b"app.example"),
        (b":path", b"/ws"),
    ]
    assert (b"sec-websocket-version", b"13") in ws
    assert not any(name == b"sec-websocket-key" for name, _ in ws)  # RFC 8441 5


def test_response_head_from_an_http2_endpoint() -> None:
    rh = response_head(
        [(b":status", b"404"), (b"content-length", b"7"), (b"x-a", b"1"), (b"connection", b"x")]
    )
    assert (rh.status, rh.reason, rh.content_length) == (404, b"Not Found", 7)
    assert rh.forward == [b"x-a: 1\r\n"] and not rh.chunked
    streamed = response_head([(b":status", b"200")])
    # no length: the body ends with the stream (never "until close")
    assert streamed.content_length is None and streamed.chunked
    for bad in ([(b"x", b"y")], [(b":status", b"2000")], [(b":status", b"20x")]):
        with pytest.raises(BadGateway):
            response_head(bad)


def test_trailers_both_ways() -> None:
    assert trailer_lines([(b"grpc-status", b"0"), (b"connection", b"x")]) == [b"grpc-status: 0\r\n"]
    assert fields_from_lines([b"Grpc-Status: 0\r\n"]) == [(b"grpc-status", b"0")]


def test_response_fields_converted_once_and_the_cache_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http2, "_FIELDS", {})
    monkeypatch.setattr(http2, "_FIELDS_MAX", 4)
    long_cookie = b"Set-Cookie: s=" + b"x" * 200 + b"\r\n"
    lines = [b"Server: nginx\r\n", b"Connection: keep-alive\r\n", b"Content-Length: 2\r\n"]
    expected = [(b"server", b"nginx")]
    for _ in range(2):  # the second time from the cache: the same fields, the same skips
        assert fields_from_lines(lines) == expected
        assert fields_from_lines([*lines, long_cookie])[-1] == (b"set-cookie", long_cookie[12:-2])
    assert long_cookie not in http2._FIELDS and b"Server: nginx\r\n" in http2._FIELDS
    for i in range(10):
        assert fields_from_lines([b"X-N: %d\r\n" % i]) == [(b"x-n", b"%d" % i)]
        assert len(http2._FIELDS) <= 4
    # another skip set is not answered from the cache
    assert fields_from_lines([b"Server: nginx\r\n"], frozenset({b"server"})) == []


class _Sink:
    def __init__(self) -> None:
        self.heads: list[object] = []
        self.body = b""
        self.ended = 0

    def on_response_head(self, head: object) -> None:
        self.heads.append(head)

    def on_response_body(self, data: bytes) -> None:
        self.body += data

    def on_response_end(self) -> None:
        self.ended += 1

    on_request_head = on_response_head
    on_request_body = on_response_body
    on_request_end = on_response_end


def test_http11_response_trailers_are_collected_apart_from_the_head() -> None:
    sink = _Sink()
    parser = ResponseParser(sink)  # type: ignore[arg-type]
    parser.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Sum: 5\r\nGrpc-Status: 0\r\n\r\n"
    )
    head = parser.head
    assert head.forward == [b"X-Head: 1\r\n"]
    assert head.trailers == [b"X-Sum: 5\r\n", b"Grpc-Status: 0\r\n"]
    assert sink.body == b"hello" and sink.ended == 1
    assert find_field(head.trailers, b"x-sum") == b"5"
    assert find_field(head.forward, b"x-sum") is None


def test_http11_request_trailers_are_collected_apart_from_the_head() -> None:
    sink = _Sink()
    parser = RequestParser(sink)  # type: ignore[arg-type]
    parser.feed(
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 3\r\n\r\n"
    )
    head = sink.heads[0]
    assert head.trailers == [b"X-Sum: 3\r\n"]  # type: ignore[attr-defined]
    assert b"X-Sum: 3\r\n" not in head.forward  # type: ignore[attr-defined]
    assert sink.body == b"abc" and sink.ended == 1
