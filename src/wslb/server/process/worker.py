"""One worker process: its runtime, listeners, health checks and DNS discovery; reloads applied in
place; endpoints drained (their WebSockets closed over the drain window); the snapshot it
publishes for the admin listener; and its stop (``server.shutdown_delay``, then the grace period
in which in-flight requests finish, then what is left is closed)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import uvloop

from wslb.balancer.endpoints import EndpointState
from wslb.config.model import Config
from wslb.server.observe.metrics import mark_stopping
from wslb.server.observe.stats import Stats, resume, write_snapshot
from wslb.server.process.listener import Listener, bind_socket
from wslb.server.process.reload import Loader, Ready, Watcher, _carry_over, _needs_socket, checked
from wslb.server.state.backend import BackendState
from wslb.server.state.discovery import Discovery
from wslb.server.state.health import HealthChecker
from wslb.server.state.listener import ListenerState
from wslb.server.state.runtime import Reload, Runtime
from wslb.server.tunnel.drain import drain_tunnels
from wslb.server.tunnel.relay import Tunnel

log = logging.getLogger("wslb.server")


def _to(endpoints: set[EndpointState]) -> Callable[[Tunnel], bool]:
    """Tunnels to one of ``endpoints``."""
    return lambda tunnel: tunnel.endpoint in endpoints


class Worker:
    def __init__(
        self,
        config: Config,
        sockets: dict[str, socket.socket],
        index: int = 0,
        load: Loader | None = None,
        watch: list[str] | None = None,
        state_dir: str | None = None,
    ) -> None:
        self.config = config
        self.sockets = sockets
        self.index = index
        self.load = load
        self.watch = watch
        self.state_dir = state_dir  # with --admin: where snapshots go and drains come from
        self.stats: Stats | None = None
        if state_dir:
            self.stats = Stats()
            if resume(state_dir, index, self.stats):  # the master started it again
                log.info("worker %d: counters resumed from its predecessor's", index)
        self.api_drained: set[EndpointState] = set()
        self.drains_seen: tuple[int, int] | None = None
        self.reloading: asyncio.Lock | None = None
        self.runtime: Runtime | None = None
        self.listeners: list[Listener] = []
        self.health: HealthChecker | None = None
        self.discovery: Discovery | None = None
        self.stop_event: asyncio.Event | None = None
        self.stop_signal = signal.SIGTERM
        self.cut_delay = asyncio.Event()  # a second signal during server.shutdown_delay

    def _on_stop(self, signum: int) -> None:
        if self.stop_event is None:
            return
        if self.stop_event.is_set():
            self.stop_signal = signal.SIGINT  # a second signal: no more waiting
            self.cut_delay.set()
            return
        self.stop_signal = signal.Signals(signum)
        if self.state_dir is not None:
            mark_stopping(self.state_dir)
        self.stop_event.set()

    async def start(self) -> dict[str, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        runtime = Runtime(self.config, loop)
        runtime.stats = self.stats
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
        self.discovery = Discovery(list(runtime.backends.values()), self._endpoints_changed)
        self.discovery.start()
        return bound

    async def run(self, ready: Ready | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        tasks: set[asyncio.Task[object]] = set()

        def spawn(coro: Any) -> None:
            task = loop.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        if self.load is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: spawn(self.reload_from_source()))
        bound = await self.start()
        for name, (host, port) in bound.items():
            log.info("worker %d: listener %s on %s:%d", self.index, name, host, port)
        if self.watch:
            spawn(self._watch(Watcher(self.watch)))
        if self.state_dir is not None:
            self.publish()
            spawn(self._publish_every_second())
        if ready is not None:
            ready(bound)
        await self.stop_event.wait()
        await self._accept_a_while()
        for task in list(tasks):
            task.cancel()
        await self.shutdown()

    async def _accept_a_while(self) -> None:
        """After SIGTERM: go on as usual for ``server.shutdown_delay`` (reloads included),
        until a second signal."""
        delay = self.config.server.shutdown_delay
        if self.stop_signal != signal.SIGTERM or delay <= 0:
            return
        log.info(
            "worker %d: SIGTERM; accepting for %.1fs more (server.shutdown_delay), then draining",
            self.index,
            delay,
        )
        try:
            async with asyncio.timeout(delay):
                await self.cut_delay.wait()
        except TimeoutError:
            pass

    async def _watch(self, watcher: Watcher) -> None:
        while True:
            await asyncio.sleep(1.0)
            if watcher.changed():
                log.info("worker %d: a watched path changed", self.index)
                await self.reload_from_source()

    async def _publish_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.publish()

    def publish(self) -> None:
        """Write this worker's snapshot for the admin listener; take drains it recorded."""
        assert self.state_dir is not None and self.stats is not None
        if self.runtime is None:
            return
        self._apply_drains()
        try:
            write_snapshot(
                self.state_dir, self.index, snapshot(self.runtime, self.index, self.stats)
            )
        except OSError as exc:
            log.warning("worker %d: cannot write its snapshot: %s", self.index, exc)

    def _apply_drains(self) -> None:
        assert self.state_dir is not None and self.runtime is not None
        path = os.path.join(self.state_dir, "drains.json")
        try:
            st = os.stat(path)
        except OSError:
            return
        seen = (st.st_mtime_ns, st.st_size)
        if seen == self.drains_seen:
            return
        self.drains_seen = seen
        try:
            with open(path, encoding="utf-8") as fh:
                wanted = {(b, e) for b, e in json.load(fh)}
        except (OSError, ValueError):
            return
        for name, backend in self.runtime.backends.items():
            for ep in backend.endpoints:
                drain = (name, ep.address) in wanted
                if drain and not ep.draining:
                    ep.draining = True
                    self.api_drained.add(ep)
                    log.info("worker %d: endpoint %s/%s drains", self.index, name, ep.address)
                    drain_tunnels(
                        self.runtime,
                        _to({ep}),
                        1012,
                        "endpoint draining",
                        backend.spec.drain_window,
                    )
                elif not drain and ep in self.api_drained:
                    ep.draining = False
                    self.api_drained.discard(ep)
                    log.info("worker %d: endpoint %s/%s back", self.index, name, ep.address)
                else:
                    continue
                backend.health_changed()

    async def reload_from_source(self) -> Reload | None:
        """SIGHUP, ``--watch`` or the admin API: read the configuration again and apply it."""
        assert self.load is not None
        config = checked(self.load)
        if config is None:
            if self.stats is not None:
                self.stats.reloads["refused"] += 1
            return None
        return await self.reload(config)

    async def reload(self, config: Config) -> Reload | None:
        """Swap ``config`` in; None (and the running one stays) if it cannot be."""
        runtime = self.runtime
        if runtime is None or runtime.draining:
            return None
        if self.reloading is None:
            self.reloading = asyncio.Lock()
        async with self.reloading:
            config = _carry_over(config, self.config)
            # the same configuration still reloads: files it names (certificates) may have
            # changed; one that differs in endpoints alone is applied without a reload
            changed = None if config == self.config else runtime.update_endpoints(config)
            if changed is not None:
                self.config = config
                for backend in changed:
                    log.info(
                        "worker %d: backend %s endpoints now %s",
                        self.index,
                        backend.name,
                        ", ".join(
                            ep.address + (" (terminating)" if ep.terminating else "")
                            for ep in backend.endpoints
                        )
                        or "none",
                    )
                    self._endpoints_changed(backend)
                if self.stats is not None:
                    self.stats.reloads["endpoints"] += 1
                    self.publish()
                return None
            current = {lst.state.name: lst for lst in self.listeners}
            fresh: dict[str, socket.socket] = {}
            try:  # first the sockets: if one cannot be bound, nothing changes
                for spec in config.listeners:
                    cur = current.get(spec.name)
                    if cur is None or _needs_socket(cur.state.spec, spec):
                        port = spec.port
                        if port == 0 and cur is not None and cur.state.spec.port == 0:
                            port = cur.port  # port 0 was resolved once: keep the port
                        fresh[spec.name] = bind_socket(spec.address, port)
            except OSError as exc:
                for unused in fresh.values():
                    unused.close()
                log.error("reload refused: cannot bind a listener: %s", exc)
                return None
            runtime.secret = (config.server.secret or "").encode()
            result = runtime.apply(config)
            listeners: list[Listener] = []
            for spec in config.listeners:
                state = runtime.listeners[spec.name]
                cur = current.pop(spec.name, None)
                sock = fresh.get(spec.name)
                if (
                    sock is None
                    and cur is not None
                    and state.ssl_context is not cur.state.ssl_context
                ):
                    try:  # new certificates: the same address, a new socket and context
                        sock = bind_socket(spec.address, cur.port)
                    except OSError as exc:
                        log.error("listener %s keeps its old certificates: %s", spec.name, exc)
                        state.ssl_context = cur.state.ssl_context
                if sock is None and cur is not None:
                    cur.swap(state)
                    listeners.append(cur)
                    continue
                assert sock is not None
                listener = Listener(runtime, state, sock)
                await listener.start()  # the new socket listens before the old one closes
                listeners.append(listener)
                if cur is not None:
                    cur.close()
            for gone in current.values():
                gone.close()
            self.listeners = listeners
            for conn in list(runtime.connections):  # open client connections: new routes
                old = getattr(conn, "listener", None)
                if isinstance(old, ListenerState):
                    new = runtime.listeners.get(old.name)
                    if new is not None and not _needs_socket(old.spec, new.spec):
                        conn.listener = new  # type: ignore[attr-defined]
            await self._restart_checks()
            self._drain_gone(result.gone)
            self.config = config
            if self.stats is not None:
                self.stats.reloads["applied"] += 1
                self.publish()
            log.info(
                "worker %d: configuration generation %d applied (%s)",
                self.index,
                result.generation,
                result.summary(),
            )
            return result

    def _endpoints_changed(self, backend: BackendState) -> None:
        """DNS discovery changed a backend's endpoints: check the new ones, drain those gone."""
        if self.health is not None:
            self.health.sync(backend)
        window = backend.spec.drain_window
        self._drain_gone([(ep, window) for ep in (*backend.last_gone, *backend.last_terminating)])

    def _drain_gone(self, gone: list[tuple[EndpointState, float]]) -> None:
        """Endpoints that left: their WebSockets get Close 1012 over their backend's window."""
        assert self.runtime is not None
        by_window: dict[float, set[EndpointState]] = {}
        for ep, window in gone:
            by_window.setdefault(window, set()).add(ep)
        for window, eps in by_window.items():
            drain_tunnels(self.runtime, _to(eps), 1012, "endpoint removed", window)

    async def _restart_checks(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        if self.health is not None:
            await self.health.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        backends = list(runtime.backends.values())
        self.health = HealthChecker(backends)
        self.health.start()
        self.discovery = Discovery(backends, self._endpoints_changed)
        self.discovery.start()

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
        # WebSockets get a Close 1001, spread over most of the grace period (the rest is left
        # for the close handshakes), so that their clients do not all come back at once
        drain_tunnels(runtime, lambda _t: True, 1001, "going away", grace * 0.8)
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
    config: Config,
    sockets: dict[str, socket.socket],
    index: int = 0,
    ready: Ready | None = None,
    load: Loader | None = None,
    watch: list[str] | None = None,
    state_dir: str | None = None,
) -> None:
    # Everything built so far (modules, config) lives as long as the process: keep it out of
    # the collector's way, and collect young objects less often. The data path makes few
    # reference cycles; per-request objects are freed by reference counting.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(Worker(config, sockets, index, load, watch, state_dir).run(ready))


def snapshot(runtime: Runtime, index: int, stats: Stats) -> dict[str, Any]:
    """A worker's state and counters, as the admin listener reads them."""
    now = runtime.loop.time()
    config = runtime.config
    backends: dict[str, Any] = {}
    for name, b in runtime.backends.items():
        available = set(b.available(now))
        backends[name] = {
            "protocol": b.spec.protocol,
            "balance": b.spec.balance,
            "max_tunnels": b.spec.max_tunnels,
            "endpoints": {
                ep.address: {
                    "healthy": ep.healthy,
                    "available": ep in available,
                    "draining": ep.draining or ep.terminating,
                    "ejected": ep.ejected_until > now,
                    "active": ep.active,
                    "tunnels": ep.tunnels,
                    "weight": ep.weight,
                }
                for ep in b.endpoints
            },
        }
    return {
        "index": index,
        "pid": os.getpid(),
        "time": time.time(),
        "generation": runtime.generation,
        "draining": runtime.draining,
        "listeners": [
            {
                "name": lst.name,
                "address": lst.address,
                "port": int(runtime.listeners[lst.name].port_bytes)
                if lst.name in runtime.listeners
                else lst.port,
                "protocol": lst.protocol,
                "http2": lst.serves_http2,
            }
            for lst in config.listeners
        ],
        "routes": [
            {
                "host": r.host,
                "path": r.path,
                "backend": r.backend,
                "listeners": list(r.listeners) if r.listeners is not None else None,
            }
            for r in config.routes
        ],
        "backends": backends,
        "connections": len(runtime.connections),
        "certificates": served_certificates(runtime),
        "stats": stats.dump(),
    }


def served_certificates(runtime: Runtime) -> list[dict[str, Any]]:
    """Each certificate the listeners serve (files, Secrets, ACME): its name, hosts, notAfter."""
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for lst in runtime.listeners.values():
        for pair in lst.certificates:
            out[pair.label, pair.names] = pair.not_after
    if runtime.acme is not None:
        for name, served in runtime.acme.served.items():
            out[name, tuple(served.cert.hosts)] = served.cert.not_after.timestamp()
    return [
        {"certificate": name, "hosts": list(hosts), "not_after": not_after}
        for (name, hosts), not_after in sorted(out.items())
    ]
