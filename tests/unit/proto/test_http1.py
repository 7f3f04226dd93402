"""HTTP/1.1 parsing with httptools: heads, bodies, limits, upgrades, errors as statuses."""

from __future__ import annotations

import pytest

from wslb.errors import (
    BadGateway,
    BadRequest,
    HeaderFieldsTooLarge,
    URITooLong,
    VersionNotSupported,
)
from wslb.proto.http1 import (
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    chunk_header,
    field,
    request_head_bytes,
    response_head_bytes,
)


class Sink:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.bodies: list[bytes] = []
        self.ends = 0
        self.begins = 0

    def on_request_begin(self) -> None:
        self.begins += 1

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, data: bytes) -> None:
        self.bodies.append(data)

    def on_request_end(self) -> None:
        self.ends += 1


def parse(data: bytes, **limits: int) -> tuple[Sink, int | None]:
    sink = Sink()
    p = RequestParser(sink, **limits)
    return sink, p.feed(data)


def test_simple_request() -> None:
    sink, off = parse(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: Example.com\r\nX-A: 1\r\n\r\n")
    assert off is None
    h = sink.heads[0]
    assert (h.method, h.path, h.query, h.version, h.host) == (
        b"GET",
        "/a/b",
        b"x=1&y=2",
        "1.1",
        "Example.com",
    )
    assert h.headers == [(b"Host", b"Example.com"), (b"X-A", b"1")]
    assert h.keep_alive and not h.has_body and sink.ends == 1


def test_pipelined_requests_and_bodies() -> None:
    sink, _ = parse(
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert [h.path for h in sink.heads] == ["/1", "/2", "/3"]
    assert b"".join(sink.bodies) == b"abcdef"
    assert sink.heads[0].content_length == 3 and sink.heads[1].chunked
    assert not sink.heads[2].keep_alive
    assert sink.ends == 3


def test_byte_at_a_time() -> None:
    sink = Sink()
    p = RequestParser(sink)
    for b in b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi":
        assert p.feed(bytes([b])) is None
    assert sink.heads[0].path == "/x" and b"".join(sink.bodies) == b"hi"


def test_http10_defaults() -> None:
    sink, _ = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert sink.heads[0].version == "1.0" and not sink.heads[0].keep_alive
    sink, _ = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert sink.heads[0].keep_alive


def test_absolute_form_target_sets_host() -> None:
    sink, _ = parse(b"GET http://other.example:8080/p?q HTTP/1.1\r\nHost: a\r\n\r\n")
    h = sink.heads[0]
    assert h.host == "other.example:8080" and h.path == "/p" and h.target == b"/p?q"


def test_websocket_upgrade_stops_at_head() -> None:
    data = (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n\x81\x05hello"
    )
    sink, off = parse(data)
    assert off is not None and data[off:] == b"\x81\x05hello"
    assert sink.heads[0].upgrade == b"websocket"
    assert sink.heads[0].header(b"sec-websocket-version") == b"13"


def test_upgrade_header_without_connection_upgrade_is_not_an_upgrade() -> None:
    sink, off = parse(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
    assert off is None and sink.heads[0].upgrade is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GARBAGE\r\n\r\n", BadRequest),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            BadRequest,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            BadRequest,
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", VersionNotSupported),
        (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", BadRequest),
        # an empty host where the target has no authority of its own (nginx: 400)
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", BadRequest),
        (b"GET / HTTP/1.0\r\nHost: :80\r\n\r\n", BadRequest),
        (b"OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n", BadRequest),
    ],
)
def test_bad_requests(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse(data)


def test_absolute_form_authority_stands_for_an_empty_host() -> None:
    sink, _ = parse(b"GET http://app.example/x HTTP/1.1\r\nHost:\r\n\r\n")
    assert sink.heads[0].host == "app.example"


CHUNKED = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "size",
    [b"8000000000000000", b"FFFFFFFFFFFFFFFF", b"0000" + b"0" * 70 + b"ffffffffffffffff;e=1"],
)
def test_a_chunk_size_over_2_63_is_refused_before_any_of_it_goes_on(size: bytes) -> None:
    for pieces in (  # in the head's read; in a read of its own; cut inside the size line
        [CHUNKED + b"5\r\nhello\r\n" + size + b"\r\nabc"],
        [CHUNKED, b"5\r\nhello\r\n", size + b"\r\nabc"],
        [CHUNKED + b"5\r\nhel", b"lo\r\n" + size[:3], size[3:] + b"\r\nabc"],
    ):
        sink = Sink()
        p = RequestParser(sink)
        with pytest.raises(BadRequest, match="chunk size over"):
            for piece in pieces:
                p.feed(piece)
        # nothing of the huge chunk (what came in the head's read is checked with the head)
        assert b"".join(sink.bodies) in (b"", b"hello")


def test_chunk_sizes_up_to_2_63_minus_1_and_what_follows_a_chunked_body() -> None:
    sink = Sink()
    p = RequestParser(sink)
    p.feed(CHUNKED + b"7FFFFFFFFFFFFFFF;ext=1\r\nabc")
    assert sink.bodies == [b"abc"]
    # a complete body, its trailers and a pipelined request: read as llhttp reads them
    sink = Sink()
    p = RequestParser(sink)
    body = b"3\r\nabc\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nX-T: 8000000000000000\r\n\r\n"
    p.feed(CHUNKED + body + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    p.feed(CHUNKED + body[:5])
    p.feed(body[5:])
    assert sink.ends == 3 and [h.path for h in sink.heads] == ["/up", "/next", "/up"]
    assert b"".join(sink.bodies) == (b"abc" + b"x" * 16) * 2
    with pytest.raises(BadRequest, match="chunk-size line over"):
        RequestParser(Sink()).feed(CHUNKED + b"1;" + b"e" * 5000)


def test_limits() -> None:
    with pytest.raises(URITooLong):
        parse(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", max_uri_size=50)
    with pytest.raises(HeaderFieldsTooLarge):
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 200 + b"\r\n\r\n", max_header_size=100)
    with pytest.raises(HeaderFieldsTooLarge):
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 20 + b"\r\n", max_headers=10)


def test_unfinished_header_is_bounded_while_it_arrives() -> None:
    sink = Sink()
    p = RequestParser(sink, max_uri_size=100, max_header_size=1000)
    p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
    with pytest.raises(HeaderFieldsTooLarge):
        for _ in range(100):
            p.feed(b"a" * 100)  # never a complete header line


class RSink:
    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.body = b""
        self.ends = 0

    def on_response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)

    def on_response_body(self, data: bytes) -> None:
        self.body += data

    def on_response_end(self) -> None:
        self.ends += 1


def test_response_parsing() -> None:
    s = RSink()
    p = ResponseParser(s)
    assert (
        p.feed(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        is None
    )
    assert [h.status for h in s.heads] == [100, 200]
    assert s.heads[1].chunked and s.heads[1].content_length is None and s.body == b"abc"
    assert s.ends == 2


def test_101_response_stops_at_head() -> None:
    s = RSink()
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"
    off = ResponseParser(s).feed(data)
    assert off is not None and data[off:] == b"\x81\x00"


def test_bad_responses_are_bad_gateway() -> None:
    with pytest.raises(BadGateway):
        ResponseParser(RSink()).feed(b"not http\r\n\r\n")
    with pytest.raises(BadGateway):
        ResponseParser(RSink()).feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )


def test_serialisation() -> None:
    assert (
        request_head_bytes(b"GET", b"/x", [field(b"Host", b"a")])
        == b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert response_head_bytes(404, b"Not Found", []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert chunk_header(255) == b"ff\r\n"
