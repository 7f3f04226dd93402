"""Adversarial HTTP/1.1 requests through wslb to a backend that records every byte it gets.

Each case says what the client must get back (the statuses, in order) and how many requests the
backend must see. A rejected request reaches the backend not at all; an accepted one reaches it
re-serialised by wslb, so the backend never gets bytes wslb did not parse as one request (no
desynchronisation). The rules and their references are in docs/hardening.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httptools

from tests.integration.conftest import http_config
from tests.support.procs import Wslb, scaled
from tests.support.raw import RecordingBackend

H = b"Host: a\r\n"
WS = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@dataclass
class Case:
    name: str
    data: bytes
    statuses: list[int]  # the final statuses the client gets, in order
    backend_requests: int  # how many requests the backend sees


def post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST / HTTP/" + version + b"\r\n" + H + headers + b"\r\n" + body


CASES = [
    # ---- body framing (RFC 9112 6): ambiguity is a 400 and a closed connection
    Case(
        "cl-and-te",
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        [400],
        0,
    ),
    Case(
        "te-and-cl",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        [400],
        0,
    ),
    Case(
        "cl-twice-different",
        post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello"),
        [400],
        0,
    ),
    Case("cl-twice-same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), [400], 0),
    Case("cl-list", post(b"Content-Length: 5, 5\r\n", b"hello"), [400], 0),
    Case("cl-not-a-number", post(b"Content-Length: 5a\r\n", b"hello"), [400], 0),
    Case("cl-plus-sign", post(b"Content-Length: +5\r\n", b"hello"), [400], 0),
    Case("cl-negative", post(b"Content-Length: -1\r\n"), [400], 0),
    Case("cl-overflow", post(b"Content-Length: 99999999999999999999\r\n"), [400], 0),
    Case("cl-space-inside", post(b"Content-Length: 1 0\r\n", b"0123456789"), [400], 0),
    Case("cl-leading-zeros-ok", post(b"Content-Length: 005\r\n", b"hello"), [200], 1),
    Case("cl-ows-ok", post(b"Content-Length:  5  \r\n", b"hello"), [200], 1),
    Case(
        "te-not-chunked-last", post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), [400], 0
    ),
    Case("te-gzip-only", post(b"Transfer-Encoding: gzip\r\n"), [400], 0),
    Case(
        "te-identity",
        post(b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n", b"hello"),
        [400],
        0,
    ),
    Case(
        "te-twice",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        [400],
        0,
    ),
    Case("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), [400], 0),
    Case("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), [400], 0),
    Case(
        "te-in-http10",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"1.0"),
        [400],
        0,
    ),
    Case(
        "te-case-insensitive-ok",
        post(b"Transfer-Encoding: Chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        [200],
        1,
    ),
    Case(
        "te-tab-ows-ok",
        post(b"Transfer-Encoding:\tchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        [200],
        1,
    ),
    Case(
        "chunk-size-overflow",
        post(b"Transfer-Encoding: chunked\r\n", b"FFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    # sizes llhttp takes (up to 2^64-1) but a signed 64-bit length cannot hold: nginx and
    # HAProxy answer 400
    Case(
        "chunk-size-2^63",
        post(b"Transfer-Encoding: chunked\r\n", b"8000000000000000\r\nx\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    Case(
        "chunk-size-2^64-1",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\nFFFFFFFFFFFFFFFF\r\nx"),
        [400],
        0,
    ),
    Case(
        "chunk-size-0x",
        post(b"Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    Case(
        "chunk-size-space",
        post(b"Transfer-Encoding: chunked\r\n", b" 5\r\nhello\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    Case(
        "chunk-data-too-long",
        post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n"),
        [400],
        0,
    ),
    Case(
        "chunk-bare-lf", post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n"), [400], 0
    ),
    Case(
        "chunk-ext-control-byte",
        post(b"Transfer-Encoding: chunked\r\n", b"5;\x01\r\nhello\r\n0\r\n\r\n"),
        [400],
        0,
    ),
    # ---- header syntax (RFC 9112 5, RFC 9110 5.5)
    Case("space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n", [400], 0),
    Case("space-in-name", b"GET / HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n", [400], 0),
    Case("empty-name", b"GET / HTTP/1.1\r\n" + H + b": b\r\n\r\n", [400], 0),
    Case("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n", [400], 0),
    Case("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\n\n", [400], 0),
    Case("bare-lf-header", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", [400], 0),
    Case("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\rc\r\n\r\n", [400], 0),
    Case("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x00c\r\n\r\n", [400], 0),
    Case("control-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x01c\r\n\r\n", [400], 0),
    Case("nul-in-name", b"GET / HTTP/1.1\r\n" + H + b"X\x00A: b\r\n\r\n", [400], 0),
    Case(
        "header-too-large",
        b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 40000 + b"\r\n\r\n",
        [431],
        0,
    ),
    Case(
        "too-many-fields",
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n",
        [431],
        0,
    ),
    # ---- Host (RFC 9112 3.2)
    Case("no-host-http11", b"GET / HTTP/1.1\r\n\r\n", [400], 0),
    Case("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", [400], 0),
    Case("no-host-http10-ok", b"GET / HTTP/1.0\r\n\r\n", [200], 1),
    # an "http" URI has a host (RFC 9110 4.2.1): an empty one is refused, as nginx does
    Case("empty-host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", [400], 0),
    Case("empty-host-with-port", b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", [400], 0),
    Case("empty-host-absolute-form-ok", b"GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n", [200], 1),
    # RFC 9110 7.2 / RFC 3986 3.2.2: Host is uri-host [":" port], nothing else
    Case("host-with-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", [400], 0),
    Case("host-with-slash", b"GET / HTTP/1.1\r\nHost: a/../b\r\n\r\n", [400], 0),
    Case("host-with-backslash", b"GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", [400], 0),
    Case("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", [400], 0),
    Case("host-bad-port", b"GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", [400], 0),
    Case("host-two-ports", b"GET / HTTP/1.1\r\nHost: a:80:81\r\n\r\n", [400], 0),
    Case("host-8bit", b"GET / HTTP/1.1\r\nHost: \xc3\xa9.example\r\n\r\n", [400], 0),
    Case("host-ipv6-ok", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", [200], 1),
    Case("host-port-ok", b"GET / HTTP/1.1\r\nHost: a:80\r\n\r\n", [200], 1),
    Case("host-trailing-ows-ok", b"GET / HTTP/1.1\r\nHost: a \t\r\n\r\n", [200], 1),
    # ---- request line, methods, versions (RFC 9112 2.3, 3)
    Case("http09", b"GET /\r\n\r\n", [505], 0),
    Case("http2-text", b"GET / HTTP/2.0\r\n" + H + b"\r\n", [505], 0),
    Case("http12", b"GET / HTTP/1.2\r\n" + H + b"\r\n", [505], 0),
    Case("http30", b"GET / HTTP/3.0\r\n" + H + b"\r\n", [505], 0),
    # llhttp parses these protocols too, as version 1.0: they are not HTTP
    Case("rtsp-get", b"GET / RTSP/1.0\r\n" + H + b"\r\n", [400], 0),
    Case("rtsp-describe", b"DESCRIBE / RTSP/1.0\r\n" + H + b"\r\n", [400], 0),
    Case("rtsp-method-over-http", b"DESCRIBE / HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("ice-source", b"SOURCE / ICE/1.0\r\n" + H + b"\r\n", [400], 0),
    Case("http10-ok", b"GET / HTTP/1.0\r\n" + H + b"\r\n", [200], 1),
    Case("rtsp-11", b"GET / RTSP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case(
        "rtsp-pipelined",
        b"GET / HTTP/1.1\r\n" + H + b"\r\nGET / RTSP/1.0\r\n" + H + b"\r\n",
        [200, 400],
        1,
    ),
    Case("version-lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("version-no-dot", b"GET / HTTP/11\r\n" + H + b"\r\n", [400], 0),
    Case("method-not-a-token", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("method-unknown", b"FOO / HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("method-lowercase", b"get / HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("method-purge-ok", b"PURGE / HTTP/1.1\r\n" + H + b"\r\n", [200], 1),
    Case("tab-in-request-line", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("control-in-target", b"GET /a\x01 HTTP/1.1\r\n" + H + b"\r\n", [400], 0),
    Case("target-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", [414], 0),
    Case("options-star-ok", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", [200], 1),
    # ---- never an open proxy (RFC 9112 3.2.2, 3.2.3): only configured routes
    Case(
        "connect", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", [400], 0
    ),
    Case("absolute-form", b"GET http://evil.example/x HTTP/1.1\r\n" + H + b"\r\n", [200], 1),
    Case("absolute-form-ipv6", b"GET http://[::1]:8080/x HTTP/1.1\r\n" + H + b"\r\n", [200], 1),
    Case(
        "absolute-form-https-port",
        b"GET https://evil.example:8443/x?y=1 HTTP/1.1\r\n" + H + b"\r\n",
        [200],
        1,
    ),
    # ---- WebSocket handshakes (RFC 6455 4.2.1)
    Case("ws-on-post", b"POST /ws HTTP/1.1\r\n" + H + WS + b"\r\n", [400], 0),
    Case("ws-http10", b"GET /ws HTTP/1.0\r\n" + H + WS + b"\r\n", [400], 0),
    Case(
        "ws-version-8",
        b"GET /ws HTTP/1.1\r\n" + H + WS.replace(b"Version: 13", b"Version: 8") + b"\r\n",
        [426],
        0,
    ),
    Case(
        "ws-short-key",
        b"GET /ws HTTP/1.1\r\n" + H + WS.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short") + b"\r\n",
        [400],
        0,
    ),
    Case(
        "ws-no-key",
        b"GET /ws HTTP/1.1\r\n" + H + WS.split(b"Sec-WebSocket-Key")[0] + b"\r\n",
        [400],
        0,
    ),
    Case(
        "upgrade-without-connection-is-plain",
        b"GET /ws HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n\r\n",
        [200],
        1,
    ),
    Case(
        "h2c-upgrade-answered-in-http11",
        b"GET /1 HTTP/1.1\r\n"
        + H
        + b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /2 HTTP/1.1\r\n"
        + H
        + b"\r\n",
        [200, 200],
        2,
    ),
    # ---- what looks like smuggling but is framed (no desynchronisation)
    Case(
        "pipelined-three",
        b"".join(b"GET /%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(3)),
        [200, 200, 200],
        3,
    ),
    Case(
        "cl0-then-request",
        post(b"Content-Length: 0\r\n") + b"GET /admin HTTP/1.1\r\n" + H + b"\r\n",
        [200, 200],
        2,
    ),
    Case(
        "body-that-looks-like-a-request",
        post(b"Content-Length: 30\r\n", b"GET /admin HTTP/1.1\r\nHost: a\r\n"),
        [200],
        1,
    ),
    Case(
        "expect-100-continue",
        post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"hello"),
        [200],
        1,
    ),
]


class _Responses:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if status >= 200:
            self.statuses.append(status)


class _Count:
    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


def _count_requests(data: bytes) -> int:
    """Whole requests in ``data``; -1 if it does not parse as whole requests."""
    count = _Count()
    try:
        httptools.HttpRequestParser(count).feed_data(data)
    except httptools.HttpParserUpgrade:
        pass  # an upgrade request: what follows it is the new protocol's
    except httptools.HttpParserError:
        return -1
    return count.complete


async def _exchange(port: int, data: bytes, want: int) -> list[int]:
    """Send ``data``; the final statuses of the responses, until ``want`` of them arrived or
    the connection closed (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got = _Responses()
    parser = httptools.HttpResponseParser(got)
    got.parser = parser
    try:
        async with asyncio.timeout(scaled(5)):
            while len(got.statuses) < want:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserError:
                    # after a 100 Continue interim response: start over on the final one
                    at = chunk.find(b"HTTP/1.1 ", 1)
                    if at < 0:
                        break  # not HTTP: nothing more to count
                    parser = httptools.HttpResponseParser(got)
                    got.parser = parser
                    try:
                        parser.feed_data(chunk[at:])
                    except httptools.HttpParserError:
                        break
    except TimeoutError:
        pass
    finally:
        writer.close()
    return got.statuses


async def test_adversarial_requests_are_answered_as_documented_and_never_desync(
    wslb: Callable[..., Wslb],
) -> None:
    assert len(CASES) >= 60
    failures = []
    async with RecordingBackend() as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"]))
        port = lb.port("web")
        for case in CASES:
            before = len(backend.connections)
            statuses = await _exchange(port, case.data, len(case.statuses))
            # the backend got exactly the requests the case expects, as a backend's parser
            # reads them: whole messages, nothing left over
            conns = [bytes(c.data) for c in backend.connections[before:]]
            counts = [_count_requests(data) for data in conns]
            requests = -1 if -1 in counts else sum(counts)
            seen = b"".join(conns)
            if statuses != case.statuses or requests != case.backend_requests:
                failures.append(f"{case.name}: {statuses} ({requests} upstream) {seen[:80]!r}")
    assert not failures, "\n".join(failures)
    out = lb.output()
    assert "Traceback" not in out
