"""Live state of one worker, built from a :class:`~wslb.config.model.Config`.

``Runtime`` owns the backends (endpoint states, pools, client TLS), the per-listener route tables
and the registry of open connections and tunnels (for draining). Specs are never mutated: the
state objects here point at them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wslb.acme.manager import AcmeManager
from wslb.balancer.endpoints import EndpointState
from wslb.config.model import AcmeSpec, Config
from wslb.server.core.capacity import (
    ProcessCount,
    Slot,
    Warnings,
    process_connection_limit,
    raise_fd_limit,
    share,
)
from wslb.server.core.clock import Sweeper, interval_for
from wslb.server.core.output import WriteBatch
from wslb.server.core.tls import install_ticket_keys
from wslb.server.core.worker import Closable
from wslb.server.observe.stats import Stats
from wslb.server.state.backend import BackendState
from wslb.server.state.health import HealthChecker
from wslb.server.state.listener import ListenerState

log = logging.getLogger("wslb.server")
access_log = logging.getLogger("wslb.access")


@dataclass
class Reload:
    """What a reload changed (for its log line and the admin API)."""

    generation: int
    backends_changed: list[str] = field(default_factory=list)
    backends_removed: list[str] = field(default_factory=list)
    endpoints_added: list[str] = field(default_factory=list)
    endpoints_removed: list[str] = field(default_factory=list)
    gone: list[tuple[EndpointState, float]] = field(default_factory=list)  # and drain windows

    def summary(self) -> str:
        parts = []
        for label, items in (
            ("backends changed", self.backends_changed),
            ("backends removed", self.backends_removed),
            ("endpoints added", self.endpoints_added),
            ("endpoints removed", self.endpoints_removed),
        ):
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        return "; ".join(parts) or "no backend changes"


class Runtime:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.secret = (config.server.secret or "").encode()
        workers = config.server.workers
        self.backends = {b.name: BackendState(b, self.secret, workers) for b in config.backends}
        self.fd_limit = raise_fd_limit()
        self.process = ProcessCount(self._connection_limit(config))
        self.warnings = Warnings()
        self.stats: Stats | None = None  # counters, with --admin
        self.acme: AcmeManager | None = None
        if config.acme is not None:
            self.acme = self._new_acme(config.acme)
        self.listeners = {
            lst.name: ListenerState(
                lst, config, self.backends, self.secret, None, self.process, self.acme
            )
            for lst in config.listeners
        }
        self.sweeper = Sweeper(loop, interval_for(_smallest_timeout(config)))
        self.batch = WriteBatch(loop)
        for b in self.backends.values():
            for pool in b.pools.values():
                self.sweeper.add(pool)
        for lst in self.listeners.values():
            for route in lst.route_states:
                if route.stateful:
                    self.sweeper.add(route)
        self.connections: set[Closable] = set()
        self.draining = False
        self._ids = itertools.count(1)
        self.health: HealthChecker | None = None
        self.on_idle: Callable[[], None] | None = None
        self.generation = 1  # of the configuration; each reload adds one
        self.tasks: set[asyncio.Task[None]] = set()  # drains under way
        self.access_log = config.server.access_log and access_log.isEnabledFor(logging.INFO)
        self._ticket_timer: asyncio.TimerHandle | None = None
        self.rotate_tickets()
        self.run_staplers()

    def run_staplers(self, previous: dict[str, ListenerState] | None = None) -> None:
        """OCSP staplers of the listeners' certificates fetch in the background; those of
        contexts a reload replaced stop."""
        current = {id(s) for state in self.listeners.values() for s in state.staplers}
        for state in (previous or {}).values():
            for stapler in state.staplers:
                if id(stapler) not in current:
                    stapler.stop()
        for state in self.listeners.values():
            for stapler in state.staplers:
                stapler.start(self.loop)

    def rotate_tickets(self) -> None:
        """Give every TLS listener the session-ticket keys of the current period, and come
        back when the next period starts."""
        next_at: float | None = None
        for state in self.listeners.values():
            tls = state.spec.tls
            if state.ssl_context is not None and tls is not None:
                at = install_ticket_keys(state.ssl_context, self.secret, tls.ticket_rotation)
                next_at = at if next_at is None else min(next_at, at)
        if self._ticket_timer is not None:
            self._ticket_timer.cancel()
            self._ticket_timer = None
        if next_at is not None:
            delay = max(1.0, next_at - time.time())
            self._ticket_timer = self.loop.call_later(delay, self.rotate_tickets)

    def _new_acme(self, spec: AcmeSpec) -> AcmeManager:
        # imported here: the acme package (and requests) only weighs on workers that use it
        from wslb.acme.manager import AcmeManager

        manager = AcmeManager(spec, self._acme_event)
        manager.start(self.loop)
        return manager

    def _acme_event(self, name: str, kind: str, result: str) -> None:
        if self.stats is not None:
            self.stats.acme_event(name, kind, result)

    def _connection_limit(self, config: Config) -> int:
        """Client connections this worker admits: what its descriptors allow, and its share
        of ``server.max_connections``."""
        limit = process_connection_limit(self.fd_limit)
        part = share(config.server.max_connections, config.server.workers)
        return limit if part is None else min(limit, part)

    def apply(self, config: Config) -> Reload:
        """Swap ``config`` in (a reload). Backends and listeners are rebuilt from it, taking
        over the state of those they replace (endpoints, idle connections, rate counters, TLS
        contexts); what is in flight keeps the objects it started with, so a request or tunnel
        never notices. The caller re-binds listeners and restarts health checks."""
        old_backends = self.backends
        backends: dict[str, BackendState] = {}
        for spec in config.backends:
            old = old_backends.get(spec.name)
            if old is not None and old.spec == spec:
                backends[spec.name] = old
                continue
            new = BackendState(spec, self.secret, config.server.workers)
            if old is not None:
                new.adopt(old)
            backends[spec.name] = new
        reload = Reload(self.generation + 1)
        for name, old in old_backends.items():
            new_b = backends.get(name)
            if new_b is old:
                continue
            keep = set(new_b.endpoints) if new_b is not None else set()
            window = (new_b or old).spec.drain_window
            for ep in old.retire(keep):
                reload.endpoints_removed.append(f"{name}/{ep.address}")
                reload.gone.append((ep, window))
            kept_pools = set(new_b.pools.values()) if new_b is not None else set()
            for pool in old.pools.values():
                if pool not in kept_pools:
                    pool.close_all(retire=True)
                    self.sweeper.discard(pool)
            old.health_changed()
        for name, new_b in backends.items():
            before = (
                {ep.address for ep in old_backends[name].endpoints}
                if (name in old_backends)
                else set()
            )
            reload.endpoints_added += [
                f"{name}/{ep.address}" for ep in new_b.endpoints if ep.address not in before
            ]
            if new_b is not old_backends.get(name):  # serving but terminating: drained too
                reload.gone += [(ep, new_b.spec.drain_window) for ep in new_b.last_terminating]
            for pool in new_b.pools.values():
                self.sweeper.add(pool)
        self.process.limit = self._connection_limit(config)
        if config.acme is None:
            if self.acme is not None:
                self.acme.stop()
            self.acme = None
        elif self.acme is None:
            self.acme = self._new_acme(config.acme)
        elif self.acme.spec != config.acme:
            self.acme.update(config.acme, self.loop)
        listeners = {
            lst.name: ListenerState(
                lst,
                config,
                backends,
                self.secret,
                self.listeners.get(lst.name),
                self.process,
                self.acme,
            )
            for lst in config.listeners
        }
        for state in self.listeners.values():
            for route in state.route_states:
                self.sweeper.discard(route)
        for state in listeners.values():
            for route in state.route_states:
                if route.stateful:
                    self.sweeper.add(route)
        reload.backends_changed = sorted(
            n for n, b in backends.items() if old_backends.get(n) is not b
        )
        reload.backends_removed = sorted(set(old_backends) - set(backends))
        previous_listeners = self.listeners
        self.config = config
        self.backends = backends
        self.listeners = listeners
        self.generation = reload.generation
        self.access_log = config.server.access_log and access_log.isEnabledFor(logging.INFO)
        self.rotate_tickets()  # new TLS contexts get the current keys
        self.run_staplers(previous_listeners)
        return reload

    def update_endpoints(self, config: Config) -> list[BackendState] | None:
        """Apply ``config`` without a reload when it differs from the running one only in
        backends' endpoints (the controller's EndpointSlice changes): each backend keeps its
        object and sets its new endpoint list. Returns the backends whose endpoints changed
        (their ``last_gone`` / ``last_terminating`` say what to drain), or None when more than
        endpoints changed and a reload is needed."""
        if without_endpoints(config) != without_endpoints(self.config):
            return None
        if any(
            b.discovery is not None and self.backends[b.name].spec.endpoints != b.endpoints
            for b in config.backends
        ):
            return None  # names that DNS resolves: a reload restarts their discovery
        changed = []
        for spec in config.backends:
            backend = self.backends[spec.name]
            if backend.spec.endpoints == spec.endpoints:
                continue
            backend.set_endpoints(
                [(e.host, e.port, e.weight) for e in spec.endpoints],
                frozenset(e.address for e in spec.endpoints if e.draining),
            )
            backend.spec = spec
            changed.append(backend)
        self.config = config
        return changed

    def admit(self, listener: ListenerState, ip: str) -> Slot | None:
        """A place for a new connection from ``ip`` on ``listener``; None when it is refused
        (said once a minute per listener and limit, and counted)."""
        got = listener.conns.admit(ip, listener.max_connections, listener.max_connections_per_ip)
        if isinstance(got, Slot):
            return got
        limit, why = got
        self.warnings.warn(
            f"{listener.name}/{limit}",
            "listener %s: refusing new connections: %s",
            listener.name,
            why,
        )
        if self.stats is not None:
            self.stats.connection_refused(listener.name, limit)
        return None

    def no_descriptor(self, exc: OSError) -> None:
        """An upstream connect met EMFILE/ENFILE: wslb's own shortage, said once a minute (the
        endpoint is not to blame: no ejection)."""
        self.warnings.warn(
            "descriptors", "no file descriptor for an upstream connection: %s", exc.strerror or exc
        )

    def next_id(self) -> str:
        return f"c{next(self._ids)}"

    def register(self, conn: Closable) -> None:
        self.connections.add(conn)

    def unregister(self, conn: Closable) -> None:
        self.connections.discard(conn)
        if (
            self.draining
            and self.on_idle is not None
            and not any(c.busy() for c in self.connections)
        ):
            self.on_idle()


def _smallest_timeout(config: Config) -> float:
    values: list[float] = []
    for lst in config.listeners:
        c = lst.client
        values += [c.keepalive_timeout, c.header_timeout, c.body_timeout, c.send_timeout]
    for b in config.backends:
        t = b.timeouts
        values += [t.connect, t.read, t.send, t.tunnel, b.keepalive.idle_timeout]
    for r in config.routes:
        values += [v for v in r.timeouts.model_dump().values() if v is not None]
    positive: Sequence[float] = [v for v in values if v > 0]
    return min(positive, default=10.0)


def without_endpoints(config: Config) -> Config:
    """``config`` with every backend's endpoint list emptied: what a change of endpoints alone
    leaves the same."""
    backends = tuple(b.model_copy(update={"endpoints": ()}) for b in config.backends)
    return config.model_copy(update={"backends": backends})
