"""Fuzz targets (hypothesis): the HTTP/1.1 request parser, Engine.IO sid handling, the PROXY
protocol parser, the Kubernetes manifest translator and annotation parsers, and the YAML
config reader.

Each runs ``WSLB_FUZZ_EXAMPLES`` inputs (200 by default, so the suite stays quick); the longer
run documented in docs/hardening.md is
``WSLB_FUZZ_EXAMPLES=1000000 pytest tests/unit/proto/test_fuzz.py --timeout=0`` (no per-test timeout).
A failure prints the smallest input hypothesis found: it becomes a regression case below.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.procs import ROOT
from wslb.balancer.endpoints import EndpointState
from wslb.config.file import parse_config
from wslb.config.kubernetes.annotations import TABLE, AnnotationError
from wslb.config.kubernetes.objects import load_objects
from wslb.config.kubernetes.translate import ManifestOptions, translate
from wslb.errors import ConfigError, HTTPError
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


# ---------------------------------------------------------------- Kubernetes manifests

FIXTURES = ROOT / "tests" / "fixtures"
SEED = [
    doc
    for name in ("seed-ingress.yaml", "seed-service.yaml")
    for doc in yaml.safe_load_all((FIXTURES / name).read_text())
    if doc
]
ANNOTATIONS = sorted(a.name for a in TABLE)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "true", "http", "HTTPS", "/", "*", "a.b", "80", "1e3"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=8,
)


def _nodes(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``node`` (the root included)."""
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _nodes(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _nodes(v, (*path, i))
    return out


def _mutate(docs: list[Any], edits: list[tuple[int, Any]], notes: dict[str, str]) -> list[Any]:
    docs = copy.deepcopy(docs)
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("annotations", {}).update(notes)
    for pick, new in edits:
        paths = [(d, p) for d, doc in enumerate(docs) for p in _nodes(doc) if p]
        d, path = paths[pick % len(paths)]
        node = docs[d]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = new
    return docs


_WORK = Path(tempfile.mkdtemp(prefix="wslb-fuzz-"))


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 10**6), values), max_size=4),
    st.dictionaries(st.sampled_from(ANNOTATIONS), st.text(max_size=20), max_size=3),
)
def test_manifests_translate_or_give_errors_never_crash(
    edits: list[tuple[int, Any]], notes: dict[str, str]
) -> None:
    """The seed Ingress and Service with random subtrees replaced and random annotations: the
    translator gives a config or errors with their place, nothing else."""
    path = _WORK / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(_mutate(SEED, edits, notes)))
    objects, issues = load_objects([str(path)])
    for issue in issues:
        assert issue.source == str(path)
    try:
        translate(objects, ManifestOptions(endpoints={"vuepilot/vuepilot-node": ["127.0.0.1:1"]}))
    except ConfigError as exc:
        assert exc.issues


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), values), max_size=4), st.binary(max_size=20))
def test_config_files_load_or_give_errors_never_crash(
    edits: list[tuple[int, Any]], junk: bytes
) -> None:
    """A valid wslb YAML config with random subtrees replaced (and sometimes random bytes
    appended): a config or every error with its place, nothing else."""
    (config,) = _mutate([BASE_CONFIG], edits, {})
    config.pop("metadata", None)
    text = yaml.safe_dump(config) + junk.decode("latin-1")
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.issues


BASE_CONFIG: dict[str, Any] = {
    "listeners": [
        {"name": "web", "port": 8080, "protocol": "http", "client": {"header_timeout": 5}},
        {"name": "tls", "port": 8443, "protocol": "https", "http2": True},
    ],
    "backends": [
        {
            "name": "app",
            "endpoints": ["127.0.0.1:9000", "127.0.0.1:9001"],
            "affinity": {"mode": "cookie"},
            "timeouts": {"read": "60s"},
        }
    ],
    "routes": [
        {"listener": "web", "host": "a.example", "path": "/", "backend": "app"},
        {"listener": "web", "path": "/socket.io/", "backend": "app", "cors": {"origins": ["*"]}},
    ],
}


def test_regression_unicode_digits_are_not_port_numbers() -> None:
    """Found by the fuzzer: '¹'.isdigit() is true and int('¹') raises ValueError, which
    escaped as a crash instead of an annotation error."""
    (ports,) = [a for a in TABLE if a.name.endswith("do-loadbalancer-http-ports")]
    try:
        ports.parse("¹")
    except AnnotationError:
        return
    raise AssertionError("'¹' was taken as a port")
