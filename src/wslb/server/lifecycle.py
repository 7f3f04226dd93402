"""Start, serve, drain and stop: one worker, or a master with N forked workers.

Workers share each port with SO_REUSEPORT: the master binds first (which also resolves port 0
to a real port) and keeps those sockets bound but not listening; each worker binds its own
listening socket to the same address, and the kernel spreads new connections across them.

SIGTERM or SIGINT drains a worker: it stops accepting, closes idle keep-alive connections,
lets in-flight requests finish, and after ``server.shutdown_grace`` closes what is left (tunnels
included). On SIGTERM, readiness (``/readyz``) answers 503 at once, and the worker keeps
accepting and serving for ``server.shutdown_delay`` first: a cloud load balancer and kube-proxy
take seconds to stop sending new connections to a pod that is going (SIGINT, a person's Ctrl-C,
skips the delay). The master forwards the signal to every worker and waits for them; the admin
and probe listeners and the controller stop after the last worker. A worker that dies
unexpectedly is started again.

SIGHUP (or a change of a watched path, ``--watch``) reloads: the configuration is read and
validated again; if it has errors they are logged and the running one stays. Otherwise every
worker swaps it in without a restart (:meth:`Runtime.apply`): established connections, requests
in flight and tunnels keep going on what they started with; new requests see the new routes at
once, on connections that are already open too. With several workers, the master validates,
writes the new configuration to a private file and signals the workers, which read that file:
all of them serve the same one, and a worker started later starts with it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, Protocol

import uvloop

from wslb.balancer.endpoints import EndpointState
from wslb.config.model import Config, ListenerSpec
from wslb.errors import ConfigIssue
from wslb.server.admin import AdminServer, is_loopback, mark_stopping
from wslb.server.discovery import Discovery
from wslb.server.healthcheck import HealthChecker
from wslb.server.listener import Listener, bind_socket
from wslb.server.runtime import BackendState, ListenerState, Reload, Runtime
from wslb.server.stats import Stats, snapshot, write_snapshot
from wslb.server.tunnel import Tunnel

log = logging.getLogger("wslb.server")

CONTROLLER = -2  # the controller process's index among the master's children

Ready = Callable[[dict[str, tuple[str, int]]], None]


class ControllerChild(Protocol):
    """A process of the master's that sends it SIGHUP with each new configuration."""

    pid: int

    def spawn(self) -> None: ...

    def stale(self) -> bool: ...


Loader = Callable[[], tuple[Config | None, list[ConfigIssue]]]


def _carry_over(config: Config, running: Config) -> Config:
    """A reloaded configuration without ``server.secret`` keeps the running one, so affinity
    cookies and Engine.IO tags stay valid; the number of workers cannot change without a
    restart."""
    server = config.server.model_copy(
        update={
            "secret": config.server.secret or running.server.secret,
            "workers": running.server.workers,
        }
    )
    return config.model_copy(update={"server": server})


def _needs_socket(old: ListenerSpec, new: ListenerSpec) -> bool:
    """Whether a listener changed in a way its socket and TLS context cannot follow."""

    def key(s: ListenerSpec) -> tuple[object, ...]:
        return (s.address, s.port, s.protocol, s.proxy_protocol, s.tls, s.serves_http2)

    return key(old) != key(new)


def _to(endpoints: set[EndpointState]) -> Callable[[Tunnel], bool]:
    """Tunnels to one of ``endpoints``."""
    return lambda tunnel: tunnel.endpoint in endpoints


def _reload_source(load: Loader) -> tuple[Config | None, list[ConfigIssue]]:
    """``load()``, with whatever it raises turned into an issue: a reload (SIGHUP, --watch,
    the admin API) must never take the running configuration down."""
    try:
        return load()
    except Exception as exc:
        return None, [ConfigIssue(source="reload", line=None, key="", message=str(exc))]


def checked(load: Loader) -> Config | None:
    """Load a configuration for a reload; log its problems. None if it has errors."""
    config, issues = _reload_source(load)
    for issue in issues:
        (log.error if issue.severity == "error" else log.warning)("reload: %s", issue)
    if config is None:
        errors = sum(1 for i in issues if i.severity == "error")
        log.error("reload refused: %d error(s); the running configuration stays", errors)
    return config


class Watcher:
    """Polls files (and the files under directories) for changes of size or mtime."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.seen = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for root in self.paths:
            files = [root]
            if os.path.isdir(root):
                files = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names)
            for path in files:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out[path] = (st.st_mtime_ns, st.st_size)
        return out

    def changed(self) -> bool:
        now = self.snapshot()
        if now == self.seen:
            return False
        self.seen = now
        return True


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
        self.stats: Stats | None = Stats() if state_dir else None
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
                    self.runtime.drain_tunnels(
                        _to({ep}), 1012, "endpoint draining", backend.spec.drain_window
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
            self.runtime.drain_tunnels(_to(eps), 1012, "endpoint removed", window)

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
        runtime.drain_tunnels(lambda _t: True, 1001, "going away", grace * 0.8)
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


def write_ready_file(
    path: str,
    bound: dict[str, tuple[str, int]],
    workers: int,
    admin: tuple[str, int] | None = None,
    probes: tuple[str, int] | None = None,
) -> None:
    data: dict[str, object] = {
        "pid": os.getpid(),
        "workers": workers,
        "listeners": {name: {"address": a, "port": p} for name, (a, p) in bound.items()},
    }
    if admin is not None:
        data["admin"] = {"address": admin[0], "port": admin[1]}
    if probes is not None:
        data["probes"] = {"address": probes[0], "port": probes[1]}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _notify(fd: int) -> None:
    os.write(fd, b"R")


def serve(
    config: Config,
    *,
    workers: int | None = None,
    ready_file: str | None = None,
    load: Loader | None = None,
    watch: list[str] | None = None,
    admin: tuple[str, int] | None = None,
    admin_token: str | None = None,
    controller: ControllerChild | None = None,
    probes: tuple[str, int] | None = None,
) -> int:
    """Run wslb. ``load`` reads the configuration again for a reload (SIGHUP; and every
    change of the ``watch`` paths); without it SIGHUP is ignored. ``admin``: the address of
    the admin listener (server/admin.py). ``controller``: the process that watches the
    Kubernetes API (controller/process.py), already running; the master restarts it if it
    dies, so with it there is always a master, even for one worker. ``probes``: the address of
    the probe listener (/healthz, /readyz, /metrics with no token)."""
    n = workers or config.server.workers
    # One random key for this start, shared by the workers forked below (replicas that must
    # agree on affinity cookies are given the same `server.secret`); and the real number of
    # workers, which per-worker shares of limits are computed from.
    server = config.server.model_copy(
        update={"secret": config.server.secret or secrets.token_hex(32), "workers": n}
    )
    config = config.model_copy(update={"server": server})
    if admin is not None and not is_loopback(admin[0]) and not admin_token:
        raise OSError(
            f"the admin listener on {admin[0]} (not loopback) needs a token: --admin-token "
            "or WSLB_ADMIN_TOKEN"
        )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until someone handles it
    sockets = {lst.name: bind_socket(lst.address, lst.port) for lst in config.listeners}
    bound = {name: sock.getsockname()[:2] for name, sock in sockets.items()}
    state_dir = tempfile.mkdtemp(prefix="wslb-")  # 0700: snapshots, drains, reloads
    admin_server = None
    if admin is not None or probes is not None:
        admin_server = AdminServer(
            admin, state_dir, n, _validator(load), os.getpid(), admin_token, probes
        )
        admin, probes = admin_server.address, admin_server.probes_address

    def announce(b: dict[str, tuple[str, int]]) -> None:
        if ready_file:
            write_ready_file(ready_file, b, n, admin, probes)

    try:
        if n == 1 and controller is None:
            if admin_server is not None:
                admin_server.start_thread()
            run_worker(
                config,
                sockets,
                0,
                announce,
                load,
                watch if load else None,
                state_dir if admin_server is not None else None,
            )
            return 0
        master = _Master(config, n, sockets, bound, announce, load, watch, state_dir)
        master.controller = controller
        return master.run(admin_server)
    finally:
        if admin_server is not None:
            admin_server.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def _validator(load: Loader | None) -> Callable[[], list[str]] | None:
    """For the admin API's reload: the configuration source's errors, read afresh."""
    if load is None:
        return None
    loader = load

    def validate() -> list[str]:
        config, issues = _reload_source(loader)
        return [] if config is not None else [str(i) for i in issues if i.severity == "error"]

    return validate


class _Master:
    """Forks the workers, restarts those that die, relays SIGTERM/SIGINT, and validates and
    hands out reloads."""

    def __init__(
        self,
        config: Config,
        n: int,
        sockets: dict[str, socket.socket],
        bound: dict[str, tuple[str, int]],
        announce: Ready,
        load: Loader | None,
        watch: list[str] | None,
        state_dir: str,
    ) -> None:
        self.config = config
        self.n = n
        self.sockets = sockets
        self.bound = bound
        self.announce = announce
        self.load = load
        self.watcher = Watcher(watch) if watch and load else None
        self.children: dict[int, int] = {}
        self.stopping = False
        self.hup = False
        self.ready_r, self.ready_w = os.pipe()
        self.private = state_dir  # 0700: the configuration for workers, snapshots
        self.config_file = os.path.join(self.private, "config.json")
        self.admin: AdminServer | None = None
        self.admin_pid = 0
        self.controller: ControllerChild | None = None
        self.reloads_refused = 0
        self._write_config()

    def _write_config(self) -> None:
        tmp = self.config_file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.config.model_dump_json())
        os.replace(tmp, self.config_file)

    def _worker_load(self) -> tuple[Config | None, list[ConfigIssue]]:
        with open(self.config_file, encoding="utf-8") as fh:
            return Config.model_validate_json(fh.read()), []

    def spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                os.close(self.ready_r)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the worker's loop takes it
                own = {name: bind_socket(a, p) for name, (a, p) in self.bound.items()}
                for s in self.sockets.values():
                    s.close()
                ready_w = self.ready_w
                run_worker(
                    self.config,
                    own,
                    index,
                    lambda _b: _notify(ready_w),
                    self._worker_load if self.load else None,
                    None,
                    self.private if self.admin is not None else None,
                )
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        self.children[pid] = index

    def on_signal(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: readiness 503 at once, and the signal to every worker (which keep
        accepting for ``server.shutdown_delay`` after a SIGTERM, then drain)."""
        if not self.stopping:
            mark_stopping(self.private)
        self.stopping = True
        for pid, index in list(self.children.items()):
            if index >= 0:
                try:
                    os.kill(pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._stop_helpers()

    def _stop_helpers(self) -> None:
        """The admin/probe listener and the controller go once the last worker is gone: the
        kubelet's liveness probe keeps its answer while the workers drain."""
        if any(index >= 0 for index in self.children.values()):
            return
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def on_hup(self, signum: int, _frame: object) -> None:
        self.hup = True

    def spawn_admin(self) -> None:
        """The admin listener's own process: the master keeps no threads of its own."""
        assert self.admin is not None
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: os._exit(0))  # nothing to drain here
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                os.close(self.ready_r)
                for s in self.sockets.values():
                    s.close()
                self.admin.serve_forever()
                code = 0
            except BaseException:
                log.exception("admin listener failed")
            finally:
                os._exit(code)
        self.admin_pid = pid
        self.children[pid] = -1

    def _write_master(self) -> None:
        path = os.path.join(self.private, "master.json")
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "reloads_refused": self.reloads_refused}, fh)
        os.replace(path + ".tmp", path)

    def reload(self) -> None:
        assert self.load is not None
        config = checked(self.load)
        if config is None:
            self.reloads_refused += 1
            self._write_master()
            return
        self.config = _carry_over(config, self.config)
        self._write_config()
        log.info("master %d: configuration reloaded; telling the workers", os.getpid())
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    def run(self, admin: AdminServer | None = None) -> int:
        self.admin = admin  # closed by serve() when this returns
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_hup if self.load else signal.SIG_IGN)
        for i in range(self.n):
            self.spawn(i)
        if self.admin is not None:
            self._write_master()
            self.spawn_admin()
        if self.controller is not None:
            self.children[self.controller.pid] = CONTROLLER
            self.hup = self.controller.stale()  # a change while we were starting

        ready = 0
        deadline = time.monotonic() + 60
        while ready < self.n and not self.stopping and time.monotonic() < deadline:
            r, _, _ = select.select([self.ready_r], [], [], 0.2)
            if r:
                ready += len(os.read(self.ready_r, 64))
            pid, _status = os.waitpid(-1, os.WNOHANG)
            index = self.children.pop(pid, -1) if pid else None
            if index == CONTROLLER and self.controller is not None:
                log.error("the controller exited during start-up; starting it again")
                self.controller.spawn()
                self.children[self.controller.pid] = CONTROLLER
            elif pid:
                log.error("worker %d exited during start-up", index)
                self.on_signal(signal.SIGTERM, None)
        if ready >= self.n:
            log.info("master %d: %d workers ready", os.getpid(), self.n)
            self.announce(self.bound)

        code = 0
        while self.children:
            r, _, _ = select.select([wake_r, self.ready_r], [], [], 1.0)
            if wake_r in r:
                os.read(wake_r, 512)
            if self.ready_r in r:
                os.read(self.ready_r, 64)  # a restarted worker is up
            if not self.stopping and (
                self.hup or (self.watcher is not None and self.watcher.changed())
            ):
                self.hup = False
                self.reload()
            while self.children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    self.children.clear()
                    break
                if not pid:
                    break
                index = self.children.pop(pid, None)
                if index is None:
                    continue
                if not self.stopping:
                    what = {-1: "the admin listener", CONTROLLER: "the controller"}.get(
                        index, f"worker {index}"
                    )
                    log.error(
                        "%s (pid %d) died with status %d; starting it again", what, pid, status
                    )
                    time.sleep(0.5)
                    if index == CONTROLLER and self.controller is not None:
                        self.controller.spawn()
                        self.children[self.controller.pid] = CONTROLLER
                    elif index < 0:
                        self.spawn_admin()
                    else:
                        self.spawn(index)
                else:
                    if os.waitstatus_to_exitcode(status) != 0:
                        code = 1
                    self._stop_helpers()
        signal.set_wakeup_fd(-1)
        for s in self.sockets.values():
            s.close()
        sys.stdout.flush()
        return code
