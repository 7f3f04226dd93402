from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets
from websockets.asyncio.client import ClientConnection

from tests.support.procs import Proc, Wslb, start_backend


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wslb")


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """wslb keeps its affinity key under WSLB_STATE_DIR: the tests' own, not the user's."""
    path = tmp_path_factory.mktemp("state")
    old = os.environ.get("WSLB_STATE_DIR")
    os.environ["WSLB_STATE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("WSLB_STATE_DIR", None)
    else:
        os.environ["WSLB_STATE_DIR"] = old


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA, session_dir: Path) -> tuple[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1", "ws.example.com")
    cert_path = session_dir / "server.pem"
    key_path = session_dir / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, session_dir: Path) -> str:
    path = session_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def backends(session_dir: Path) -> Iterator[list[Proc]]:
    procs = [start_backend(name, session_dir) for name in ("a", "b", "c")]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture(scope="session")
def tls_backend(session_dir: Path, server_cert: tuple[str, str]) -> Iterator[Proc]:
    proc = start_backend("tls", session_dir, tls=server_cert)
    yield proc
    proc.stop()


def endpoints(procs: list[Proc]) -> list[str]:
    return [f"127.0.0.1:{p.info['port']}" for p in procs]


@pytest.fixture
def wslb(tmp_path: Path) -> Iterator[Callable[..., Wslb]]:
    started: list[Wslb] = []

    def start(
        config: dict[str, Any],
        extra: list[str] | None = None,
        wait: bool = True,
        nofile: int | None = None,
    ) -> Wslb:
        proc = Wslb(config, tmp_path, extra, nofile)
        started.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.stop()


def http_config(
    eps: list[str],
    *,
    backend: dict[str, Any] | None = None,
    listener: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
    protocol: str = "http",
) -> dict[str, Any]:
    """One listener, one route to one backend with the given endpoints."""
    return {
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1",
                "port": 0,
                "protocol": protocol,
                **(listener or {}),
            }
        ],
        "backends": [
            {"name": "app", "endpoints": eps, "health": {"enabled": False}, **(backend or {})}
        ],
        "routes": [{"backend": "app", **(route or {})}],
    }


async def echo_until_closed(ws: ClientConnection, timeout: float) -> int | None:
    """Keep sending on ``ws`` and reading the echo until the server closes it (within
    ``timeout``, or the test fails); the close code it gave."""
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.send("x")
                await ws.recv()
                await asyncio.sleep(0.05)
    return ws.close_code
