"""Live state of one worker, built from a :class:`~wslb.config.model.Config`.

``Runtime`` owns the backends (endpoint states, pools, client TLS), the per-listener route tables
and the registry of open connections and tunnels (for draining). Specs are never mutated: the
state objects here point at them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from wslb.balancer.endpoints import POLICIES, EndpointState, available, next_change
from wslb.balancer.ring import HashRing
from wslb.config.model import (
    AcmeSpec,
    BackendSpec,
    ClientSpec,
    Config,
    ListenerSpec,
    RouteSpec,
    TimeoutsSpec,
)
from wslb.middleware.access import AccessList
from wslb.middleware.admission import Admission
from wslb.middleware.affinity import CookieAffinity
from wslb.middleware.chain import Chooser, Counting, ResponseStep, Step
from wslb.middleware.choosers import CookieChooser, HashChooser
from wslb.middleware.cors import Cors
from wslb.middleware.engineio import EngineIOAffinity
from wslb.middleware.limits import Gauge
from wslb.middleware.responses import (
    AddHeaders,
    AffinityCookie,
    CorsHeaders,
    HeaderTemplate,
    RequestHeaders,
    SetHeaders,
)
from wslb.middleware.steps import (
    AcmeChallenge,
    Allow,
    CorsPreflight,
    EngineIORouting,
    HandshakeAdmission,
    RateLimits,
    RedirectHTTPS,
    TunnelCap,
)
from wslb.middleware.templates import Template
from wslb.routing.table import RouteEntry, RouteTable
from wslb.server.clock import Sweeper, interval_for
from wslb.server.limits import (
    ConnectionCount,
    ProcessCount,
    Warnings,
    process_connection_limit,
    raise_fd_limit,
)
from wslb.server.ocsp import Stapler
from wslb.server.output import WriteBatch
from wslb.server.pool import Pool
from wslb.server.tls import client_context, install_ticket_keys, server_context
from wslb.server.upstream import UpstreamHTTP
from wslb.server.upstream_h2 import H2Connections

if TYPE_CHECKING:
    from wslb.acme.manager import AcmeManager
    from wslb.server.healthcheck import HealthChecker
    from wslb.server.stats import Stats
    from wslb.server.tunnel import Tunnel

log = logging.getLogger("wslb.server")
access_log = logging.getLogger("wslb.access")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BackendState:
    def __init__(self, spec: BackendSpec, secret: bytes = b"", workers: int = 1) -> None:
        self.spec = spec
        self.secret = secret
        self._ring: HashRing | None = None
        self.name = spec.name
        self.endpoints = [EndpointState(e.host, e.port, e.weight) for e in spec.endpoints]
        for ep, e in zip(self.endpoints, spec.endpoints, strict=True):
            ep.terminating = e.draining
        self._policy = POLICIES[spec.balance]
        self.latency_aware = spec.balance == "ewma"
        self.pooling = spec.keepalive.enabled and spec.proxy_protocol is None
        self.pools: dict[EndpointState, Pool[UpstreamHTTP]] = {}
        if self.pooling:
            ka = spec.keepalive
            self.pools = {
                ep: Pool(ka.max_idle, ka.idle_timeout, ka.max_requests) for ep in self.endpoints
            }
        tls = spec.protocol in ("https", "http2")
        # HTTP/1.1 connections (https; and for an http2 backend, health checks and WebSockets
        # when it does not take extended CONNECT)
        self.ssl_context: ssl.SSLContext | None = client_context(spec.tls) if tls else None
        self.h2: H2Connections | None = None
        if spec.http2:
            h2_tls = client_context(spec.tls, ("h2",)) if spec.protocol == "http2" else None
            self.h2 = H2Connections(self, h2_tls)
        self.server_hostname = spec.tls.server_name
        self._available: list[EndpointState] | None = None
        self._available_until = 0.0
        self.retry_after = str(spec.retry_after).encode()
        self.tunnels = Gauge()  # open tunnels and upgrades under way, this worker
        self.last_gone: list[EndpointState] = []  # what the last endpoint change removed
        self.last_terminating: list[EndpointState] = []  # and what it started draining
        self.max_tunnels = _share(spec.max_tunnels, workers)  # this worker's share

    def available(self, now: float) -> list[EndpointState]:
        """The endpoints that may get traffic now (cached until something changes)."""
        avail = self._available
        if avail is None or now >= self._available_until:
            avail = self._available = available(self.endpoints, now)
            self._available_until = next_change(self.endpoints, now)
            self._ring = None
        return avail

    def pick(self, now: float, exclude: EndpointState | None = None) -> EndpointState | None:
        return self._policy(self.available(now), exclude)

    def pick_hashed(
        self, key: bytes, now: float, exclude: EndpointState | None = None
    ) -> EndpointState | None:
        """Consistent hashing of ``key`` over the available endpoints."""
        avail = self.available(now)
        ring = self._ring
        if ring is None:
            ring = self._ring = HashRing(avail, self.secret)
        ep = ring.get(key)
        if ep is None or ep is exclude:
            return self.pick(now, exclude)
        return ep

    def set_endpoints(
        self, found: list[tuple[str, int, int]], terminating: frozenset[str] = frozenset()
    ) -> bool:
        """Replace the endpoint set (addresses in ``terminating`` take no new sessions);
        endpoints that stay keep their state. True if changed; ``last_gone`` and
        ``last_terminating`` say what left and what started draining."""
        current = {ep.address: ep for ep in self.endpoints}
        before = [(ep.address, ep.weight, ep.terminating) for ep in self.endpoints]
        new: list[EndpointState] = []
        self.last_terminating = []
        for host, port, weight in found:
            probe = EndpointState(host, port, weight)
            ep = current.pop(probe.address, None) or probe
            ep.weight = weight
            ending = ep.address in terminating
            if ending and not ep.terminating:
                self.last_terminating.append(ep)
            ep.terminating = ending
            if ep not in new:
                new.append(ep)
        self.last_gone = []
        if [(ep.address, ep.weight, ep.terminating) for ep in new] == before:
            return False
        ka = self.spec.keepalive
        for ep in new:
            if self.pooling and ep not in self.pools:
                self.pools[ep] = Pool(ka.max_idle, ka.idle_timeout, ka.max_requests)
        self.last_gone = list(current.values())
        for gone in current.values():
            gone.draining = True
            pool = self.pools.pop(gone, None)
            if pool is not None:
                pool.close_all()
        self.endpoints = new
        self.health_changed()
        return True

    def adopt(self, old: BackendState) -> None:
        """Take over the state of the backend this one replaces (a reload): endpoints that
        stay keep their object (health, ejection, open counts, round-robin position) and, when
        the connection settings did not change, their idle connections."""
        current = {ep.address: ep for ep in old.endpoints}
        endpoints = []
        for ep in self.endpoints:
            kept = current.get(ep.address)
            if kept is not None:
                kept.weight = ep.weight
                if ep.terminating and not kept.terminating:
                    self.last_terminating.append(kept)
                kept.terminating = ep.terminating
                ep = kept
            endpoints.append(ep)
        self.endpoints = endpoints
        self.tunnels = old.tunnels  # the same count: tunnels opened before close into it
        same_conns = (
            old.pooling
            and self.pooling
            and old.spec.protocol == self.spec.protocol
            and old.spec.tls == self.spec.tls
            and old.spec.keepalive == self.spec.keepalive
        )
        fresh = {ep.address: pool for ep, pool in self.pools.items()}
        self.pools = {
            ep: (old.pools.get(ep) if same_conns else None) or fresh[ep.address]
            for ep in endpoints
            if ep.address in fresh
        }
        self.health_changed()

    def retire(self, keep: set[EndpointState]) -> list[EndpointState]:
        """This backend is replaced (a reload): its endpoints that are not in ``keep`` take no
        new sessions, and idle connections no one took over are closed. Returns the endpoints
        that left."""
        gone = []
        for ep in self.endpoints:
            if ep not in keep:
                ep.draining = True
                gone.append(ep)
        return gone

    def health_changed(self) -> None:
        """An endpoint's health or drain state changed: recompute who is available."""
        self._available = None
        self._ring = None

    def endpoint_failed(self, ep: EndpointState, now: float, why: str) -> None:
        p = self.spec.passive
        if ep.record_failure(now, p.max_fails, p.fail_timeout):
            self.health_changed()
            log.warning(
                "backend %s: endpoint %s ejected for %.0fs after %s",
                self.name,
                ep.address,
                p.fail_timeout,
                why,
            )


class RouteState:
    """A route as one listener serves it: backend, merged timeouts, body limit, and its steps
    compiled (:func:`route_steps`), so that a route with nothing configured walks empty
    tuples."""

    __slots__ = (
        "backend",
        "chooser",
        "engineio",
        "max_body_size",
        "request_headers",
        "response_steps",
        "session_steps",
        "spec",
        "stateful",
        "steps",
        "timeouts",
    )

    def __init__(
        self,
        spec: RouteSpec,
        backend: BackendState,
        client: ClientSpec,
        secret: bytes,
        workers: int = 1,
        tls: bool = False,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.timeouts: TimeoutsSpec = spec.timeouts.apply(backend.spec.timeouts)
        self.max_body_size = (
            spec.max_body_size if spec.max_body_size is not None else client.max_body_size
        )
        self.engineio = EngineIOAffinity(secret, backend.name) if spec.engineio_affinity else None
        self.chooser: Chooser | None = None
        if spec.affinity is not None:
            self.chooser = CookieChooser(CookieAffinity(spec.affinity, secret, backend.name))
        elif spec.hash_by:
            self.chooser = HashChooser(Template(spec.hash_by))
        rules = spec.headers
        self.request_headers = (
            RequestHeaders([HeaderTemplate(r) for r in rules.request_set])
            if rules.request_set
            else None
        )
        self.steps, self.session_steps, self.response_steps = route_steps(
            self, secret, workers, tls
        )
        self.stateful = tuple(
            step for step in (*self.steps, *self.session_steps) if isinstance(step, Counting)
        )

    def adopt(self, old: RouteState) -> None:
        """Keep the rate, connection and handshake counts of the route this one replaces (a
        reload), where their configuration did not change."""
        olds = {type(step): step for step in old.stateful}
        for step in self.stateful:
            was = olds.get(type(step))
            if was is not None:
                step.adopt(was)

    def sweep(self, now: float) -> None:
        for step in self.stateful:
            step.sweep(now)


def route_steps(
    route: RouteState, secret: bytes, workers: int, tls: bool
) -> tuple[tuple[Step, ...], tuple[Step, ...], tuple[ResponseStep, ...]]:
    """The steps a route's requests go through, in order: after routing; then, for a new
    WebSocket or Engine.IO session, after its handshake is checked; and on the way back."""
    spec = route.spec
    backend = route.backend
    steps: list[Step] = []
    cors = Cors(spec.cors) if spec.cors is not None else None
    if cors is not None:
        steps.append(CorsPreflight(cors))
    access = AccessList(spec.allow, spec.deny)
    if access:
        steps.append(Allow(access, "route"))
    if spec.redirect_https is not None and not tls:
        redirect = spec.redirect_https
        steps.append(RedirectHTTPS(redirect.code, redirect.port, spare_forwarded=True))
    if route.engineio is not None:
        steps.append(EngineIORouting(route.engineio, backend))
    limits = spec.limits
    if limits is not None and (limits.rps or limits.rpm or limits.connections):
        steps.append(RateLimits(limits))
    session: list[Step] = []
    adm = spec.admission
    if adm is not None and (adm.rate or adm.client_rate):
        admission = Admission(_share(adm.rate, workers), _share(adm.client_rate, workers))
        session.append(HandshakeAdmission(adm, admission, backend.name))
    if backend.max_tunnels is not None:
        session.append(
            TunnelCap(backend.tunnels, backend.max_tunnels, backend.name, backend.spec.retry_after)
        )
    responses: list[ResponseStep] = []
    if cors is not None:
        responses.append(CorsHeaders(cors))
    if isinstance(route.chooser, CookieChooser):
        responses.append(AffinityCookie(route.chooser.affinity))
    rules = spec.headers
    if rules.response_set:
        responses.append(SetHeaders([HeaderTemplate(r) for r in rules.response_set]))
    if rules.response_add:
        responses.append(AddHeaders([HeaderTemplate(r) for r in rules.response_add]))
    return tuple(steps), tuple(session), tuple(responses)


def listener_steps(spec: ListenerSpec, acme: AcmeManager | None) -> tuple[Step, ...]:
    """The steps every request on a listener goes through before routing, in order."""
    steps: list[Step] = []
    if acme is not None:
        manager = acme  # its storage changes when its configuration does
        steps.append(AcmeChallenge(lambda token: manager.storage.http01(token)))
    access = AccessList(spec.allow, spec.deny)
    if access:
        steps.append(Allow(access, "listener"))
    if spec.redirect_https is not None:
        redirect = spec.redirect_https
        steps.append(RedirectHTTPS(redirect.code, redirect.port, spare_forwarded=False))
    return tuple(steps)


class ListenerState:
    def __init__(
        self,
        spec: ListenerSpec,
        config: Config,
        backends: dict[str, BackendState],
        secret: bytes = b"",
        previous: ListenerState | None = None,
        process: ProcessCount | None = None,
        acme: AcmeManager | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.client = spec.client
        workers = config.server.workers
        self.max_connections = _share(spec.client.max_connections, workers)
        self.max_connections_per_ip = _share(spec.client.max_connections_per_ip, workers)
        # Open connections are counted across reloads.
        self.conns: ConnectionCount = (
            previous.conns
            if previous is not None
            else ConnectionCount(process or ProcessCount(1 << 30))
        )
        self.tls = spec.protocol == "https"
        self.scheme = b"https" if self.tls else b"http"
        self.http2 = spec.serves_http2
        self.h2c = self.http2 and not self.tls  # plain listener: HTTP/2 with prior knowledge
        self.port_bytes = str(spec.port).encode()  # replaced by the bound port at start
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in spec.trusted_proxies
        )
        self.backend = backends[spec.backend] if spec.backend else None
        self.route_states = [
            RouteState(r, backends[r.backend], spec.client, secret, config.server.workers, self.tls)
            for r in config.routes
            if r.listeners is None or spec.name in r.listeners
        ]
        self.routes: RouteTable[RouteState] = RouteTable(
            RouteEntry(r.spec.host, r.spec.path, r.spec.path_type, r) for r in self.route_states
        )
        self.steps = listener_steps(spec, acme)
        self.ssl_context: ssl.SSLContext | None = None
        self.staplers: list[Stapler] = []  # OCSP, one per certificate that allows it
        self.tls_files = _stamps(spec)  # a certificate file replaced in place is a change too
        if previous is not None:
            olds = {(r.spec, r.backend.name): r for r in previous.route_states}
            for route in self.route_states:
                was = olds.get((route.spec, route.backend.name))
                if was is not None:
                    route.adopt(was)
            if (
                previous.spec.tls == spec.tls
                and previous.http2 == self.http2
                and previous.tls_files == self.tls_files
            ):
                self.ssl_context = previous.ssl_context
                self.staplers = previous.staplers
        if spec.tls is not None and self.ssl_context is None:
            alpn = ("h2", "http/1.1") if self.http2 else ("http/1.1",)
            self.ssl_context = server_context(
                spec.tls.all_certificates(),
                spec.tls.min_version,
                alpn,
                self.staplers,
                acme if spec.tls.acme else None,
            )

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)


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


class Closable(Protocol):
    """What the runtime can ask an open connection or tunnel to do while draining."""

    def drain(self) -> None: ...
    def force_close(self, reason: str) -> None: ...
    def busy(self) -> bool: ...


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
        share = _share(config.server.max_connections, config.server.workers)
        return limit if share is None else min(limit, share)

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

    def drain_tunnels(
        self, match: Callable[[Tunnel], bool], code: int, why: str, window: float
    ) -> int:
        """Close the WebSockets that ``match`` with a Close frame ``code``, one after the
        other, spread evenly over ``window`` seconds (in random order, so that no endpoint or
        client is favoured); tcp tunnels just close at their turn. Returns how many."""
        from wslb.server.tunnel import Tunnel

        tunnels = [
            c
            for c in self.connections
            if isinstance(c, Tunnel) and not c.closed and not c.close_by and match(c)
        ]
        if not tunnels:
            return 0
        random.shuffle(tunnels)
        task = self.loop.create_task(_spread(self.loop, tunnels, code, why, window))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        log.info("closing %d WebSocket(s) with %d (%s) over %.0fs", len(tunnels), code, why, window)
        return len(tunnels)

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


async def _spread(
    loop: asyncio.AbstractEventLoop, tunnels: list[Tunnel], code: int, why: str, window: float
) -> None:
    start = loop.time()
    count = len(tunnels)
    for i, tunnel in enumerate(tunnels):
        delay = start + window * (i + 0.5) / count - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tunnel.close_gracefully(code, why)


def _stamps(spec: ListenerSpec) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of the certificate and key files a listener reads."""
    out = []
    for cert in spec.tls.all_certificates() if spec.tls is not None else ():
        for path in (cert.certificate, cert.key):
            if path is not None:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _share(value: int | None, workers: int) -> int | None:
    """A worker's part of a limit that the workers enforce each on their own (nothing is
    shared between them): the limit divided among them, rounded up."""
    return None if value is None else max(1, -(-value // workers))


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
