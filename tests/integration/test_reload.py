"""Hot reload: SIGHUP, --watch, several workers; tunnels and requests in flight never notice,
an invalid configuration is refused and the running one keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.conftest import endpoints
from tests.support.procs import Proc, Wslb, scaled


def _config(
    ws_eps: list[str],
    other_eps: list[str],
    gen_path: str,
    port: int = 0,
    extra_listener: int | None = None,
) -> dict[str, Any]:
    listeners: list[dict[str, Any]] = [
        {"name": "web", "address": "127.0.0.1", "port": port, "protocol": "http"}
    ]
    if extra_listener is not None:
        listeners.append(
            {"name": "extra", "address": "127.0.0.1", "port": extra_listener, "protocol": "http"}
        )
    return {
        "listeners": listeners,
        "backends": [
            {"name": "ws", "endpoints": ws_eps, "health": {"enabled": False}},
            {
                "name": "other",
                "endpoints": other_eps,
                "health": {"enabled": False},
                "keepalive": {"enabled": True},
            },
        ],
        "routes": [
            {"path": "/ws", "backend": "ws"},
            {"path": gen_path, "backend": "other"},
        ],
    }


def _write(lb: Wslb, config: dict[str, Any]) -> None:
    tmp = lb.config_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, lb.config_path)


def _applied(lb: Wslb, generation: int, workers: int = 1) -> None:
    """Wait until every worker logged that it applied ``generation``."""
    for w in range(workers):
        lb.wait_output(f"worker {w}: configuration generation {generation} applied", timeout=30)


def _raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


async def _exchange(ws: ClientConnection, tag: str, count: int) -> int:
    for k in range(count):
        msg = f"{tag}:{k}:" + "x" * (k % 7) * 50
        await ws.send(msg)
        got = await asyncio.wait_for(ws.recv(), scaled(60))
        assert got == msg, (tag, k)
    return count


async def test_thousand_websockets_through_twenty_reloads(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    """20 reloads that change routes and add and remove endpoints, each while 1,000 WebSockets
    exchange messages: none dropped, none lost; each new route serves as soon as it applies,
    on a keep-alive connection opened before it too."""
    _raise_fd_limit(8192)
    a, b, c = endpoints(backends)
    lb = wslb(_config([a, b], [c], "/gen0"))
    url = lb.url("web")
    sockets: list[ClientConnection] = []
    try:
        for i in range(0, 1000, 100):  # in batches: the 2-core machine is busy enough
            sockets += await asyncio.gather(
                *(
                    connect(f"ws://127.0.0.1:{lb.port('web')}/ws", open_timeout=scaled(30))
                    for _ in range(i, i + 100)
                )
            )
        delivered = 0
        async with httpx.AsyncClient(base_url=url, timeout=scaled(20)) as http:
            assert (await http.get("/gen0")).json()["server"] == "c"
            for gen in range(1, 21):
                traffic = asyncio.gather(
                    *(_exchange(ws, f"{n}.{gen}", 2) for n, ws in enumerate(sockets))
                )
                ws_eps = [a, b, c] if gen % 2 else [a, b]  # c joins, then leaves
                other = [a] if gen % 2 else [c, "127.0.0.1:1"]  # and a dead one comes and goes
                _write(lb, _config(ws_eps, other, f"/gen{gen}"))
                lb.signal(signal.SIGHUP)
                _applied(lb, gen + 1)
                r = await http.get(f"/gen{gen}")  # the keep-alive connection from before
                assert r.status_code == 200
                assert r.json()["server"] == ("a" if gen % 2 else "c")
                assert (await http.get(f"/gen{gen - 1}")).status_code == 404  # route gone
                delivered += sum(await traffic)
        assert delivered == 1000 * 2 * 20
        assert all(ws.close_code is None for ws in sockets)  # none was closed
        # and they still work after the last reload
        assert sum(await asyncio.gather(*(_exchange(ws, "end", 1) for ws in sockets))) == 1000
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    out = lb.output()
    assert "Traceback" not in out
    assert "generation 21 applied" in out
    assert "endpoints removed: ws/" in out and "endpoints added: ws/" in out


async def test_invalid_config_is_refused_and_the_running_one_stays(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    a, _, c = endpoints(backends)
    lb = wslb(_config([a], [c], "/old"))
    url = lb.url("web")
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws") as ws:
        bad = _config([a], [c], "/new")
        bad["backends"][0]["balance"] = "fastest"  # two errors at once
        bad["routes"][1]["backend"] = "missing"
        _write(lb, bad)
        lb.signal(signal.SIGHUP)
        out = lb.wait_output("reload refused")
        name = lb.config_path.name
        assert f"{name}:" in out and "balance" in out and "missing" in out  # file:line: key
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/old")).json()["server"] == "c"
            assert (await http.get("/new")).status_code == 404
        await ws.send("still here")
        assert await ws.recv() == "still here"
        # a config that cannot take effect (its new listener's port is taken) is refused too
        with_busy_port = _config([a], [c], "/new", extra_listener=backends[0].info["port"])
        _write(lb, with_busy_port)
        lb.signal(signal.SIGHUP)
        lb.wait_output("cannot bind a listener")
        # then a good one applies, with a new listener
        spare = _free_port()
        _write(lb, _config([a], [c], "/new", extra_listener=spare))
        lb.signal(signal.SIGHUP)
        _applied(lb, 2)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/new")).json()["server"] == "c"
            assert (await http.get(f"http://127.0.0.1:{spare}/new")).json()["server"] == "c"
        await ws.send("after")
        assert await ws.recv() == "after"
        # and the listener goes away again
        _write(lb, _config([a], [c], "/new"))
        lb.signal(signal.SIGHUP)
        _applied(lb, 3)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as http:
                await http.get(f"http://127.0.0.1:{spare}/new")
    assert lb.proc.poll() is None
    assert "Traceback" not in lb.output()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_workers_all_take_the_reload_and_watch_needs_no_signal(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    a, b, c = endpoints(backends)
    lb = wslb(_config([a], [c], "/one"), extra=["--workers", "2", "--watch"])
    url = lb.url("web")
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws") as ws:
        _write(lb, _config([a], [b], "/two"))  # no signal: --watch sees the file change
        _applied(lb, 2, workers=2)
        for _ in range(20):  # new connections, spread over both workers by the kernel
            async with httpx.AsyncClient(base_url=url) as http:
                assert (await http.get("/two")).json()["server"] == "b"
        lb.signal(signal.SIGHUP)  # the same file again: generation 3, nothing else changes
        _applied(lb, 3, workers=2)
        await ws.send("x")
        assert await ws.recv() == "x"
    out = lb.output()
    assert "Traceback" not in out
    assert "died" not in out


async def test_affinity_survives_a_reload(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    """No server.secret in the file: the reloaded configuration keeps the running key, so a
    cookie issued before the reload still pins its endpoint."""
    eps = endpoints(backends)
    config: dict[str, Any] = {
        "listeners": [{"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http"}],
        "backends": [{"name": "app", "endpoints": eps, "health": {"enabled": False}}],
        "routes": [{"path": "/", "backend": "app", "affinity": {"name": "route"}}],
    }
    lb = wslb(config)
    async with httpx.AsyncClient(base_url=lb.url("web")) as http:
        first = await http.get("/a")
        server = first.json()["server"]
        cookie = first.cookies["route"]
        config["routes"].insert(0, {"path": "/extra", "backend": "app"})
        _write(lb, config)
        lb.signal(signal.SIGHUP)
        _applied(lb, 2)
        for _ in range(10):
            assert http.cookies["route"] == cookie  # the client sends what it was given
            r = await http.get("/a")
            assert json.loads(r.text)["server"] == server


async def test_a_certificate_replaced_in_place_serves_new_handshakes(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"

    def issue() -> bytes:
        leaf = ca.issue_cert("localhost")
        cert_file.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        key_file.write_bytes(leaf.private_key_pem.bytes())
        return leaf.cert_chain_pems[0].bytes()

    first = issue()
    config: dict[str, Any] = {
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1",
                "port": 0,
                "protocol": "https",
                "tls": {"certificate": str(cert_file), "key": str(key_file)},
            }
        ],
        "backends": [
            {"name": "app", "endpoints": endpoints(backends[:1]), "health": {"enabled": False}}
        ],
        "routes": [{"path": "/", "backend": "app"}],
    }
    lb = wslb(config)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    async def served_cert() -> bytes:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", lb.port("web"), ssl=ctx, server_hostname="localhost"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return ssl.DER_cert_to_PEM_cert(der).encode()

    def same(a: bytes, b: bytes) -> bool:
        return ssl.PEM_cert_to_DER_cert(a.decode()) == ssl.PEM_cert_to_DER_cert(b.decode())

    assert same(await served_cert(), first)
    async with connect(f"wss://localhost:{lb.port('web')}/ws", ssl=ctx) as ws:
        second = issue()  # same paths, new files: the config text does not change
        lb.signal(signal.SIGHUP)
        _applied(lb, 2)
        assert same(await served_cert(), second)
        await ws.send("on the old certificate")
        assert await ws.recv() == "on the old certificate"
