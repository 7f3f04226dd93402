"""HTTP/2 in and out: ALPN and h2c, HTTP/2 to HTTP/1.1 and to HTTP/2 backends, streamed bodies
and trailers, WebSockets over HTTP/2 streams (RFC 8441), resets, GOAWAY and flood defences.

Clients: nghttp and h2load (Debian's nghttp2-client), httpx, websockets, and tests/support's
HTTP/2 client (h2 + wsproto) where a test needs many streams on one connection or raw frames.
HTTP/2 backends: Hypercorn serving the test backend's app (h2c and TLS, RFC 8441 enabled).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.errors
import hpack
import httpx
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints, http_config
from tests.support.browser import run_browser_script
from tests.support.h2client import H2Client
from tests.support.procs import Proc, Wslb, scaled, start_backend
from tests.support.raw import RecordingBackend

NGHTTP = shutil.which("nghttp")
H2LOAD = shutil.which("h2load")
needs_nghttp2 = pytest.mark.skipif(
    NGHTTP is None or H2LOAD is None, reason="nghttp2-client is not installed (.ci/run installs it)"
)

BACKEND_KINDS = ["http", "h2c", "http2"]


@pytest.fixture(scope="module")
def h2_backends(
    tmp_path_factory: pytest.TempPathFactory, server_cert: tuple[str, str]
) -> Iterator[dict[str, Proc]]:
    """Hypercorn: h2c (clear text, prior knowledge) and http2 (TLS, ALPN h2)."""
    wd = tmp_path_factory.mktemp("h2b")
    procs = {
        "h2c": start_backend("h2c", wd, server="hypercorn"),
        "http2": start_backend("h2tls", wd, server="hypercorn", tls=server_cert),
    }
    yield procs
    for p in procs.values():
        p.stop()


def _backend(kind: str, backends: list[Proc], h2_backends: dict[str, Proc]) -> dict[str, Any]:
    if kind == "http":
        return {"endpoints": endpoints(backends[:1])}
    proc = h2_backends[kind]
    spec: dict[str, Any] = {"protocol": kind, "endpoints": endpoints([proc])}
    if kind == "http2":
        spec["tls"] = {"verify": False}
    return spec


def _tls_listener(server_cert: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"tls": {"certificate": server_cert[0], "key": server_cert[1]}, **extra}


def _tls_config(
    backend: dict[str, Any], server_cert: tuple[str, str], **listener: Any
) -> dict[str, Any]:
    """One https listener (HTTP/2 on, as by default), one route to ``backend``."""
    return http_config(
        [], backend=backend, listener=_tls_listener(server_cert, **listener), protocol="https"
    )


def _ctx(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=scaled(timeout), check=False
    )


# --------------------------------------------------------------------------- negotiation


async def test_alpn_offers_h2_then_http11_and_http2_false_turns_it_off(
    wslb: Callable[..., Wslb], backends: list[Proc], server_cert: tuple[str, str], ca_file: str
) -> None:
    lb = wslb(
        {
            "listeners": [
                {
                    "name": "on",
                    "address": "127.0.0.1",
                    "port": 0,
                    "protocol": "https",
                    **_tls_listener(server_cert),
                },
                {
                    "name": "off",
                    "address": "127.0.0.1",
                    "port": 0,
                    "protocol": "https",
                    **_tls_listener(server_cert, http2=False),
                },
            ],
            "backends": [{"name": "app", "endpoints": endpoints(backends[:1])}],
            "routes": [{"backend": "app"}],
        }
    )

    async def alpn(listener: str, offer: list[str]) -> str | None:
        ctx = _ctx(ca_file)
        ctx.set_alpn_protocols(offer)
        _, writer = await asyncio.open_connection(
            "127.0.0.1", lb.port(listener), ssl=ctx, server_hostname="localhost"
        )
        got = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        writer.close()
        return got  # type: ignore[no-any-return]

    assert await alpn("on", ["h2", "http/1.1"]) == "h2"
    assert await alpn("on", ["http/1.1"]) == "http/1.1"
    assert await alpn("off", ["h2", "http/1.1"]) == "http/1.1"
    async with httpx.AsyncClient(http2=True, verify=_ctx(ca_file)) as client:
        on = await client.get(f"https://localhost:{lb.port('on')}/x")
        off = await client.get(f"https://localhost:{lb.port('off')}/x")
    assert (on.status_code, on.http_version) == (200, "HTTP/2")
    assert (off.status_code, off.http_version) == (200, "HTTP/1.1")
    assert on.json()["http_version"] == "1.1"  # HTTP/2 in, HTTP/1.1 to this backend


@needs_nghttp2
async def test_h2c_prior_knowledge_only_when_enabled(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(
        {
            "listeners": [
                {
                    "name": "h2c",
                    "address": "127.0.0.1",
                    "port": 0,
                    "protocol": "http",
                    "http2": True,
                },
                {"name": "plain", "address": "127.0.0.1", "port": 0, "protocol": "http"},
            ],
            "backends": [{"name": "app", "endpoints": endpoints(backends[:1])}],
            "routes": [{"backend": "app"}],
        }
    )
    ok = _run([NGHTTP, f"http://127.0.0.1:{lb.port('h2c')}/hello"])  # type: ignore[list-item]
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["path"] == "/hello"
    refused = _run([NGHTTP, "-t", "5", f"http://127.0.0.1:{lb.port('plain')}/hello"])  # type: ignore[list-item]
    assert refused.stdout == "" and "not processed" in refused.stderr
    # HTTP/1.1 still works on the h2c listener, and on the plain one
    async with httpx.AsyncClient() as client:
        for name in ("h2c", "plain"):
            r = await client.get(f"http://127.0.0.1:{lb.port(name)}/x")
            assert (r.status_code, r.http_version) == (200, "HTTP/1.1")


# --------------------------------------------------------------------------- forwarding


@needs_nghttp2
@pytest.mark.parametrize("kind", BACKEND_KINDS)
async def test_nghttp_get_and_upload_to_each_backend_kind(
    kind: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    h2_backends: dict[str, Proc],
    server_cert: tuple[str, str],
    tmp_path: Path,
) -> None:
    lb = wslb(
        _tls_config(
            _backend(kind, backends, h2_backends), server_cert, client={"max_body_size": "16MiB"}
        )
    )
    url = f"https://127.0.0.1:{lb.port('web')}"
    got = _run([NGHTTP, f"{url}/echo?q=1"])  # type: ignore[list-item]
    assert got.returncode == 0, got.stderr
    echo = json.loads(got.stdout)
    assert echo["path"] == "/echo" and echo["query"] == "q=1"
    assert echo["http_version"] == ("1.1" if kind == "http" else "2")
    headers = dict(echo["headers"])
    assert headers.get("x-forwarded-proto") == "https"
    assert headers.get("x-forwarded-for") == "127.0.0.1"
    assert headers.get("host", headers.get(":authority")) == f"127.0.0.1:{lb.port('web')}"
    body = random.Random(5).randbytes(3 * 1024 * 1024 + 17)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    posted = json.loads(_run([NGHTTP, "-d", str(upload), f"{url}/up"]).stdout)  # type: ignore[list-item]
    assert posted["method"] == "POST" and posted["body_size"] == len(body)
    assert posted["body_sha256"] == hashlib.sha256(body).hexdigest()


@needs_nghttp2
@pytest.mark.parametrize("kind", BACKEND_KINDS)
async def test_h2load_many_streams_to_each_backend_kind(
    kind: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    h2_backends: dict[str, Proc],
    server_cert: tuple[str, str],
) -> None:
    backend = _backend(kind, backends, h2_backends)
    if kind == "http":
        backend["keepalive"] = {"enabled": True}
    lb = wslb(
        http_config([], backend=backend, listener=_tls_listener(server_cert), protocol="https")
    )
    out = _run(
        [H2LOAD, "-n", "2000", "-c", "4", "-m", "20", f"https://127.0.0.1:{lb.port('web')}/x"],  # type: ignore[list-item]
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "2000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout
    assert "status codes: 2000 2xx" in out.stdout, out.stdout
    assert "Application protocol: h2" in out.stdout


@pytest.mark.parametrize("kind", BACKEND_KINDS)
async def test_bodies_streamed_both_ways_with_httpx(
    kind: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    h2_backends: dict[str, Proc],
    server_cert: tuple[str, str],
    ca_file: str,
) -> None:
    lb = wslb(
        _tls_config(
            _backend(kind, backends, h2_backends), server_cert, client={"max_body_size": "64MiB"}
        )
    )
    base = f"https://localhost:{lb.port('web')}"
    size = 8 * 1024 * 1024 + 3
    body = random.Random(11).randbytes(size)

    async def pieces() -> Any:
        for i in range(0, size, 100_000):
            yield body[i : i + 100_000]

    async with httpx.AsyncClient(http2=True, verify=_ctx(ca_file), timeout=scaled(60)) as client:
        up = await client.post(f"{base}/up", content=pieces())  # no length: streamed
        assert up.http_version == "HTTP/2"
        assert up.json()["body_size"] == size
        assert up.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        for chunked in ("0", "1"):
            digest = hashlib.sha256()
            n = 0
            async with client.stream("GET", f"{base}/bytes/{size}?chunked={chunked}") as r:
                assert r.status_code == 200
                async for chunk in r.aiter_bytes():
                    digest.update(chunk)
                    n += len(chunk)
            expected = (bytes(range(256)) * 256 * (size // 65536 + 1))[:size]
            assert n == size and digest.hexdigest() == hashlib.sha256(expected).hexdigest()


CHUNKED_WITH_TRAILERS = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum, grpc-status\r\n\r\n"
    b"6\r\npart1;\r\n5\r\npart2\r\n0\r\nx-checksum: abc123\r\ngrpc-status: 0\r\n\r\n"
)


async def _chunked_with_trailers(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: Any
) -> None:
    while b"\r\n\r\n" not in rec.data:
        chunk = await reader.read(65536)
        if not chunk:
            return
        rec.data += chunk
    writer.write(CHUNKED_WITH_TRAILERS)
    await writer.drain()


@pytest.mark.parametrize("kind", ["http", "h2c"])
async def test_response_trailers_kept(
    kind: str, wslb: Callable[..., Wslb], h2_backends: dict[str, Proc]
) -> None:
    """Trailers of a chunked HTTP/1.1 response or an HTTP/2 one reach an HTTP/2 client."""
    async with RecordingBackend(_chunked_with_trailers) as raw:
        if kind == "h2c":
            backend = {"protocol": "h2c", "endpoints": endpoints([h2_backends["h2c"]])}
        else:
            backend = {"endpoints": [f"127.0.0.1:{raw.port}"]}
        lb = wslb(http_config([], backend=backend, listener={"http2": True}))
        client = await H2Client.connect("127.0.0.1", lb.port("web"))
        try:
            r = await client.request(b"GET", b"/trailers", [(b"te", b"trailers")])
        finally:
            await client.close()
        if kind == "http":
            assert b"TE: trailers\r\n" in raw.connections[0].data
    assert r.status == 200 and r.body == b"part1;part2"
    assert dict(r.trailers) == {b"x-checksum": b"abc123", b"grpc-status": b"0"}


async def test_request_trailers_and_unknown_length_body_reach_an_http11_backend(
    wslb: Callable[..., Wslb],
) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: Any) -> None:
        buf = b""
        while b"\r\n0\r\n" not in buf or not buf.endswith(b"\r\n\r\n"):
            chunk = await reader.read(65536)
            if not chunk:
                return
            buf += chunk
        seen.append(buf)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with RecordingBackend(handler) as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"], listener={"http2": True}))
        client = await H2Client.connect("127.0.0.1", lb.port("web"))
        try:
            r = await client.request(b"POST", b"/t", body=b"hello", trailers=[(b"x-sum", b"5")])
        finally:
            await client.close()
    assert r.status == 200 and r.body == b"ok"
    head, _, rest = seen[0].partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert rest == b"5\r\nhello\r\n0\r\nx-sum: 5\r\n\r\n"


# --------------------------------------------------------------------------- WebSockets


async def _talk(ws: Any, name: str, rounds: int, rng: random.Random) -> float:
    """Interleaved traffic both ways: echoes of random sizes and server-sent bursts."""
    start = time.monotonic()
    for i in range(rounds):
        if i % 3 == 2:
            n = rng.randrange(1, 40_000)
            await ws.send(f"bytes:{n}")
            got = await ws.recv()
            assert got == b"x" * n, (name, i)
        else:
            payload = f"{name}:{i}:" + "y" * rng.randrange(0, 5000)
            await ws.send(payload)
            assert await ws.recv() == payload, (name, i)
    return time.monotonic() - start


@pytest.mark.parametrize("kind", ["http", "h2c"])
async def test_hundred_websockets_multiplexed_on_one_connection(
    kind: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    h2_backends: dict[str, Proc],
    server_cert: tuple[str, str],
    ca_file: str,
) -> None:
    lb = wslb(_tls_config(_backend(kind, backends, h2_backends), server_cert))
    client = await H2Client.connect("localhost", lb.port("web"), _ctx(ca_file))
    try:
        sockets = await asyncio.gather(*(client.websocket(b"/ws") for _ in range(100)))
        assert len({ws.sid for ws in sockets}) == 100
        # One more that never reads what it asks for: its window closes, nobody else's does.
        stalled = await client.websocket(b"/ws")
        client.hold(stalled.sid)
        await stalled.send("bytes:3000000")
        durations = await asyncio.wait_for(
            asyncio.gather(
                *(_talk(ws, f"ws{i}", 15, random.Random(i)) for i, ws in enumerate(sockets))
            ),
            scaled(90),
        )
        assert len(durations) == 100  # every WebSocket finished: none starved
        client.release(stalled.sid)
        got = await stalled.recv(timeout=scaled(30))
        assert got == b"x" * 3_000_000
        versions = {await _version(ws) for ws in sockets[:3]}
        assert versions == ({"1.1"} if kind == "http" else {"2"})
        codes = await asyncio.gather(*(ws.close() for ws in sockets))
        assert set(codes) == {1000}
    finally:
        await client.close()
    log = lb.wait_output("WebSocket over HTTP/2 stream")
    assert log.count("(RFC 8441)") >= 101


async def _version(ws: Any) -> str:
    await ws.send("version")
    return str(await ws.recv())


@pytest.mark.parametrize("kind", ["h2c", "http2"])
async def test_http11_websocket_client_to_an_http2_backend_uses_extended_connect(
    kind: str, wslb: Callable[..., Wslb], backends: list[Proc], h2_backends: dict[str, Proc]
) -> None:
    lb = wslb(http_config([], backend=_backend(kind, backends, h2_backends)))
    async with connect(
        f"ws://127.0.0.1:{lb.port('web')}/ws", open_timeout=scaled(10), close_timeout=1
    ) as ws:
        assert await _version(ws) == "2"  # the handshake reached the backend over HTTP/2
        big = random.Random(3).randbytes(1_000_000)
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send("whoami")
        assert await ws.recv() in ("h2c", "h2tls")


@pytest.mark.parametrize("kind", ["h2c", "http2"])
async def test_websocket_to_an_http2_backend_without_rfc8441_goes_as_an_http11_upgrade(
    kind: str,
    wslb: Callable[..., Wslb],
    tmp_path: Path,
    server_cert: tuple[str, str],
    ca_file: str,
) -> None:
    """An HTTP/2 endpoint that does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL gets its
    requests over HTTP/2 and its WebSockets as HTTP/1.1 Upgrades on a connection of their own,
    whether the client came in over HTTP/1.1 or as an RFC 8441 stream."""
    tls = server_cert if kind == "http2" else None
    proc = start_backend("no8441", tmp_path, tls=tls, server="hypercorn-no8441")
    try:
        spec: dict[str, Any] = {"protocol": kind, "endpoints": endpoints([proc])}
        if kind == "http2":
            spec["tls"] = {"verify": False}
        lb = wslb(
            http_config([], backend=spec, listener=_tls_listener(server_cert), protocol="https")
        )
        port = lb.port("web")
        client = await H2Client.connect("localhost", port, _ctx(ca_file))
        try:
            r = await client.request(b"GET", b"/plain")
            assert r.status == 200
            assert json.loads(r.body)["http_version"] == "2"  # plain requests: HTTP/2
            sockets = await asyncio.gather(*(client.websocket(b"/ws") for _ in range(5)))
            for i, ws in enumerate(sockets):
                assert await _version(ws) == "1.1"
                await ws.send(f"hello {i}")
                assert await ws.recv() == f"hello {i}"
            assert set(await asyncio.gather(*(ws.close() for ws in sockets))) == {1000}
        finally:
            await client.close()
        async with connect(
            f"wss://localhost:{port}/ws",
            ssl=_ctx(ca_file),
            open_timeout=scaled(10),
            close_timeout=scaled(5),
        ) as ws:
            assert await _version(ws) == "1.1"
            payload = random.Random(5).randbytes(300_000)
            await ws.send(payload)
            assert await ws.recv() == payload
    finally:
        proc.stop()


async def test_websocket_refused_by_backend_is_a_normal_response_over_h2(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1]), listener={"http2": True}))
    client = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        with pytest.raises(ConnectionRefusedError, match="403"):
            await client.websocket(b"/ws-refuse")
        # bad version: the same answer as over HTTP/1.1 (426), and the connection lives on
        sid = client.start(
            b"CONNECT",
            b"/ws",
            [(b"sec-websocket-version", b"8")],
            end_stream=False,
            extra_pseudo=[(b":protocol", b"websocket")],
        )
        r = await client.response(sid)
        assert r.status == 426 and r.header(b"sec-websocket-version") == b"13"
        sid = client.start(
            b"CONNECT", b"/x", end_stream=False, extra_pseudo=[(b":protocol", b"smtp")]
        )
        assert (await client.response(sid)).status == 501
        assert (await client.request(b"GET", b"/ok")).status == 200
    finally:
        await client.close()


# --------------------------------------------------------------------------- resets, GOAWAY


async def test_a_reset_stream_never_hurts_its_neighbours(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1]), listener={"http2": True}))
    client = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        ws = await client.websocket(b"/ws")
        size = 20 * 1024 * 1024
        downloads = [client.start(b"GET", f"/bytes/{size}".encode()) for _ in range(3)]
        victim = client.start(b"GET", f"/bytes/{size}".encode())
        slow = client.start(b"GET", b"/slow?delay=0.5")
        await asyncio.wait_for(client.streams[victim].headers, scaled(10))
        await client.streams[victim].data.get()  # the victim's body is flowing
        client.reset(victim)
        ws_victim = await client.websocket(b"/ws")
        await ws_victim.send("whoami")
        await ws_victim.recv()
        client.reset(ws_victim.sid)
        await ws.send("still here")
        assert await ws.recv() == "still here"
        for sid in downloads:
            r = await client.response(sid, timeout=scaled(60))
            assert r.status == 200 and len(r.body) == size
        assert (await client.response(slow)).status == 200
        assert (await client.request(b"GET", b"/after")).status == 200
    finally:
        await client.close()
    lb.wait_output("stream closed before its response ended")


async def test_graceful_goaway_on_shutdown_lets_open_streams_finish(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    config = http_config(endpoints(backends[:1]), listener={"http2": True})
    config["server"] = {"shutdown_grace": 20}
    lb = wslb(config)
    client = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        slow = [client.start(b"GET", b"/slow?delay=1.5") for _ in range(5)]
        upload = client.start(b"POST", b"/up", end_stream=False)
        await client.send_data(upload, b"a" * 100_000)
        # wslb reads a connection's frames in order: once this answer is in, so are the above.
        assert (await client.request(b"GET", b"/sync")).status == 200
        lb.signal(signal.SIGTERM)
        await asyncio.wait_for(client.goaway_seen.wait(), scaled(10))
        goaway = client.goaway
        assert goaway is not None and goaway.error_code == 0
        assert goaway.last_stream_id >= upload
        await client.send_data(upload, b"b" * 100_000, end_stream=True)
        for sid in slow:
            assert (await client.response(sid, timeout=scaled(20))).status == 200
        r = await client.response(upload, timeout=scaled(20))
        assert json.loads(r.body)["body_size"] == 200_000
        await asyncio.wait_for(client.closed.wait(), scaled(15))  # then the connection closes
    finally:
        await client.close()
    assert lb.proc.wait(timeout=scaled(20)) == 0


# --------------------------------------------------------------------------- defences


@pytest.mark.parametrize("flood", ["ping", "settings", "rapid-reset"])
async def test_floods_get_goaway_enhance_your_calm(
    flood: str, wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends[:1]), listener={"http2": True}))
    client = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        for i in range(3000):
            if client.closed.is_set():
                break
            if flood == "ping":
                client.writer.write(PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize())
            elif flood == "settings":
                client.writer.write(SettingsFrame(0, settings={4: 65535 + i}).serialize())
            else:
                sid = client.start(b"GET", b"/slow?delay=5")
                client.reset(sid)
            if i % 50 == 0:
                try:
                    await client.writer.drain()
                except ConnectionError:
                    break  # wslb closed the connection while the flood went on
                await asyncio.sleep(0)
        await asyncio.wait_for(client.closed.wait(), scaled(15))
        # The GOAWAY may be lost to the reset the flood's unread bytes cause; when it arrives,
        # it says why.
        if client.goaway is not None:
            assert client.goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        await client.close()
    lb.wait_output("too many frames without requests")
    # wslb serves the next client as if nothing happened
    fresh = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        assert (await fresh.request(b"GET", b"/ok")).status == 200
    finally:
        await fresh.close()


async def test_stream_and_header_limits_are_advertised_and_enforced(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(
        http_config(
            endpoints(backends[:1]),
            listener={
                "http2": True,
                "client": {"max_concurrent_streams": 8, "max_header_size": "4KiB"},
            },
        )
    )
    client = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        settings = client.conn.remote_settings
        assert settings.max_concurrent_streams == 8
        assert settings.max_header_list_size == 4096
        assert settings.enable_connect_protocol == 1
        sids = [client.start(b"GET", b"/slow?delay=0.3") for _ in range(8)]
        for sid in sids:
            assert (await client.response(sid)).status == 200
        # a header list over the limit ends this connection only
        client.start(b"GET", b"/big", [(b"x-big", b"v" * 20_000)])
        await asyncio.wait_for(client.closed.wait(), scaled(10))
    finally:
        await client.close()
    fresh = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        assert (await fresh.request(b"GET", b"/ok")).status == 200
    finally:
        await fresh.close()


@pytest.mark.parametrize("flood", ["continuation", "header-count"])
async def test_header_floods_end_the_connection_only(
    flood: str, wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    """libnghttp2's own limits: CONTINUATION frames after one HEADERS (CVE-2024-27316: the
    server must not buffer a header block without end) and fields in one block."""
    lb = wslb(http_config(endpoints(backends[:1]), listener={"http2": True}))
    client = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        assert (await client.request(b"GET", b"/before")).status == 200
        if flood == "continuation":
            block = hpack.Encoder().encode(
                [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http")]
                + [(b":authority", b"a")]
                + [(b"x-f%d" % i, b"v" * 20) for i in range(200)]
            )
            headers = HeadersFrame(101, data=block[:16])
            headers.flags.add("END_STREAM")  # and no END_HEADERS: CONTINUATION follows
            frames = [headers.serialize()]
            for off in range(16, len(block), 16):
                frames.append(ContinuationFrame(101, data=block[off : off + 16]).serialize())
            client.writer.write(b"".join(frames))  # never END_HEADERS
        else:
            many = [(b"x-f%d" % i, b"v") for i in range(3000)]
            client.start(b"GET", b"/many", many)
        await asyncio.wait_for(client.closed.wait(), scaled(10))
    finally:
        await client.close()
    lb.wait_output("HTTP/2 peer over a limit")
    fresh = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        assert (await fresh.request(b"GET", b"/ok")).status == 200
    finally:
        await fresh.close()


# --------------------------------------------------------------------------- middlewares


def _middleware_config(eps: list[str], server_cert: tuple[str, str]) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "tls",
                "address": "127.0.0.1",
                "port": 0,
                "protocol": "https",
                **_tls_listener(server_cert),
            },
            {"name": "h2c", "address": "127.0.0.1", "port": 0, "protocol": "http", "http2": True},
        ],
        "backends": [{"name": "app", "endpoints": eps, "health": {"enabled": False}}],
        "routes": [
            {
                "path": "/cors",
                "backend": "app",
                "cors": {"allow_origins": ["https://app.example"], "max_age": 60},
            },
            {"path": "/sticky", "backend": "app", "affinity": {"name": "route"}},
            {"path": "/limited", "backend": "app", "limits": {"rps": 1, "burst_multiplier": 1}},
            {"path": "/small", "backend": "app", "max_body_size": 10},
            {"path": "/secure", "backend": "app", "redirect_https": {"port": 8443}},
            {"path": "/private", "backend": "app", "deny": ["127.0.0.0/8"]},
            {
                "path": "/",
                "backend": "app",
                "headers": {
                    "request_set": [{"name": "X-Route", "value": "root $scheme"}],
                    "response_add": [{"name": "X-Added", "value": "yes"}],
                },
            },
        ],
    }


async def _observe(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    """What each middleware does, as a client sees it."""
    out: dict[str, Any] = {}
    pre = await client.options(
        f"{base}/cors/x",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"},
    )
    out["preflight"] = (
        pre.status_code,
        pre.headers.get("access-control-allow-origin"),
        pre.headers.get("access-control-max-age"),
    )
    simple = await client.get(f"{base}/cors/x", headers={"Origin": "https://app.example"})
    out["cors"] = (simple.status_code, simple.headers.get("access-control-allow-origin"))
    first = await client.get(f"{base}/sticky/x")
    cookie = first.cookies.get("route")
    servers = {first.json()["server"]}
    for _ in range(6):
        r = await client.get(f"{base}/sticky/x")  # the client's jar sends the cookie
        servers.add(r.json()["server"])
    out["sticky"] = (first.status_code, cookie is not None, len(servers))
    statuses = [(await client.get(f"{base}/limited/x")).status_code for _ in range(4)]
    out["limited"] = (statuses[0], 503 in statuses)
    out["small"] = (await client.post(f"{base}/small/x", content=b"y" * 100)).status_code
    redirect = await client.get(f"{base}/secure/x?a=1")
    out["secure"] = (redirect.status_code, redirect.headers.get("location"))
    out["private"] = (await client.get(f"{base}/private/x")).status_code
    root = await client.get(f"{base}/x")
    echoed = dict(root.json()["headers"])
    out["headers"] = (echoed.get("x-route"), root.headers.get("x-added"))
    return out


async def test_middlewares_behave_the_same_over_http2_and_http11(
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    server_cert: tuple[str, str],
    ca_file: str,
) -> None:
    """Redirect, CORS, cookie affinity, limits, body size, access rules and header rules:
    the answers over HTTP/2 (TLS and h2c) are the answers over HTTP/1.1."""
    results = {}
    for listener, scheme in (("tls", "https"), ("h2c", "http")):
        for http2 in (False, True):
            lb = wslb(_middleware_config(endpoints(backends), server_cert))
            base = f"{scheme}://localhost:{lb.port(listener)}"
            kwargs: dict[str, Any] = {"verify": _ctx(ca_file)} if scheme == "https" else {}
            if http2 and scheme == "http":
                kwargs["http1"] = False  # HTTP/2 with prior knowledge
            async with httpx.AsyncClient(http2=http2, timeout=scaled(20), **kwargs) as client:
                version = (await client.get(f"{base}/x")).http_version
                assert version == ("HTTP/2" if http2 else "HTTP/1.1")
                results[(listener, http2)] = await _observe(client, base)
            lb.stop()
    for listener in ("tls", "h2c"):
        assert results[(listener, True)] == results[(listener, False)], listener
    tls, h2c = results[("tls", True)], results[("h2c", True)]
    assert tls["preflight"] == (204, "https://app.example", "60")
    assert tls["cors"] == (200, "https://app.example")
    assert tls["sticky"] == (200, True, 1)
    assert tls["limited"] == (200, True)
    assert tls["small"] == 413
    assert tls["secure"][0] == 200  # already on TLS
    assert h2c["secure"] == (308, "https://localhost:8443/secure/x?a=1")
    assert tls["private"] == 403
    assert tls["headers"] == ("root https", "yes")
    assert h2c["headers"] == ("root http", "yes")


# --------------------------------------------------------------------------- a real browser


def test_chromium_page_over_h2_and_websocket_over_an_http2_stream(
    wslb: Callable[..., Wslb], backends: list[Proc], server_cert: tuple[str, str]
) -> None:
    """Chromium loads a page from a TLS listener that negotiated h2 and opens wss:// on the
    same origin: the WebSocket runs as an RFC 8441 stream of that connection (wslb's own
    accounting says so) and talks to an HTTP/1.1 backend."""
    lb = wslb(
        http_config(endpoints(backends[:1]), listener=_tls_listener(server_cert), protocol="https")
    )
    out = run_browser_script("browser_h2_ws.js", f"https://localhost:{lb.port('web')}/page")
    assert out["protocol"] == "h2"
    assert out["result"]["echoes"] == [f"message {i}" for i in range(20)]
    assert out["result"]["server"] == "a"
    # wslb's accounting: the WebSocket was a stream of an HTTP/2 connection, not a connection
    log = lb.wait_output("websocket (HTTP/2 stream) tunnel")
    opened = re.search(r"\[(c\d+)\] WebSocket over HTTP/2 stream (\d+) \(RFC 8441\)", log)
    assert opened is not None, log
    closed = re.search(
        rf"\[{opened[1]}\.{opened[2]}\] \S+ \"GET /ws HTTP/2\" websocket \(HTTP/2 stream\) "
        r"tunnel to \S+ closed after [\d.]+s: "
        r".*; (\d+) bytes from client, (\d+) from upstream",
        log,
    )
    assert closed is not None, log
    # 21 frames each way at least (2-byte headers; permessage-deflate may shrink payloads)
    assert int(closed[1]) >= 21 * 2 and int(closed[2]) >= 21 * 2
