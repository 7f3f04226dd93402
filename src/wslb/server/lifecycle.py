"""Start, serve, drain and stop: one worker, or a master with N forked workers.

Workers share each port with SO_REUSEPORT: the master binds first (which also resolves port 0
to a real port) and keeps those sockets bound but not listening; each worker binds its own
listening socket to the same address, and the kernel spreads new connections across them.

SIGTERM or SIGINT drains a worker: it stops accepting, closes idle keep-alive connections,
lets in-flight requests finish, and after ``server.shutdown_grace`` closes what is left (tunnels
included). The master forwards the signal to every worker and waits for them; a worker that dies
unexpectedly is started again.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

import uvloop

from wslb.config.model import Config
from wslb.server.discovery import Discovery
from wslb.server.healthcheck import HealthChecker
from wslb.server.listener import Listener, bind_socket
from wslb.server.runtime import Runtime

log = logging.getLogger("wslb.server")

Ready = Callable[[dict[str, tuple[str, int]]], None]


class Worker:
    def __init__(self, config: Config, sockets: dict[str, socket.socket], index: int = 0) -> None:
        self.config = config
        self.sockets = sockets
        self.index = index
        self.runtime: Runtime | None = None
        self.listeners: list[Listener] = []
        self.health: HealthChecker | None = None
        self.discovery: Discovery | None = None
        self.stop_event: asyncio.Event | None = None

    async def start(self) -> dict[str, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        runtime = Runtime(self.config, loop)
        self.runtime = runtime
        bound: dict[str, tuple[str, int]] = {}
        for spec in self.config.listeners:
            listener = Listener(runtime, runtime.listeners[spec.name], self.sockets[spec.name])
            await listener.start()
            self.listeners.append(listener)
            addr = self.sockets[spec.name].getsockname()
            bound[spec.name] = (addr[0], addr[1])
        runtime.sweeper.start()
        self.health = HealthChecker(list(runtime.backends.values()))
        self.health.start()
        self.discovery = Discovery(list(runtime.backends.values()), self.health.sync)
        self.discovery.start()
        return bound

    async def run(self, ready: Ready | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        bound = await self.start()
        for name, (host, port) in bound.items():
            log.info("worker %d: listener %s on %s:%d", self.index, name, host, port)
        if ready is not None:
            ready(bound)
        await self.stop_event.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        grace = self.config.server.shutdown_grace
        log.info("worker %d: draining (grace %.0fs)", self.index, grace)
        for listener in self.listeners:
            listener.close()
        runtime.draining = True
        idle = asyncio.Event()
        runtime.on_idle = idle.set
        for conn in list(runtime.connections):
            conn.drain()
        if any(c.busy() for c in runtime.connections):
            try:
                async with asyncio.timeout(grace):
                    await idle.wait()
            except TimeoutError:
                pass
        for conn in list(runtime.connections):
            conn.force_close("shutdown")
        if self.health is not None:
            await self.health.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        for backend in runtime.backends.values():
            for pool in backend.pools.values():
                pool.close_all()
        runtime.sweeper.stop()
        await asyncio.sleep(0)
        log.info("worker %d: stopped", self.index)


def run_worker(
    config: Config, sockets: dict[str, socket.socket], index: int = 0, ready: Ready | None = None
) -> None:
    # Everything built so far (modules, config) lives as long as the process: keep it out of
    # the collector's way, and collect young objects less often. The data path makes few
    # reference cycles; per-request objects are freed by reference counting.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(Worker(config, sockets, index).run(ready))


def write_ready_file(path: str, bound: dict[str, tuple[str, int]], workers: int) -> None:
    data = {
        "pid": os.getpid(),
        "workers": workers,
        "listeners": {name: {"address": a, "port": p} for name, (a, p) in bound.items()},
    }
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _notify(fd: int) -> None:
    os.write(fd, b"R")


def serve(config: Config, *, workers: int | None = None, ready_file: str | None = None) -> int:
    n = workers or config.server.workers
    if config.server.secret is None:
        # One random key for this start, shared by the workers forked below; replicas that
        # must agree on affinity cookies are given the same `server.secret`.
        server = config.server.model_copy(update={"secret": secrets.token_hex(32)})
        config = config.model_copy(update={"server": server})
    sockets = {lst.name: bind_socket(lst.address, lst.port) for lst in config.listeners}
    bound = {name: sock.getsockname()[:2] for name, sock in sockets.items()}

    def announce(b: dict[str, tuple[str, int]]) -> None:
        if ready_file:
            write_ready_file(ready_file, b, n)

    if n == 1:
        run_worker(config, sockets, 0, announce)
        return 0
    return _master(config, n, sockets, bound, announce)


def _master(
    config: Config,
    n: int,
    sockets: dict[str, socket.socket],
    bound: dict[str, tuple[str, int]],
    announce: Ready,
) -> int:
    ready_r, ready_w = os.pipe()
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                os.close(ready_r)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                own = {name: bind_socket(a, p) for name, (a, p) in bound.items()}
                for s in sockets.values():
                    s.close()
                run_worker(config, own, index, lambda _b: _notify(ready_w))
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(n):
        spawn(i)

    ready = 0
    deadline = time.monotonic() + 60
    while ready < n and not stopping and time.monotonic() < deadline:
        r, _, _ = select.select([ready_r], [], [], 0.2)
        if r:
            ready += len(os.read(ready_r, 64))
        pid, _status = os.waitpid(-1, os.WNOHANG)
        if pid:
            log.error("worker %d exited during start-up", children.pop(pid, -1))
            on_signal(signal.SIGTERM, None)
    if ready >= n:
        log.info("master %d: %d workers ready", os.getpid(), n)
        announce(bound)

    code = 0
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        if not stopping:
            log.error(
                "worker %d (pid %d) died with status %d; starting it again", index, pid, status
            )
            time.sleep(0.5)
            spawn(index)
        elif os.waitstatus_to_exitcode(status) != 0:
            code = 1
    for s in sockets.values():
        s.close()
    sys.stdout.flush()
    return code
