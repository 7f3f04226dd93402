"""Middlewares and balancing pieces, pure: templates, CORS origins, cookies, affinity tokens,
the hash ring, EWMA, limits and access lists."""

from __future__ import annotations

import random
from collections import Counter

from wslb.balancer.endpoints import EndpointState, pick_ewma
from wslb.balancer.ring import HashRing
from wslb.config.model import CookieSpec, CorsSpec
from wslb.middleware.access import AccessList
from wslb.middleware.affinity import CookieAffinity, samesite_none_compatible
from wslb.middleware.cors import Cors
from wslb.middleware.limits import Counter as ConnCounter
from wslb.middleware.limits import TokenBuckets
from wslb.middleware.templates import RequestContext, Template
from wslb.proto.cookies import request_cookie, set_cookie_line, token_value
from wslb.proto.http1 import RequestHead, RequestParser


def head_of(raw: bytes) -> RequestHead:
    class Sink:
        head: RequestHead

        def on_request_head(self, h: RequestHead) -> None:
            self.head = h

        def on_request_body(self, d: bytes) -> None: ...
        def on_request_end(self) -> None: ...

    sink = Sink()
    RequestParser(sink).feed(raw)
    return sink.head


def test_templates() -> None:
    head = head_of(
        b"GET /p?q=1 HTTP/1.1\r\nHost: h.example\r\nOrigin: https://o\r\nCookie: a=1; sid=xyz\r\n"
        b"X-User-Id: 42\r\n\r\n"
    )
    ctx = RequestContext(head, b"https", b"10.0.0.9")
    t = Template(
        "$scheme://$host$request_uri from $remote_addr ${http_origin} $cookie_sid $http_x_user_id!"
    )
    assert t.render(ctx) == b"https://h.example/p?q=1 from 10.0.0.9 https://o xyz 42!"
    assert Template("plain").literal and not t.literal
    assert Template("$http_missing").render(ctx) == b""
    for bad in ("$nope", "$upstream_addr"):
        try:
            Template(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_cors_origin_matching() -> None:
    cors = Cors(CorsSpec(allow_origins=("https://a.example.com", "https://*.example.org:8443")))
    assert cors.allow_origin(b"https://a.example.com") == b"https://a.example.com"
    assert cors.allow_origin(b"HTTPS://A.EXAMPLE.COM") == b"HTTPS://A.EXAMPLE.COM"
    assert cors.allow_origin(b"https://x.example.org:8443") == b"https://x.example.org:8443"
    for no in (
        b"https://example.org:8443",
        b"https://a.b.example.org:8443",
        b"https://x.example.org",
        None,
    ):
        assert cors.allow_origin(no) is None
    assert Cors(CorsSpec()).allow_origin(None) == b"*"
    lines = b"".join(Cors(CorsSpec(allow_credentials=False)).response_lines(b"https://z"))
    assert b"Allow-Credentials" not in lines and b"Access-Control-Allow-Origin: *" in lines


def test_cookies() -> None:
    head = head_of(b'GET / HTTP/1.1\r\nHost: h\r\nCookie: x=1; route="abc_-9"\r\n\r\n')
    assert request_cookie(head, b"route") == b"abc_-9" and request_cookie(head, b"no") is None
    assert token_value(b"abc_-9") == "abc_-9"
    for bad in (b"a b", b"10.0.0.1:80", b"x" * 100, b""):
        assert token_value(bad) is None
    line = set_cookie_line(
        "s",
        "v",
        now=0.0,
        expires=60,
        max_age=60,
        path="/a",
        domain="d",
        samesite="Lax",
        secure=True,
    )
    assert (
        line
        == b"Set-Cookie: s=v; Expires=Thu, 01 Jan 1970 00:01:00 GMT; Max-Age=60; Path=/a; Domain=d; SameSite=Lax; Secure; HttpOnly\r\n"
    )


def test_affinity_tokens_are_keyed_and_stable() -> None:
    eps = [EndpointState(f"10.0.0.{i}", 8080) for i in range(3)]
    a = CookieAffinity(CookieSpec(mode="persistent"), b"secret", "ns/svc:80")
    b = CookieAffinity(CookieSpec(mode="persistent"), b"secret", "ns/svc:80")
    other_key = CookieAffinity(CookieSpec(mode="persistent"), b"other", "ns/svc:80")
    tokens = [a.token(ep) for ep in eps]
    assert tokens == [b.token(ep) for ep in eps]  # every worker / replica agrees
    assert tokens != [other_key.token(ep) for ep in eps]
    assert all("10.0.0" not in t for t in tokens)
    assert a.endpoint(tokens[1], eps) is eps[1]
    assert a.endpoint(tokens[1], [eps[0], eps[2]]) is None  # its endpoint is gone
    assert a.endpoint("forged", eps) is None


def test_samesite_none_compatibility() -> None:
    assert samesite_none_compatible(b"Mozilla/5.0 (X11) Chrome/120.0 Safari/537.36")
    assert not samesite_none_compatible(b"Mozilla/5.0 (X11) Chrome/62.0.3202 Safari/537.36")
    assert not samesite_none_compatible(
        b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_1 like Mac OS X) AppleWebKit/605"
    )
    assert not samesite_none_compatible(
        b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605 Version/12 Safari/605"
    )
    spec = CookieSpec(samesite="None", conditional_samesite_none=True)
    aff = CookieAffinity(spec, b"k", "b")
    old = aff.set_cookie("v", tls=False, user_agent=b"Chrome/55.0", now=0)
    new = aff.set_cookie("v", tls=False, user_agent=b"Chrome/120.0", now=0)
    assert b"SameSite" not in old and b"SameSite=None; Secure" in new


def test_hash_ring_spread_and_minimal_remapping() -> None:
    three = [EndpointState(f"10.0.0.{i}", 80) for i in range(3)]
    four = [*three, EndpointState("10.0.0.3", 80)]
    r3, r4 = HashRing(three, b"k"), HashRing(four, b"k")
    keys = [f"session-{i}".encode() for i in range(3000)]
    spread = Counter(r3.get(k).address for k in keys)  # type: ignore[union-attr]
    assert min(spread.values()) > 700  # roughly a third each
    moved = [k for k in keys if r3.get(k).address != r4.get(k).address]  # type: ignore[union-attr]
    assert 0.15 < len(moved) / len(keys) < 0.35  # about 1/4 moves ...
    assert {r4.get(k).address for k in moved} == {"10.0.0.3:80"}  # type: ignore[union-attr]  # ... to the new one
    assert HashRing([], b"k").get(b"x") is None


def test_ewma_prefers_the_faster_and_less_loaded() -> None:
    fast, slow = EndpointState("10.0.0.1", 80), EndpointState("10.0.0.2", 80)
    for t in range(10):
        fast.observe_latency(0.001, float(t))
        slow.observe_latency(0.050, float(t))
    picks = Counter(pick_ewma([fast, slow], rng=random.Random(1)) for _ in range(100))
    assert picks[fast] == 100
    fast.active = 100  # now heavily loaded
    assert pick_ewma([fast, slow], rng=random.Random(1)) is slow
    slow.observe_latency(0.2, 11.0)  # a slow sample takes over at once (peak EWMA)
    assert slow.ewma == 0.2
    slow.observe_latency(0.01, 100.0)  # faster ones decay in
    assert slow.ewma < 0.02
    assert pick_ewma([], rng=random.Random(1)) is None


def test_limits_and_access() -> None:
    b = TokenBuckets(rate=2, burst=4)
    assert [b.take("ip", 0.0) for _ in range(5)] == [True] * 4 + [False]
    assert b.take("ip", 0.5) and not b.take("ip", 0.5)  # one token refilled in half a second
    assert b.take("other", 0.5)
    b.sweep(100.0)
    assert b._buckets == {}
    c = ConnCounter(2)
    assert c.acquire("ip") and c.acquire("ip") and not c.acquire("ip")
    c.release("ip")
    assert c.acquire("ip")
    acl = AccessList(["10.0.0.0/8"], ["10.9.0.0/16"])
    assert acl.permits("10.1.2.3") and not acl.permits("10.9.1.1") and not acl.permits("8.8.8.8")
    assert AccessList([], ["::1/128"]).permits("127.0.0.1") and not AccessList([], ["::1"]).permits(
        "::1"
    )
    assert not AccessList([], []) and not acl.permits("not an ip")
