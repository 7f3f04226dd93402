"""The exchange as byte scripts (see tests/support/playbook.py): a real worker's proxy path, a
fake client and fake endpoints, no socket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.playbook import Playbook, http_config
from wslb.middleware.chain import Counting
from wslb.middleware.responses import AddHeaders, AffinityCookie, CorsHeaders, SetHeaders
from wslb.middleware.steps import (
    Allow,
    CorsPreflight,
    EngineIORouting,
    HandshakeAdmission,
    RateLimits,
    RedirectHTTPS,
    TunnelCap,
)
from wslb.server.tunnel.relay import Tunnel

GET = b"GET /items?id=1 HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\n\r\n"
FORWARDED = (
    b"GET /items?id=1 HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\n"
    b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n\r\n"
)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
WS = (
    b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
SWITCHED = (  # what the client gets: hop-by-hop fields rewritten last
    b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
)


def status_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


async def test_a_plain_get_goes_through_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    play = Playbook(http_config(), monkeypatch)
    await play.run(
        [
            (">>", "client", GET),
            ("<<", "upstream", FORWARDED),
            (">>", "upstream", OK),
            ("<<", "client", OK),
        ]
    )
    backend = play.runtime.backends["app"]
    ep = play.endpoint("upstream").ep
    assert ep.active == 0
    assert len(backend.pools[ep]) == 1  # back in the pool, for the next request
    await play.run([(">>", "client", GET), ("<<", "upstream", FORWARDED)])
    assert len(play.opened) == 1 or play.opened[-1].ep is not ep  # reused, or the other one


async def test_a_plain_route_walks_empty_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    play = Playbook(http_config(engineio_affinity=False), monkeypatch)
    listener = play.runtime.listeners["web"]
    (route,) = listener.route_states
    assert listener.steps == ()
    assert (route.steps, route.session_steps, route.response_steps) == ((), (), ())
    assert route.chooser is None and route.request_headers is None
    # by default a route routes Engine.IO sessions: that one step
    play = Playbook(http_config(), monkeypatch)
    (route,) = play.runtime.listeners["web"].route_states
    assert [type(s) for s in route.steps] == [EngineIORouting]


async def test_steps_are_compiled_in_the_documented_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = http_config(
        cors={"allow_origins": ["https://a.test"]},
        allow=["127.0.0.0/8"],
        redirect_https={},
        engineio_affinity=True,
        limits={"rps": 10, "connections": 5},
        admission={"rate": 10},
        affinity={"name": "route"},
        headers={
            "response_set": [{"name": "X-A", "value": "1"}],
            "response_add": [{"name": "X-B", "value": "2"}],
        },
        backend={"max_tunnels": 10},
    )
    config["listeners"][0].update(allow=["127.0.0.0/8"], redirect_https={})
    play = Playbook(config, monkeypatch)
    listener = play.runtime.listeners["web"]
    (route,) = listener.route_states
    assert [type(s) for s in listener.steps] == [Allow, RedirectHTTPS]
    assert [type(s) for s in route.steps] == [
        CorsPreflight,
        Allow,
        RedirectHTTPS,
        EngineIORouting,
        RateLimits,
    ]
    assert [type(s) for s in route.session_steps] == [HandshakeAdmission, TunnelCap]
    assert [type(s) for s in route.response_steps] == [
        CorsHeaders,
        AffinityCookie,
        SetHeaders,
        AddHeaders,
    ]
    assert all(isinstance(s, Counting) for s in route.stateful)
    assert [type(s) for s in route.stateful] == [RateLimits, HandshakeAdmission]


async def test_the_first_step_that_answers_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    # the route's access list comes before its redirect: 403, not 308
    play = Playbook(http_config(deny=["127.0.0.1/32"], redirect_https={}), monkeypatch)
    await play.send("client", GET)
    got = await play.received("client")
    assert status_line(got) == b"HTTP/1.1 403 Forbidden"
    assert play.opened == []
    # and a listener's steps come before routing: its redirect answers before any route
    config = http_config(deny=["127.0.0.1/32"])
    config["listeners"][0]["redirect_https"] = {}
    play = Playbook(config, monkeypatch)
    await play.send("client", GET)
    got = await play.received("client")
    assert status_line(got) == b"HTTP/1.1 308 Permanent Redirect"
    assert b"Location: https://app.test/items?id=1\r\n" in got


def _holds_config() -> dict[str, Any]:
    return http_config(limits={"connections": 1}, backend={"max_tunnels": 1})


def _held(play: Playbook) -> tuple[int, int, dict[str, int]]:
    """(endpoint active counts, tunnel places, connection-limit counts) held now."""
    backend = play.runtime.backends["app"]
    (route,) = play.runtime.listeners["web"].route_states
    (limits,) = (s for s in route.steps if isinstance(s, RateLimits))
    assert limits.connections is not None
    return (
        sum(ep.active for ep in backend.endpoints),
        backend.tunnels.n,
        dict(limits.connections._counts),
    )


FREE = (0, 0, {})


@pytest.mark.parametrize(
    "ending",
    ["refused upgrade", "client gone", "aborted mid-response", "504", "tunnel closed"],
)
async def test_every_ending_gives_back_every_hold(
    monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    play = Playbook(_holds_config(), monkeypatch)
    await play.send("client", WS)
    assert play.endpoint("upstream").transport.take().startswith(b"GET /ws HTTP/1.1\r\n")
    assert _held(play) == (1, 1, {"127.0.0.1": 1})
    if ending == "refused upgrade":
        await play.send("upstream", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        assert status_line(await play.received("client")) == b"HTTP/1.1 403 Forbidden"
    elif ending == "client gone":
        await play.close("client")
    elif ending == "aborted mid-response":
        await play.send("upstream", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await play.close("upstream")
        assert play.client.closing
    elif ending == "504":
        play.down.sweep(play.loop.time() + 3600)
        assert status_line(await play.received("client")) == b"HTTP/1.1 504 Gateway Timeout"
    else:
        await play.send("upstream", SWITCHING)
        assert await play.received("client") == SWITCHED
        (tunnel,) = (c for c in play.runtime.connections if isinstance(c, Tunnel))
        assert _held(play) == (1, 1, {"127.0.0.1": 1})  # the tunnel holds them now
        await play.send("client", b"\x81\x02hi")
        assert play.endpoint("upstream").transport.take() == b"\x81\x02hi"
        await play.close("client")
        assert tunnel.closed
    assert _held(play) == FREE


async def test_a_refused_connect_is_retried_once_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    play = Playbook(http_config(backend={"keepalive": {"enabled": False}}), monkeypatch)
    backend = play.runtime.backends["app"]
    first = backend.pick(play.loop.time())
    assert first is not None
    play.refuse.add(first.address)
    await play.run([(">>", "client", GET)])
    (conn,) = play.opened
    assert conn.ep is not first
    assert conn.transport.take().startswith(b"GET /items?id=1 HTTP/1.1\r\n")
    assert first.active == 0 and conn.ep.active == 1
    await play.run([(">>", "upstream", OK), ("<<", "client", OK)])
    assert _active(play) == 0


def _active(play: Playbook) -> int:
    return sum(ep.active for ep in play.runtime.backends["app"].endpoints)


async def test_two_refused_connects_are_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    play = Playbook(http_config(), monkeypatch)
    play.refuse.update(ep.address for ep in play.runtime.backends["app"].endpoints)
    await play.send("client", GET)
    got = await play.received("client")
    assert status_line(got) == b"HTTP/1.1 502 Bad Gateway"
    assert got.endswith(b"\r\n\r\n502 Bad Gateway\n")
    assert _active(play) == 0


async def test_connects_that_never_complete_are_a_504(monkeypatch: pytest.MonkeyPatch) -> None:
    play = Playbook(http_config(timeouts={"connect": 0.02}), monkeypatch)
    play.hang.update(ep.address for ep in play.runtime.backends["app"].endpoints)
    await play.send("client", GET)
    for _ in range(100):  # two connect timeouts of 20 ms, bounded
        got = await play.received("client")
        if got:
            break
        await asyncio.sleep(0.01)
    assert status_line(got) == b"HTTP/1.1 504 Gateway Timeout"
    assert _active(play) == 0


async def test_no_available_endpoint_is_a_503_with_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    play = Playbook(http_config(backend={"retry_after": 7}), monkeypatch)
    backend = play.runtime.backends["app"]
    for ep in backend.endpoints:
        ep.healthy = False
    backend.health_changed()
    await play.send("client", GET)
    got = await play.received("client")
    assert status_line(got) == b"HTTP/1.1 503 Service Unavailable"
    assert b"\r\nRetry-After: 7\r\n" in got
    assert play.opened == []


async def test_a_dead_pooled_connection_is_replaced_for_an_idempotent_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    play = Playbook(http_config(backend={"endpoints": ["10.0.0.1:80"]}), monkeypatch)
    await play.run(
        [
            (">>", "client", GET),
            ("<<", "upstream", FORWARDED),
            (">>", "upstream", OK),
            ("<<", "client", OK),
        ]
    )
    pooled = play.endpoint("upstream")
    # the next request takes the pooled connection, which turns out closed by the endpoint
    await play.send("client", GET)
    assert len(play.opened) == 1 and pooled.transport.take() == FORWARDED
    await play.close("upstream")
    assert len(play.opened) == 2  # a new connection, transparently
    await play.run([("<<", "upstream", FORWARDED), (">>", "upstream", OK), ("<<", "client", OK)])
    assert _active(play) == 0


async def test_an_upgrade_hands_both_connections_to_a_tunnel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    play = Playbook(http_config(), monkeypatch)
    await play.send("client", WS + b"\x81\x05early")  # bytes after the head wait for the 101
    conn = play.endpoint("upstream")
    assert conn.transport.take().startswith(b"GET /ws HTTP/1.1\r\n")
    await play.send("upstream", SWITCHING + b"\x81\x05hello")
    assert await play.received("client") == SWITCHED + b"\x81\x05hello"
    assert conn.transport.take() == b"\x81\x05early"
    (tunnel,) = (c for c in play.runtime.connections if isinstance(c, Tunnel))
    assert play.client.protocol is tunnel.down and conn.transport.protocol is tunnel.up
    await play.send("client", b"\x81\x03abc")
    assert conn.transport.take() == b"\x81\x03abc"
    await play.close("upstream")
    assert tunnel.closed and play.client.closing
    assert _active(play) == 0
