"""Route and listener middlewares through wslb's own YAML: redirects, CORS, affinity, hashing,
header rules, access lists, limits."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb
from tests.support.raw import raw_exchange, status_of


def _cfg(backends: list[Proc], route: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return http_config(endpoints(backends), route=route, **kw)


async def test_listener_redirect_keeps_path_and_query(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(_cfg(backends, {}, listener={"redirect_https": {"code": 308}}))
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        r = await client.get("/a/b?x=1&y=2", headers={"Host": "ws.example.com:8080"})
    assert r.status_code == 308
    assert r.headers["location"] == "https://ws.example.com/a/b?x=1&y=2"


async def test_route_redirect_with_port_and_code(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(_cfg(backends, {"redirect_https": {"code": 301, "port": 8443}}))
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        r = await client.get("/p?q", headers={"Host": "h.example"})
    assert r.status_code == 301
    assert r.headers["location"] == "https://h.example:8443/p?q"


async def test_route_redirect_not_for_https_a_trusted_balancer_terminated(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    """Behind a balancer that terminated TLS (DigitalOcean's https entry): its
    X-Forwarded-Proto: https is believed from a trusted proxy only, and then no redirect
    (which would loop), as ingress-nginx with use-forwarded-headers."""
    https = {"X-Forwarded-Proto": "https", "Host": "h.example"}
    trusted = wslb(
        _cfg(backends, {"redirect_https": {}}, listener={"trusted_proxies": ["127.0.0.1/32"]})
    )
    untrusted = wslb(_cfg(backends, {"redirect_https": {}}))
    async with httpx.AsyncClient(base_url=trusted.url("web")) as client:
        assert (await client.get("/p", headers=https)).status_code == 200
        assert (await client.get("/p", headers={"Host": "h.example"})).status_code == 308
    async with httpx.AsyncClient(base_url=untrusted.url("web")) as client:
        assert (await client.get("/p", headers=https)).status_code == 308


async def test_cors_preflight_and_responses(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(
        _cfg(
            backends,
            {
                "cors": {
                    "allow_origins": ["https://app.example.com", "https://*.example.org"],
                    "allow_methods": "GET, POST",
                    "expose_headers": "X-Server",
                    "max_age": 600,
                }
            },
        )
    )
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        pre = await client.options(
            "/api",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
        assert pre.headers["access-control-allow-methods"] == "GET, POST"
        assert pre.headers["access-control-allow-credentials"] == "true"
        assert pre.headers["access-control-max-age"] == "600"
        assert pre.headers["content-length"] == "0" and pre.content == b""
        # an OPTIONS from another origin is not a preflight: the backend answers it
        other = await client.options("/api", headers={"Origin": "https://evil.com"})
        assert other.status_code == 200 and other.json()["method"] == "OPTIONS"
        assert "access-control-allow-origin" not in other.headers
        r = await client.get("/api", headers={"Origin": "https://x.example.org"})
        assert r.status_code == 200 and r.headers["x-server"] in "abc"
        assert r.headers["access-control-allow-origin"] == "https://x.example.org"
        assert r.headers["access-control-expose-headers"] == "X-Server"
        for bad in ("https://evil.com", "https://a.b.example.org", "http://app.example.com"):
            r = await client.get("/api", headers={"Origin": bad})
            assert "access-control-allow-origin" not in r.headers, bad


def _cookie_attrs(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    attrs = {"_": parts[0]}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        attrs[k.lower()] = v
    return attrs


@pytest.mark.parametrize("mode", ["balanced", "persistent"])
async def test_cookie_affinity_sticks_http_and_websocket(
    mode: str, wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(
        _cfg(
            backends,
            {
                "affinity": {
                    "name": "route",
                    "mode": mode,
                    "expires": 172800,
                    "max_age": 172800,
                    "samesite": "Lax",
                }
            },
        )
    )
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        first = await client.get("/x")
        attrs = _cookie_attrs(first.headers["set-cookie"])
        name, _, value = attrs["_"].partition("=")
        assert name == "route" and value
        assert attrs["max-age"] == "172800" and attrs["path"] == "/"
        assert "httponly" in attrs and "secure" not in attrs and attrs["samesite"] == "Lax"
        expires = parsedate_to_datetime(attrs["expires"]).timestamp()
        assert abs(expires - (time.time() + 172800)) < 120
        for addr in [p.info["port"] for p in backends]:
            assert str(addr) not in value  # no pod address in the cookie
        server = first.headers["x-server"]
        for _ in range(30):
            r = await client.get("/x", headers={"Cookie": f"route={value}"})
            assert r.headers["x-server"] == server
            assert "set-cookie" not in r.headers
    # a WebSocket handshake carrying the cookie reaches the same backend
    async with connect(
        f"ws://127.0.0.1:{lb.port('web')}/ws", additional_headers={"Cookie": f"route={value}"}
    ) as ws:
        await ws.send("whoami")
        assert await ws.recv() == server
    # without a cookie the 101 itself carries one
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws") as ws:
        assert ws.response is not None
        assert "route=" in ws.response.headers["Set-Cookie"]
    # forged values are ignored: a new session is started
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        r = await client.get("/x", headers={"Cookie": "route=127.0.0.1:1234"})
        assert "set-cookie" in r.headers


async def test_affinity_secure_on_tls_and_spread_over_endpoints(
    wslb: Callable[..., Wslb], backends: list[Proc], server_cert: tuple[str, str], ca_file: str
) -> None:
    lb = wslb(
        _cfg(
            backends,
            {"affinity": {"name": "s"}},
            protocol="https",
            listener={"tls": {"certificate": server_cert[0], "key": server_cert[1]}},
        )
    )
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(
        base_url=lb.url("web", "https"), verify=ssl.create_default_context(cafile=ca_file)
    ) as client:
        for _ in range(60):
            client.cookies.clear()
            r = await client.get("/x")
            assert "Secure" in r.headers["set-cookie"]
            seen[r.headers["x-server"]] += 1
    assert set(seen) == {"a", "b", "c"}  # new sessions are spread


async def test_hash_by_remote_addr_and_header(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(_cfg(backends, {"hash_by": "$http_x_user"}))
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        by_user: dict[str, set[str]] = {}
        for i in range(60):
            user = f"user{i % 12}"
            r = await client.get("/x", headers={"X-User": user})
            by_user.setdefault(user, set()).add(r.headers["x-server"])
    assert all(len(s) == 1 for s in by_user.values())
    assert len({next(iter(s)) for s in by_user.values()}) > 1


async def test_header_rules(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(
        _cfg(
            backends,
            {
                "headers": {
                    "request_set": [{"name": "X-Real-IP", "value": "$remote_addr"}],
                    "response_set": [
                        {"name": "Access-Control-Allow-Origin", "value": "$http_origin"},
                        {"name": "X-Server", "value": "hidden"},
                    ],
                    "response_add": [
                        {"name": "X-Added", "value": "on $host"},
                        {"name": "X-Always", "value": "yes", "always": True},
                    ],
                }
            },
        )
    )
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        r = await client.get("/x", headers={"Origin": "https://o.example", "Host": "h.example"})
        assert r.headers["access-control-allow-origin"] == "https://o.example"
        assert r.headers["x-server"] == "hidden"
        assert r.headers["x-added"] == "on h.example" and r.headers["x-always"] == "yes"
        sent = dict(r.json()["headers"])
        assert sent["x-real-ip"] == "127.0.0.1"
        r = await client.get("/status/404")
        assert (
            r.status_code == 404 and "x-added" not in r.headers and r.headers["x-always"] == "yes"
        )


async def test_access_lists(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(_cfg(backends, {"allow": ["10.0.0.0/8"]}))
    resp = await raw_exchange(lb.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 403
    lb2 = wslb(_cfg(backends, {"deny": ["127.0.0.0/8"]}))
    assert (
        status_of(await raw_exchange(lb2.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 403
    )
    lb3 = wslb(_cfg(backends, {"allow": ["127.0.0.1/32"]}, listener={"deny": ["127.0.0.2/32"]}))
    assert (
        status_of(await raw_exchange(lb3.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 200
    )
    lb4 = wslb(_cfg(backends, {}, listener={"allow": ["192.0.2.0/24"]}))
    assert (
        status_of(await raw_exchange(lb4.port("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == 403
    )


async def test_rate_and_connection_limits(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(_cfg(backends, {"limits": {"rps": 2, "burst_multiplier": 5}}))
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        statuses = Counter([(await client.get("/x")).status_code for _ in range(20)])
    # a burst of rps * multiplier passes, the rest is refused (a few tokens refill meanwhile)
    assert 10 <= statuses[200] <= 13 and statuses[503] == 20 - statuses[200]
    lb2 = wslb(_cfg(backends, {"limits": {"connections": 2, "status": 429}}))
    url = f"ws://127.0.0.1:{lb2.port('web')}/ws"
    async with connect(url), connect(url), httpx.AsyncClient(base_url=lb2.url("web")) as client:
        r = await client.get("/x")
        assert r.status_code == 429 and r.headers["retry-after"]
    # closed tunnels give their slots back
    for _ in range(50):
        async with httpx.AsyncClient(base_url=lb2.url("web")) as client:
            if (await client.get("/x")).status_code == 200:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("connection-limit slots were not released")


async def test_persistent_affinity_repins_when_its_endpoint_is_gone(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    """The cookie names an endpoint; another replica (or a restart) without that endpoint
    balances the session afresh and rewrites the cookie, which then sticks."""
    route = {"affinity": {"name": "p", "mode": "persistent"}}
    cfg = _cfg(backends, route)
    cfg["server"] = {"secret": "shared"}
    lb = wslb(cfg)
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        r = await client.get("/x")
        cookie = r.headers["set-cookie"].split(";")[0]
        pinned = r.headers["x-server"]
    others = [p for p in backends if _name(p) != pinned]
    cfg2 = http_config(endpoints(others), route=route)
    cfg2["server"] = {"secret": "shared"}
    lb2 = wslb(cfg2)
    async with httpx.AsyncClient(base_url=lb2.url("web")) as client:
        r = await client.get("/x", headers={"Cookie": cookie})
        assert r.headers["x-server"] != pinned
        new_cookie = r.headers["set-cookie"].split(";")[0]
        assert new_cookie != cookie
        moved = r.headers["x-server"]
        for _ in range(10):
            r = await client.get("/x", headers={"Cookie": new_cookie})
            assert r.headers["x-server"] == moved and "set-cookie" not in r.headers


def _name(proc: Proc) -> str:
    return str(proc.proc.args[proc.proc.args.index("--name") + 1])  # type: ignore[union-attr]


async def test_dns_discovery_resolves_endpoint_names(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    port = backends[0].info["port"]
    lb = wslb(http_config([f"localhost:{port}"], backend={"discovery": {"interval": 0.2}}))
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        for _ in range(5):
            assert (await client.get("/x")).headers["x-server"] == "a"
    assert f"endpoints now 127.0.0.1:{port}" in lb.wait_output("endpoints now")
