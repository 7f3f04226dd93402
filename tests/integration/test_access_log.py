"""Access logs: a line per request and per tunnel, as text or as JSON objects."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints, http_config
from tests.support.h2client import H2Client
from tests.support.procs import Proc, Wslb


def _json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_text_lines_for_requests_and_tunnels(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(
        http_config(endpoints(backends[:1]), listener={"http2": True}, route={"path": "/app"})
    )
    async with httpx.AsyncClient(base_url=lb.url("web")) as http:
        r = await http.get("/app/items?id=42")
        size = len(r.content)
        assert (await http.get("/nowhere")).status_code == 404
    noise = os.urandom(1000)  # incompressible: permessage-deflate cannot shrink it
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/app/ws") as ws:
        await ws.send(noise)
        assert await ws.recv() == noise
    client = await H2Client.connect("127.0.0.1", lb.port("web"))
    try:
        assert (await client.request(b"GET", b"/app/h2")).status == 200
    finally:
        await client.close()
    port = backends[0].info["port"]
    out = lb.wait_output("websocket tunnel to")
    assert re.search(
        rf'\] 127\.0\.0\.1 "GET /app/items\?id=42 HTTP/1\.1" 200 {size} [\d.]+ms app '
        rf"127\.0\.0\.1:{port}",
        out,
    ), out
    assert re.search(r'"GET /nowhere HTTP/1\.1" 404 \d+ [\d.]+ms - -', out), out
    assert re.search(r'"GET /app/h2 HTTP/2" 200 \d+ [\d.]+ms app', out), out
    tunnel = re.search(
        r'\] 127\.0\.0\.1 "GET /app/ws HTTP/1\.1" websocket tunnel to \S+ closed after '
        r"[\d.]+s: (client closed|both sides closed); (\d+) bytes from client, (\d+) from upstream",
        out,
    )
    assert tunnel is not None, out
    assert int(tunnel[2]) >= 1000 and int(tunnel[3]) >= 1000


async def test_json_lines_carry_the_fields(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    lb = wslb(http_config(endpoints(backends[:1])), extra=["--log-format", "json"])
    async with httpx.AsyncClient(base_url=lb.url("web")) as http:
        r = await http.post("/upload", content=b"y" * 5000)
        assert r.status_code == 200
    noise = os.urandom(3000)
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws") as ws:
        await ws.send(noise)
        assert await ws.recv() == noise
    lb.wait_output('"type": "tunnel"')
    lines = _json_lines(lb.output())
    assert lines and all({"time", "level", "logger", "pid", "message"} <= set(x) for x in lines)
    (req,) = [x for x in lines if x.get("type") == "request" and x["target"] == "/upload"]
    assert req["method"] == "POST" and req["status"] == 200 and req["bytes_in"] == 5000
    assert req["bytes_out"] == len(r.content)
    assert req["endpoint"] == endpoints(backends[:1])[0] and req["backend"] == "app"
    assert req["duration_ms"] >= 0 and req["logger"] == "wslb.access"
    (tun,) = [x for x in lines if x.get("type") == "tunnel"]
    assert tun["kind"] == "websocket" and tun["request"] == "GET /ws HTTP/1.1"
    assert tun["bytes_from_client"] >= 3000 and tun["bytes_from_upstream"] >= 3000
    assert tun["reason"] and tun["duration_s"] >= 0


async def test_access_log_off(wslb: Callable[..., Wslb], backends: list[Proc]) -> None:
    config = http_config(endpoints(backends[:1]))
    config["server"] = {"access_log": False}
    lb = wslb(config)
    async with httpx.AsyncClient(base_url=lb.url("web")) as http:
        assert (await http.get("/quiet")).status_code == 200
    async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws") as ws:
        await ws.send("x")
        await ws.recv()
    lb.stop()
    out = lb.log_path.read_text()
    assert "worker 0: stopped" in out  # the log is complete
    assert "/quiet" not in out and "tunnel to" not in out
