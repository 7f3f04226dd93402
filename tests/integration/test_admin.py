"""The admin listener: Prometheus metrics that match the traffic, health and readiness, the
JSON API (reload, drain), the bearer token, and the live dashboard in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import endpoints
from tests.support.browser import run_browser_script
from tests.support.metrics import admin_url, metrics_until, total
from tests.support.procs import ROOT, Proc, Wslb, scaled


def _config(eps: list[str]) -> dict[str, Any]:
    return {
        "listeners": [{"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http"}],
        "backends": [{"name": "app", "endpoints": eps, "health": {"enabled": False}}],
        "routes": [
            {"path": "/app", "backend": "app"},
            {"path": "/ws", "backend": "app"},
            {"path": "/ws-refuse", "backend": "app"},
            {"path": "/limited", "backend": "app", "admission": {"rate": 1, "status": 429}},
        ],
    }


async def test_metrics_match_the_traffic_across_two_workers(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    eps = endpoints(backends[:2])
    lb = wslb(_config(eps), extra=["--workers", "2", "--admin", "127.0.0.1:0"])
    admin, url = admin_url(lb), lb.url("web")
    body_bytes = 0
    for i in range(30):  # new connections: the kernel spreads them over both workers
        async with httpx.AsyncClient(base_url=url) as http:
            r = await http.post("/app/x", content=b"b" * (100 + i))
            assert r.status_code == 200
            body_bytes += 100 + i
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(5):
            assert (await http.get("/nowhere")).status_code == 404
    sockets = [await connect(f"ws://127.0.0.1:{lb.port('web')}/ws") for _ in range(4)]
    await sockets.pop().close()
    with pytest.raises(InvalidStatus):  # the endpoint refuses this one: an upgrade failure
        async with connect(f"ws://127.0.0.1:{lb.port('web')}/ws-refuse"):
            pass

    def settled(s: dict[Any, float]) -> bool:
        return (
            total(s, "wslb_requests_total", code="200") == 30
            and total(s, "wslb_tunnels_open") == 3
            and total(s, "wslb_tunnels_closed_total") == 1
            and total(s, "wslb_upgrade_failures_total") == 1
            and total(s, "wslb_workers") == 2
        )

    try:
        s = await metrics_until(admin, settled)
        assert settled(s), [(k, v) for k, v in s.items() if "tunnel" in k[0] or "upgrade" in k[0]]
        assert total(s, "wslb_upgrade_failures_total", backend="app", code="403") == 1
        assert total(s, "wslb_requests_total", code="404", backend="") == 5
        assert total(s, "wslb_requests_total", route="*/app", code="200") == 30
        assert total(s, "wslb_bytes_total", kind="http", direction="in") == body_bytes
        assert total(s, "wslb_request_duration_seconds_count", backend="app") >= 30
        assert total(s, "wslb_endpoint_requests_total") >= 30
        assert total(s, "wslb_tunnels_opened_total") == 4
        assert total(s, "wslb_endpoint_up") == 2
        assert total(s, "wslb_config_generation") == 1
        # a reload through the API: generation 2 in every worker
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{admin}/api/reload")
            assert r.status_code == 202, r.text
        s = await metrics_until(admin, lambda s: total(s, "wslb_config_generation") == 2)
        assert total(s, "wslb_config_generation") == 2
        assert total(s, "wslb_reloads_total", result="applied") == 1
        assert total(s, "wslb_tunnels_open") == 3  # the reload left them alone
        for ws in sockets:
            await ws.send("still")
            assert await ws.recv() == "still"
    finally:
        for ws in sockets:
            await ws.close()
    s = await metrics_until(admin, lambda s: total(s, "wslb_tunnels_open") == 0)
    assert total(s, "wslb_tunnels_open") == 0
    assert total(s, "wslb_tunnels_closed_total") == 4
    assert total(s, "wslb_tunnel_duration_seconds_count") == 4


async def test_health_api_drain_and_refused_reload(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    eps = endpoints(backends[:2])
    lb = wslb(_config(eps), extra=["--admin", "0"])
    admin, url = admin_url(lb), lb.url("web")
    async with httpx.AsyncClient(base_url=admin) as api:
        assert (await api.get("/healthz")).status_code == 200
        for _ in range(50):  # the first snapshot is written at start; bounded
            if (await api.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await api.get("/readyz")).status_code == 200
        state = (await api.get("/api/state")).json()
        assert set(state["backends"]["app"]["endpoints"]) == set(eps)
        assert state["generation"] == 1 and state["workers"] == 1
        # drain the first endpoint: new requests go to the other one only
        r = await api.post("/api/drain", params={"backend": "app", "endpoint": eps[0]})
        assert r.status_code == 202
        assert (
            await api.post("/api/drain", params={"backend": "app", "endpoint": "x:1"})
        ).status_code == 404
        lb.wait_output(f"endpoint app/{eps[0]} drains")
        async with httpx.AsyncClient(base_url=url) as http:
            servers = {(await http.get("/app/d")).json()["server"] for _ in range(10)}
        assert servers == {"b"}
        r = await api.post("/api/drain", params={"backend": "app", "endpoint": eps[0], "undo": "1"})
        assert r.status_code == 202
        lb.wait_output(f"endpoint app/{eps[0]} back")
        async with httpx.AsyncClient(base_url=url) as http:
            servers = {(await http.get("/app/d")).json()["server"] for _ in range(10)}
        assert servers == {"a", "b"}
        # an invalid configuration: 400 with the errors, nothing changes
        bad = _config(eps)
        bad["routes"][0]["backend"] = "missing"
        lb.config_path.write_text(yaml.safe_dump(bad))
        r = await api.post("/api/reload")
        assert r.status_code == 400
        assert any("missing" in e for e in r.json()["errors"])
        assert (await api.get("/api/state")).json()["generation"] == 1
        assert (await api.get("/nothing")).status_code == 404
    lb.signal(signal.SIGTERM)
    assert lb.proc.wait(timeout=scaled(20)) == 0


async def test_token_required_off_loopback_and_checked_when_set(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    # not on loopback and no token: wslb refuses to start (nothing is bound)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config(endpoints(backends[:1]))))
    env = {k: v for k, v in os.environ.items() if k != "WSLB_ADMIN_TOKEN"}
    res = subprocess.run(  # noqa: ASYNC221 (a short, bounded run)
        [sys.executable, "-m", "wslb", "serve", "-c", str(cfg), "--admin", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert res.returncode == 1
    assert "needs a token" in res.stderr
    lb = wslb(
        _config(endpoints(backends[:1])), extra=["--admin", "127.0.0.1:0", "--admin-token", "s3"]
    )
    admin = admin_url(lb)
    async with httpx.AsyncClient(base_url=admin) as api:
        assert (await api.get("/metrics")).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await api.get("/api/state", headers=bad)).status_code == 401
        good = {"Authorization": "Bearer s3"}
        assert (await api.get("/metrics", headers=good)).status_code == 200
        assert (await api.post("/api/reload")).status_code == 401
        assert (await api.get("/", params={"token": "s3"})).status_code == 200
        assert (await api.get("/", params={"token": "s4"})).status_code == 401


def test_dashboard_in_chromium_follows_open_websockets(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    ep = endpoints(backends[:1])[0]
    lb = wslb(_config([ep]), extra=["--admin", "127.0.0.1:0"])
    shot = tmp_path / "dashboard.png"
    out = run_browser_script(
        "dashboard.js",
        admin_url(lb) + "/",
        f"ws://127.0.0.1:{lb.port('web')}/ws",
        f"ep-app-{ep}",
        str(shot),
    )
    assert out["seen"] == [0, 3, 1]
    assert shot.stat().st_size > 10_000
    if os.environ.get("WSLB_DOCS_SCREENSHOT"):  # refresh the picture in docs/operations.md
        shutil.copy(shot, os.environ["WSLB_DOCS_SCREENSHOT"])


async def test_dashboard_viewers_hold_no_thread_and_head_has_no_body(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    """50 open dashboards: one feed thread writes to all of them (not a thread each), a few
    MiB at most; each gets the state every second; a viewer that goes is forgotten."""

    lb = wslb(_config(endpoints(backends[:1])), extra=["--admin", "0"])
    host, port = admin_url(lb).removeprefix("http://").rsplit(":", 1)
    proc = psutil.Process(lb.pid)
    async with httpx.AsyncClient(base_url=admin_url(lb)) as api:
        for path in (b"/events", b"/api/state", b"/nothing"):  # the whole answer to a HEAD
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HEAD " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(-1), scaled(10))
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.") and body == b"", (path, answer[:300])
        # one viewer first (the feed's thread starts with it), then 49 more
        streams = []

        async def viewer() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /events HTTP/1.1\r\nHost: admin\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
            assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
            assert b'data: {"' in await asyncio.wait_for(reader.readuntil(b"\n\n"), scaled(10))
            return reader, writer

        streams.append(await viewer())
        threads, rss = proc.num_threads(), proc.memory_info().rss
        streams += await asyncio.gather(*(viewer() for _ in range(49)))
        # each gets the next events (one a second), none holds a thread
        for reader, _ in streams:
            event = await asyncio.wait_for(reader.readuntil(b"\n\n"), scaled(10))
            assert event.startswith(b"data: {")
        assert proc.num_threads() <= threads + 2, (proc.num_threads(), threads)
        assert proc.memory_info().rss - rss < 8 * 1024 * 1024
        for _, writer in streams:
            writer.close()
        # the feed forgets them: its thread is all that stays, and the API still answers
        assert (await api.get("/api/state")).status_code == 200
        assert proc.num_threads() <= threads + 2


async def test_counters_survive_a_worker_restart_and_process_and_certificate_metrics(
    wslb: Callable[..., Wslb], backends: list[Proc], server_cert: tuple[str, str]
) -> None:
    """A worker killed and started again by the master takes up its predecessor's counts:
    the sums never drop (no reset for rate()); process_* sum the workers; every certificate
    served has its notAfter by host."""
    import time

    config = _config(endpoints(backends[:1]))
    cert, key = server_cert
    config["listeners"].append(
        {
            "name": "tls",
            "address": "127.0.0.1",
            "port": 0,
            "protocol": "https",
            "tls": {"certificate": cert, "key": key},
        }
    )
    lb = wslb(config, extra=["--workers", "2", "--admin", "127.0.0.1:0"])
    admin, url = admin_url(lb), lb.url("web")
    for _ in range(20):  # new connections: both workers get some
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/app/x")).status_code == 200
    s = await metrics_until(admin, lambda s: total(s, "wslb_requests_total", code="200") == 20)
    assert total(s, "wslb_requests_total", code="200") == 20
    cpu = total(s, "process_cpu_seconds_total")
    assert cpu > 0 and total(s, "process_resident_memory_bytes") > 10 * 1024 * 1024
    assert total(s, "process_open_fds") > 0 and total(s, "process_max_fds") > 0
    assert time.time() - 600 < total(s, "process_start_time_seconds") <= time.time()
    not_after = _not_after(cert)
    hosts = {
        host
        for (name, labels) in s
        if name == "wslb_certificate_expiry_seconds"
        for k, host in labels
        if k == "host"
    }
    assert hosts and all(
        total(s, "wslb_certificate_expiry_seconds", host=h) == not_after for h in hosts
    )
    # kill a worker: the master starts it again, and its counts go on
    port = lb.port("web")
    victim = _workers(lb.pid, port)[0]
    victim.kill()
    lb.wait_output("starting it again")
    seen = []

    def back(samples: dict[Any, float]) -> bool:
        seen.append(total(samples, "wslb_requests_total", code="200"))
        pids = [w.pid for w in _workers(lb.pid, port)]
        return len(pids) == 2 and victim.pid not in pids and total(samples, "wslb_workers") == 2

    s = await metrics_until(admin, back)
    assert back(s)
    assert min(seen) >= 20, seen  # never a drop while the worker was away or came back
    assert total(s, "wslb_requests_total", code="200") == 20
    assert total(s, "process_cpu_seconds_total") >= cpu
    for _ in range(10):
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/app/x")).status_code == 200
    s = await metrics_until(admin, lambda s: total(s, "wslb_requests_total", code="200") == 30)
    assert total(s, "wslb_requests_total", code="200") == 30


def _not_after(pem: str) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(Path(pem).read_bytes()).not_valid_after_utc.timestamp()


def _workers(master: int, port: int) -> list[psutil.Process]:
    """The master's children listening on ``port`` (workers; the admin listener is not one)."""
    out = []
    for child in psutil.Process(master).children():
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            out.append(child)
    return out
