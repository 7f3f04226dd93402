"""Workers sharing ports (SO_REUSEPORT), graceful drain on SIGTERM, and the command line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect

from tests.integration.conftest import echo_until_closed, endpoints, http_config
from tests.support.procs import ROOT, Proc, Wslb, scaled


def _listening_pids(port: int, root: int) -> set[int]:
    pids = set()
    procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.NoSuchProcess:  # a worker that just died
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            pids.add(p.pid)
    return pids


async def test_workers_share_the_port_and_are_restarted(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(http_config(endpoints(backends)), extra=["--workers", "2"])
    port = lb.port("web")
    workers = _listening_pids(port, lb.pid)
    assert len(workers) == 2 and lb.pid not in workers
    for _ in range(100):  # new connection each time: the kernel spreads them
        async with httpx.AsyncClient(base_url=lb.url("web")) as client:
            assert (await client.get("/x")).status_code == 200
    victim = sorted(workers)[0]
    psutil.Process(victim).kill()
    deadline = time.monotonic() + scaled(20)
    while time.monotonic() < deadline:
        now = _listening_pids(port, lb.pid)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the killed worker was not replaced")
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        assert (await client.get("/x")).status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_in_flight_requests_then_closes_tunnels_with_1001(
    workers: int, wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    grace = 1.5
    cfg = http_config(endpoints(backends[:1]))
    cfg["server"] = {"shutdown_grace": grace}
    lb = wslb(cfg, extra=["--workers", str(workers)])
    ws = await connect(f"ws://127.0.0.1:{lb.port('web')}/ws")
    await ws.send("hi")
    assert await ws.recv() == "hi"
    async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
        in_flight = asyncio.create_task(client.get("/slow", params={"delay": "0.8"}))
        # let the request reach the backend before the signal
        await asyncio.sleep(0.2)
        start = time.monotonic()
        lb.signal(signal.SIGTERM)
        r = await in_flight
        assert r.status_code == 200  # finished, not cut
    # new connections are refused once the listeners are closed
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=lb.url("web")) as client:
            for _ in range(50):
                await client.get("/x")
                await asyncio.sleep(0.05)
    # the tunnel keeps working, then gets a Close 1001 (going away) within the grace period:
    # tunnels are closed one after the other over most of it (test_drain.py measures the
    # spread), so that their clients do not all come back at once
    assert await echo_until_closed(ws, scaled(10)) == 1001
    assert time.monotonic() - start <= grace + scaled(2)
    assert lb.proc.wait(scaled(10)) == 0


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wslb", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_bad_config_lists_every_error_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        """\
listeners:
  - name: web
    port: 80800
    protocol: htp
  - name: tls
    port: 8443
    protocol: https
    tls: {certificate: missing.pem, key: missing.key}
backends:
  - name: app
    endpoints: ["127.0.0.1:99999"]
    balance: random
    timeouts: {connect: soon}
    colour: blue
routes:
  - backend: nowhere
    path: relative
"""
    )
    res = _check(cfg)
    assert res.returncode == 1
    err = res.stderr
    expected = [
        (3, "listeners[0].port"),
        (4, "listeners[0].protocol"),
        (11, "backends[0].endpoints[0]"),
        (12, "backends[0].balance"),
        (13, "backends[0].timeouts.connect"),
        (14, "backends[0].colour"),
        (16, "routes[0].backend"),
        (17, "routes[0].path"),
    ]
    for line, key in expected:
        assert f"{cfg}:{line}: {key}:" in err, (line, key, err)
    assert "unknown key" in err
    assert "Traceback" not in err
    # a certificate problem is reported once the structure is valid
    cfg.write_text(
        """\
listeners:
  - {name: tls, port: 8443, protocol: https, tls: {certificate: missing.pem, key: missing.key}}
"""
    )
    res = _check(cfg)
    assert res.returncode == 1
    assert f"{cfg}:2: listeners[0].tls:" in res.stderr and "missing.pem" in res.stderr


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("listeners:\n  - name: web\n    port: [1, 2\n")
    res = _check(cfg)
    assert res.returncode == 1
    assert f"{cfg}:" in res.stderr and "YAML" in res.stderr


def test_serve_with_bad_config_exits_1(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listeners: 3\n")
    res = subprocess.run(
        [sys.executable, "-m", "wslb", "serve", "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 1
    assert f"{cfg}:1: listeners:" in res.stderr


def test_good_config_checks_ok(tmp_path: Path) -> None:
    res = _check(ROOT / "examples" / "basic" / "wslb.yaml")
    assert res.returncode == 0, res.stderr


def _wslb(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wslb", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_version_stdin_and_json_for_ci() -> None:
    from importlib.metadata import version

    res = _wslb("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"wslb {version('wslb')}"
    bad = "listeners:\n  - {name: web, port: 80800, protocol: http}\n"
    res = _wslb("check", "-c", "-", stdin=bad)
    assert res.returncode == 1 and "<stdin>:2: listeners[0].port:" in res.stderr
    res = _wslb("check", "-c", "-", "--format", "json", stdin=bad)
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert (report["source"], report["ok"], report["errors"]) == ("<stdin>", False, 1)
    assert report["issues"][0]["line"] == 2 and report["issues"][0]["key"] == "listeners[0].port"
    good = (ROOT / "examples" / "basic" / "wslb.yaml").read_text()
    report = json.loads(_wslb("check", "-c", "-", "--format", "json", stdin=good).stdout)
    assert report["ok"] and report["errors"] == 0
    # manifests from standard input: what the same files give
    fixtures = ROOT / "tests" / "fixtures"
    seeds = [fixtures / "seed-ingress.yaml", fixtures / "seed-service.yaml"]
    piped = _wslb(
        "check", "-f", "-", "--format", "json", stdin="\n---\n".join(p.read_text() for p in seeds)
    )
    files = _wslb("check", "-f", str(seeds[0]), "-f", str(seeds[1]), "--format", "json")

    def found(res: subprocess.CompletedProcess[str]) -> list[tuple[str, str, str]]:
        issues = json.loads(res.stdout)["issues"]
        return [(i["key"], i["severity"], i["message"]) for i in issues]

    assert piped.returncode == files.returncode == 1
    assert found(piped) == found(files) and found(files)
    # serve reloads from its files: standard input is refused
    res = _wslb("serve", "-c", "-", stdin=good)
    assert res.returncode == 2 and "standard input" in res.stderr
