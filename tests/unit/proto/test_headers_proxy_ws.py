"""Header rewriting, PROXY protocol and WebSocket handshake checks (sans I/O)."""

from __future__ import annotations

import pytest

from wslb.errors import BadRequest
from wslb.proto import proxy_protocol as pp
from wslb.proto.headers import connection_tokens, forward_request_headers, forward_response_headers
from wslb.proto.http1 import RequestHead, RequestParser, ResponseHead, ResponseParser
from wslb.proto.websocket import UpgradeRequired, accept_value, is_websocket, validate_handshake


class _Sink:
    def __init__(self) -> None:
        self.head: RequestHead | None = None
        self.response: ResponseHead | None = None

    def on_request_head(self, head: RequestHead) -> None:
        self.head = head

    def on_response_head(self, head: ResponseHead) -> None:
        self.response = head

    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...


def _request(raw: bytes) -> RequestHead:
    sink = _Sink()
    RequestParser(sink).feed(raw)
    assert sink.head is not None
    return sink.head


def _response(raw: bytes) -> ResponseHead:
    sink = _Sink()
    ResponseParser(sink).feed(raw)
    assert sink.response is not None
    return sink.response


def _fields(lines: list[bytes]) -> dict[bytes, bytes]:
    """Serialised lines back to name -> value."""
    out = {}
    for line in lines:
        assert line.endswith(b"\r\n")
        name, _, value = line[:-2].partition(b": ")
        out[name] = value
    return out


def test_request_headers_drop_hop_by_hop_and_connection_named() -> None:
    head = _request(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
        b"Keep-Alive: 5\r\nTE: trailers\r\nContent-Length: 3\r\nProxy-Connection: x\r\n"
        b"X-Keep: yes\r\nExpect: 100-continue\r\n\r\nabc"
    )
    out = forward_request_headers(
        head, client_ip=b"10.0.0.1", proto=b"https", port=b"443", trusted=False
    )
    assert b"".join(out) == (
        b"Host: a\r\nX-Keep: yes\r\nExpect: 100-continue\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n"
    )
    # the head itself is not consumed: a retry forwards the same
    again = forward_request_headers(
        head, client_ip=b"10.0.0.1", proto=b"https", port=b"443", trusted=False
    )
    assert again == out


def test_forwarded_headers_trusted_and_untrusted() -> None:
    head = _request(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n\r\n"
    )
    untrusted = _fields(
        forward_request_headers(
            head, client_ip=b"9.9.9.9", proto=b"https", port=b"443", trusted=False
        )
    )
    assert untrusted[b"X-Forwarded-For"] == b"9.9.9.9"
    assert untrusted[b"X-Forwarded-Proto"] == b"https"
    assert untrusted[b"X-Forwarded-Port"] == b"443"
    trusted = _fields(
        forward_request_headers(
            head, client_ip=b"9.9.9.9", proto=b"https", port=b"443", trusted=True
        )
    )
    assert trusted[b"X-Forwarded-For"] == b"1.1.1.1, 2.2.2.2, 9.9.9.9"
    assert trusted[b"X-Forwarded-Proto"] == b"http"
    assert trusted[b"X-Forwarded-Port"] == b"80"


def test_response_headers() -> None:
    head = _response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
        b"Set-Cookie: a=b\r\nKeep-Alive: timeout=5\r\n\r\n"
    )
    assert forward_response_headers(head) == [b"Set-Cookie: a=b\r\n"]
    head = _response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n")
    assert forward_response_headers(head) == [b"X: y\r\n"]


def test_connection_tokens() -> None:
    assert connection_tokens(b"Keep-Alive, Upgrade ,") == {b"keep-alive", b"upgrade"}
    assert connection_tokens(b"") == frozenset()


@pytest.mark.parametrize(
    ("src", "dst"),
    [(("192.0.2.1", 56324), ("198.51.100.2", 443)), (("2001:db8::1", 1), ("2001:db8::2", 65535))],
)
@pytest.mark.parametrize("build", [pp.build_v1, pp.build_v2])
def test_proxy_roundtrip(src: tuple[str, int], dst: tuple[str, int], build: object) -> None:
    header = build(src, dst)  # type: ignore[operator]
    assert pp.header_length(header + b"GET /") == len(header)
    info = pp.parse(header)
    assert info.source == src and info.destination == dst


def test_proxy_v1_exact_bytes() -> None:
    assert (
        pp.build_v1(("192.0.2.1", 5), ("192.0.2.2", 80))
        == b"PROXY TCP4 192.0.2.1 192.0.2.2 5 80\r\n"
    )


def test_proxy_mixed_families_are_mapped() -> None:
    info = pp.parse(pp.build_v2(("192.0.2.1", 5), ("::1", 80)))
    assert info.source == ("::ffff:c000:201", 5)


def test_proxy_incremental_length() -> None:
    h = pp.build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))
    assert pp.header_length(h[:5]) is None and pp.header_length(h[:16]) == len(h)
    assert pp.header_length(b"PROXY TCP4 1.2") is None
    assert pp.parse(b"PROXY UNKNOWN\r\n").source is None
    local = pp.V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert pp.parse(local).source is None


@pytest.mark.parametrize(
    "bad",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY " + b"x" * 200,
        pp.V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,
        pp.V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,
    ],
)
def test_proxy_bad_headers(bad: bytes) -> None:
    with pytest.raises(pp.ProxyProtocolError):
        n = pp.header_length(bad)
        pp.parse(bad if n is None else bad[:n])


def _ws_head(**overrides: bytes | None) -> RequestHead:
    h = RequestHead()
    h.method = b"GET"
    h.version = "1.1"
    h.upgrade = b"websocket"
    fields = {b"Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version": b"13"}
    for k, v in overrides.items():
        name = k.replace("_", "-").encode()
        fields = {n: x for n, x in fields.items() if n.lower() != name.lower()}
        if v is not None:
            fields[name] = v
    h.headers = list(fields.items())
    return h


def test_websocket_handshake_validation() -> None:
    validate_handshake(_ws_head())
    assert is_websocket(_ws_head())
    with pytest.raises(UpgradeRequired) as info:
        validate_handshake(_ws_head(Sec_WebSocket_Version=b"8"))
    assert info.value.status == 426 and (b"Sec-WebSocket-Version", b"13") in info.value.headers
    for bad in (
        _ws_head(Sec_WebSocket_Key=None),
        _ws_head(Sec_WebSocket_Key=b"short"),
        _ws_head(Sec_WebSocket_Key=b"!!!"),
    ):
        with pytest.raises(BadRequest):
            validate_handshake(bad)
    post = _ws_head()
    post.method = b"POST"
    with pytest.raises(BadRequest):
        validate_handshake(post)


def test_accept_value_rfc6455_example() -> None:
    assert accept_value(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
