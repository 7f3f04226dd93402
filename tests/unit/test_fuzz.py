"""Fuzz targets (hypothesis): the HTTP/1.1 request parser, Engine.IO sid handling, the PROXY
protocol parser and the Kubernetes annotation parsers.

Each runs ``WSLB_FUZZ_EXAMPLES`` inputs (200 by default, so the suite stays quick); the longer
run documented in docs/hardening.md is ``WSLB_FUZZ_EXAMPLES=1000000 pytest tests/unit/test_fuzz.py``.
A failure prints the smallest input hypothesis found: it becomes a regression case below.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wslb.balancer.endpoints import EndpointState
from wslb.config.kubernetes.annotations import TABLE, AnnotationError
from wslb.errors import HTTPError
from wslb.middleware.engineio import EngineIOAffinity
from wslb.proto import proxy_protocol
from wslb.proto.engineio import NotAnOpenPacket, query_params, rewrite_open_packet
from wslb.proto.http1 import RequestHead, RequestParser

FUZZ = settings(
    max_examples=int(os.environ.get("WSLB_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# ---------------------------------------------------------------- HTTP/1.1 requests

PIECES = [
    b"GET ", b"POST ", b"PUT ", b"CONNECT ", b"OPTIONS ", b"/", b"/a?b=c", b"*", b"http://h/x",
    b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2.0", b"\r\n", b"\n", b"\r", b"Host: a", b"Host: b",
    b"Content-Length: ", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip",
    b"Connection: close", b"Connection: Upgrade", b"Upgrade: websocket", b"Expect: 100-continue",
    b"0", b"5", b"10", b"ff", b"hello", b"0\r\n\r\n", b"5\r\nhello\r\n", b":", b" ", b"\t",
    b"\x00", b"\x7f", b"\xff", b";ext=1", b"X-A: b", b" c",
]  # fmt: skip

requests = st.lists(
    st.one_of(st.sampled_from(PIECES), st.binary(max_size=8)), min_size=1, max_size=40
).map(b"".join)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(
            (
                "head",
                head.method,
                head.target,
                head.version,
                head.host,
                head.content_length,
                head.chunked,
                tuple(head.forward),
            )
        )

    def on_request_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_request_end(self) -> None:
        self.events.append(("end",))


def _parse(chunks: list[bytes]) -> tuple[list[Any], int | None]:
    """Feed ``chunks``; the events, and the status of the error that stopped it (if any).
    Anything raised that is not an HTTPError is a bug, and fails the test."""
    sink = Recorder()
    parser = RequestParser(sink, max_uri_size=512, max_header_size=2048, max_headers=20)
    try:
        for chunk in chunks:
            if parser.feed(chunk) is not None:
                sink.events.append(("upgrade",))
                break
    except HTTPError as exc:
        return sink.events, exc.status
    return sink.events, None


@FUZZ
@given(requests, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
@example(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", [20, 21, 45])
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", [1, 30])
def test_http_requests_never_crash_and_do_not_depend_on_how_they_are_cut(
    data: bytes, cuts: list[int]
) -> None:
    whole = _parse([data])
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    split = _parse(pieces)
    assert split == whole
    status = whole[1]
    if status is not None:
        assert status in (400, 413, 414, 431, 505), status


# ---------------------------------------------------------------- Engine.IO sids

ENDPOINTS = [EndpointState("10.0.0.1", 8000), EndpointState("10.0.0.2", 8000)]
AFFINITY = EngineIOAffinity(b"secret", "chat")


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([b"3", b"4"]), st.booleans())
@example(b'0{"sid":"abc","upgrades":["websocket"]}', b"4", True)
@example(b"\x00\x02\x05\xff0{}", b"3", True)
def test_open_packet_rewriting_never_crashes(buf: bytes, version: bytes, complete: bool) -> None:
    try:
        result = rewrite_open_packet(buf, version, lambda sid: "tag." + sid, complete)
    except NotAnOpenPacket:
        return
    if result is not None:
        replacement, consumed = result
        assert 0 <= consumed <= len(buf)
        assert isinstance(replacement, bytes)


@FUZZ
@given(st.binary(max_size=200))
def test_query_params_and_sid_resolution_never_crash(raw: bytes) -> None:
    params = query_params(raw)
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in params.items())
    found = AFFINITY.resolve(raw, ENDPOINTS)
    if found is not None and found[0] is not None:
        # only a tag made with the key names an endpoint
        ep, sid = found
        assert raw == AFFINITY.wire_sid(ep, sid.decode()).encode()


@FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1))
def test_every_tagged_sid_resolves_to_its_endpoint(sid: str) -> None:
    for ep in ENDPOINTS:
        wire = AFFINITY.wire_sid(ep, sid).encode()
        assert AFFINITY.resolve(wire, ENDPOINTS) == (ep, sid.encode())


# ---------------------------------------------------------------- PROXY protocol

addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: str(a)))


@FUZZ
@given(st.binary(max_size=300))
@example(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
@example(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
def test_proxy_header_parsing_never_crashes(buf: bytes) -> None:
    try:
        length = proxy_protocol.header_length(buf)  # None: read more
    except proxy_protocol.ProxyProtocolError:
        length = -1  # cannot be a PROXY header
    assert length is None or length >= -1
    try:
        info = proxy_protocol.parse(buf)
    except proxy_protocol.ProxyProtocolError:
        return
    assert info.source is None or isinstance(info.source[0], str)


@FUZZ
@given(addresses, addresses, st.integers(0, 65535), st.integers(0, 65535), st.booleans())
def test_proxy_headers_round_trip(src: str, dst: str, sport: int, dport: int, v2: bool) -> None:
    if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
        return  # one family per header
    build = proxy_protocol.build_v2 if v2 else proxy_protocol.build_v1
    header = build((src, sport), (dst, dport))
    assert proxy_protocol.header_length(header + b"GET /") == len(header)
    info = proxy_protocol.parse(header)
    assert info.source is not None and info.destination is not None
    assert ipaddress.ip_address(info.source[0]) == ipaddress.ip_address(src)
    assert ipaddress.ip_address(info.destination[0]) == ipaddress.ip_address(dst)
    assert (info.source[1], info.destination[1]) == (sport, dport)


# ---------------------------------------------------------------- Kubernetes annotations


@FUZZ
@given(st.sampled_from(TABLE), st.text(max_size=60))
def test_annotation_parsers_answer_or_refuse_never_crash(annotation: Any, value: str) -> None:
    try:
        annotation.parse(value)
    except AnnotationError:
        pass


def test_regression_unicode_digits_are_not_port_numbers() -> None:
    """Found by the fuzzer: '¹'.isdigit() is true and int('¹') raises ValueError, which
    escaped as a crash instead of an annotation error."""
    (ports,) = [a for a in TABLE if a.name.endswith("do-loadbalancer-http-ports")]
    try:
        ports.parse("¹")
    except AnnotationError:
        return
    raise AssertionError("'¹' was taken as a port")
