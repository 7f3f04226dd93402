"""Probes and termination as Kubernetes expects them: /healthz and /readyz on a port of their
own with no token; readiness 503 before the first configuration and from SIGTERM on; after
SIGTERM, accepting goes on for ``server.shutdown_delay``, then the drain (Close 1001, requests
finished), then the exit."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.conftest import echo_until_closed, endpoints, http_config
from tests.integration.test_controller import Controller, chat_objects
from tests.support.chat import free_port
from tests.support.kubeapi import KubeAPI
from tests.support.procs import Proc, Wslb, scaled


def _probes(lb: Wslb) -> str:
    return f"http://127.0.0.1:{lb.info['probes']['port']}"


@pytest.mark.parametrize("workers", [1, 2])
async def test_probe_port_answers_without_the_admin_token(
    workers: int, wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    lb = wslb(
        http_config(endpoints(backends[:1])),
        extra=[
            "--workers",
            str(workers),
            "--admin",
            "127.0.0.1:0",
            "--admin-token",
            "s3cret",
            "--probes",
            "127.0.0.1:0",
        ],
    )
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        assert (await client.get("/x")).status_code == 200
    async with httpx.AsyncClient(base_url=_probes(lb)) as probe:
        assert (await probe.get("/healthz")).text == "ok\n"
        deadline = time.monotonic() + scaled(10)
        while (ready := await probe.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            await asyncio.sleep(0.1)
        assert ready.text == "ready\n"
        deadline = time.monotonic() + scaled(10)
        while "wslb_requests_total{" not in (metrics := (await probe.get("/metrics")).text):
            assert time.monotonic() < deadline, metrics
            await asyncio.sleep(0.2)
        assert 'code="200"' in metrics
        # read-only: nothing of the admin API, nor the dashboard
        for path in ("/api/state", "/", "/events"):
            assert (await probe.get(path)).status_code == 404
        assert (await probe.post("/api/reload")).status_code == 501
    admin = f"http://127.0.0.1:{lb.info['admin']['port']}"
    async with httpx.AsyncClient(base_url=admin) as client:
        assert (await client.get("/readyz")).status_code == 401  # the admin port keeps its token


async def _load(url: str, stop: asyncio.Event, log: list[tuple[float, int | str]]) -> None:
    """A new connection per request, as clients arriving through a cloud load balancer."""
    while not stop.is_set():
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                r = await client.get("/x", headers={"Connection": "close"})
            log.append((time.monotonic(), r.status_code))
        except httpx.HTTPError as exc:
            log.append((time.monotonic(), type(exc).__name__))
            await asyncio.sleep(0.02)


async def test_sigterm_readiness_first_then_accepting_for_the_delay_then_drain(
    wslb: Callable[..., Wslb], backends: list[Proc]
) -> None:
    delay, grace = 2.0, 2.0
    cfg = http_config(endpoints(backends[:1]))
    cfg["server"] = {"shutdown_grace": grace}
    lb = wslb(
        cfg,
        extra=["--workers", "2", "--probes", "127.0.0.1:0", "--shutdown-delay", str(delay)],
    )
    ws = await connect(f"ws://127.0.0.1:{lb.port('web')}/ws")
    await ws.send("hi")
    assert await ws.recv() == "hi"
    stop, log = asyncio.Event(), []
    loaders = [asyncio.create_task(_load(lb.url("web"), stop, log)) for _ in range(3)]
    async with httpx.AsyncClient(base_url=_probes(lb), timeout=5) as probe:
        deadline = time.monotonic() + scaled(10)
        while (await probe.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # some traffic before the signal
        sent = time.monotonic()
        lb.signal(signal.SIGTERM)
        while (await probe.get("/readyz")).status_code == 200:
            assert time.monotonic() - sent < scaled(1), "readiness still 200 after SIGTERM"
            await asyncio.sleep(0.02)
        not_ready = time.monotonic()
        # during the delay: accepting and serving as before, the WebSocket untouched
        while time.monotonic() < sent + delay - 0.3:
            await ws.send("still")
            assert await ws.recv() == "still"
            assert (await probe.get("/healthz")).status_code == 200
            await asyncio.sleep(0.1)
        # then the drain: listeners closed, the WebSocket closed with 1001, the process out
        assert await echo_until_closed(ws, scaled(10)) == 1001
        assert (await probe.get("/healthz")).status_code == 200  # alive while workers drain
    stop.set()
    await asyncio.gather(*loaders)
    assert lb.proc.wait(scaled(15)) == 0
    assert not_ready - sent < scaled(1)
    during = [(t, s) for t, s in log if sent <= t < sent + delay - 0.3]
    assert len(during) > 10 and all(s == 200 for _, s in during), during
    after = [s for t, s in log if t > sent + delay + 0.5]
    assert after and all(s != 200 for s in after)  # refused once the listeners closed
    assert "accepting for 2.0s more" in lb.output()


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(namespaces=("default", "ingress")) as server:
        yield server


async def test_controller_not_ready_until_the_first_configuration(
    api: KubeAPI, tmp_path: Path, backends: list[Proc]
) -> None:
    """The kubelet's probes answer from the start: alive, not ready while the first sync
    waits for an API that is away; ready once the configuration serves."""
    api.apply_many(chat_objects(backends))
    api.pause()
    port = free_port()
    lb = Controller(
        api,
        tmp_path,
        ["--port-map", "80=0", "--probes", f"127.0.0.1:{port}", "--workers", "2"],
        "wslb-0",
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as probe:
            deadline = time.monotonic() + scaled(20)
            while True:
                try:
                    live = await probe.get("/healthz")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert live.status_code == 200
            r = await probe.get("/readyz")
            assert (r.status_code, r.text) == (503, "waiting for the first configuration\n")
            assert not lb.ready.exists()
            api.resume()
            lb.wait_ready(timeout=scaled(30))
            deadline = time.monotonic() + scaled(10)
            while (r := await probe.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.1)
        url = f"http://127.0.0.1:{lb.port('http')}"
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/x")
        assert r.status_code == 200
    finally:
        lb.stop()
